// `npm run demo -- --exit` runs a whole rollout to 1,000 simulated devices and exits 0 after the
// final counts — against its own database, storage and queue prefix here.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from '../helpers/env.ts';
import { deleteQueueKeys } from '../helpers/queue-keys.ts';
import { uniqueName } from '../helpers/database.ts';

describe('npm run demo -- --exit', () => {
  const dbName = uniqueName('otter_demo');
  const queuePrefix = uniqueName('otter-demo');
  let storage = '';

  afterAll(async () => {
    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`);
    await admin.end();
    if (storage) await rm(storage, { recursive: true, force: true });
    await deleteQueueKeys(TEST_REDIS_URL, queuePrefix);
  });

  it('rolls out to 1,000 devices and exits 0 with the final counts', async () => {
    storage = await mkdtemp(path.join(os.tmpdir(), 'otter-demo-'));
    const url = new URL(TEST_DATABASE_URL);
    url.pathname = `/${dbName}`;
    const child = spawn('npm', ['run', 'demo', '--', '--exit', '--devices', '1000', '--step-ms', '100'], {
      env: { ...process.env, PORT: '0', DATABASE_URL: url.toString(), STORAGE_DIR: storage, QUEUE_PREFIX: queuePrefix, REDIS_URL: TEST_REDIS_URL, LOG_LEVEL: 'error' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code, stderr).toBe(0);
    const final = /rollout completed: (\{.*\})/.exec(stdout);
    expect(final, stdout.slice(-2_000)).not.toBeNull();
    const stats = JSON.parse(final![1]!);
    expect(stats.total).toBe(1000);
    expect(stats.success + stats.failed).toBe(1000);
    expect(stats.success).toBeGreaterThan(900);
    expect(stdout).toMatch(/API docs: +http:\/\/localhost:\d+\/docs/);
    expect(stdout).toMatch(/bull-board: +http:\/\/localhost:\d+\/admin\/queues/);
    expect(stdout).toMatch(/console: +http:\/\/localhost:\d+\/console /);
  }, 180_000);
});
