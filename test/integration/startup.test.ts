// Start-up as an operator sees it (docs/operations.md#start-up-and-shutdown): a missing dependency gives one clear line and
// exit code 1; a healthy start serves the API and stops cleanly on SIGTERM; migrate creates the
// database and is safe to run concurrently. The machine's real services are never stopped: the
// "missing" ones are URLs at a port nothing listens on.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { uniqueName } from '../helpers/database.ts';
import { deleteQueueKeys } from '../helpers/queue-keys.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from '../helpers/env.ts';
import { freePort } from '../../tools/ports.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface Spawned {
  pid: number;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first stdout text matching the pattern, or rejects when the process ends first. */
  waitForOutput(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  kill(signal: NodeJS.Signals): void;
  done: Promise<Run>;
}

function run(command: string, args: string[], env: Record<string, string>): Spawned {
  const child = spawn(command, args, {
    cwd: ROOT,
    // only what the test sets, plus PATH and HOME: the runner's own variables must not leak in
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? os.tmpdir(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const listeners = new Set<() => void>();
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    for (const listener of listeners) listener();
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const done = new Promise<Run>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return {
    pid: child.pid!,
    stdout: () => stdout,
    stderr: () => stderr,
    kill: (signal) => child.kill(signal),
    done,
    waitForOutput(pattern, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const match = stdout.match(pattern);
          if (match) {
            finish();
            resolve(match);
          }
        };
        const timer = setTimeout(() => {
          finish();
          reject(new Error(`no ${pattern} within ${timeoutMs} ms; stdout: ${stdout}\nstderr: ${stderr}`));
        }, timeoutMs);
        const finish = () => {
          clearTimeout(timer);
          listeners.delete(check);
        };
        listeners.add(check);
        void done.then((result) => {
          if (!listeners.has(check)) return;
          finish();
          reject(new Error(`process ended (${result.code ?? result.signal}) before ${pattern}; stdout: ${stdout}\nstderr: ${stderr}`));
        });
        check();
      });
    },
  };
}

function startOtter(env: Record<string, string>): Spawned {
  return run(process.execPath, ['--import', 'tsx', 'service/main.ts'], env);
}

/** A local port with nothing listening on it. */
const closedPort = freePort;

function databaseUrl(name: string): string {
  const url = new URL(TEST_DATABASE_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

async function adminQuery<T extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<pg.QueryResult<T>> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await client.connect();
  try {
    return await client.query<T>(sql, params);
  } finally {
    await client.end();
  }
}

async function databaseExists(name: string): Promise<boolean> {
  const result = await adminQuery('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
  return result.rowCount === 1;
}

const createdDatabases: string[] = [];
function freshDatabaseName(): string {
  const name = uniqueName('otter_startup');
  createdDatabases.push(name);
  return name;
}

afterAll(async () => {
  for (const name of createdDatabases) await adminQuery(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
});

function expectOneClearLine(result: Run, dependency: string, redactedUrl: string, password: string): void {
  expect(result.code).toBe(1);
  const lines = result.stderr.split('\n').filter((line) => line.trim() !== '');
  expect(lines, `stderr: ${result.stderr}`).toHaveLength(1);
  const line = lines[0]!;
  expect(line).toContain(dependency);
  expect(line).toContain(redactedUrl);
  expect(line).toMatch(/start it/);
  expect(result.stderr).not.toContain(password);
  expect(result.stdout).not.toContain(password);
  expect(result.stderr).not.toMatch(/^\s+at /m);
  expect(result.stdout).not.toMatch(/^\s+at /m);
}

describe('start-up with a dependency missing', () => {
  it('PostgreSQL down: one clear line naming it, its URL without password and how to start it; exit 1', async () => {
    const port = await closedPort();
    const result = await startOtter({
      DATABASE_URL: `postgres://postgres:secret@127.0.0.1:${port}/otter`,
      REDIS_URL: TEST_REDIS_URL,
      API_KEYS: 'k',
    }).done;
    expectOneClearLine(result, 'PostgreSQL', `127.0.0.1:${port}/otter`, 'secret');
    expect(result.stderr).toContain(`postgres://postgres:***@127.0.0.1:${port}/otter`);
  });

  it('Redis down: one clear line naming it, its URL without password and how to start it; exit 1', async () => {
    const port = await closedPort();
    const name = freshDatabaseName();
    const result = await startOtter({
      DATABASE_URL: databaseUrl(name),
      REDIS_URL: `redis://:hunter2@127.0.0.1:${port}`,
      API_KEYS: 'k',
    }).done;
    expectOneClearLine(result, 'Redis', `127.0.0.1:${port}`, 'hunter2');
    expect(result.stderr).not.toContain('PostgreSQL');
  });

  it('bad configuration: one line naming the variable; exit 1', async () => {
    const result = await startOtter({ ROLE: 'everything', API_KEYS: 'k' }).done;
    expect(result.code).toBe(1);
    const lines = result.stderr.split('\n').filter((line) => line.trim() !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/ROLE/);
    expect(result.stderr).not.toMatch(/^\s+at /m);
  });
});

describe('start-up with every dependency up', () => {
  let broker: TestBroker;
  let storageDir: string;

  beforeAll(async () => {
    broker = await startBroker();
    storageDir = await mkdtemp(path.join(os.tmpdir(), 'otter-startup-'));
  });

  const queuePrefix = uniqueName('otter-startup');

  afterAll(async () => {
    await broker?.stop();
    if (storageDir) await rm(storageDir, { recursive: true, force: true });
    await deleteQueueKeys(TEST_REDIS_URL, queuePrefix);
  });

  it('creates and migrates its database, serves the API and exits 0 on SIGTERM', async () => {
    const name = freshDatabaseName();
    expect(await databaseExists(name)).toBe(false);
    const otter = startOtter({
      PORT: '0',
      HOST: '127.0.0.1',
      DATABASE_URL: databaseUrl(name),
      REDIS_URL: TEST_REDIS_URL,
      MQTT_URL: broker.url,
      QUEUE_PREFIX: queuePrefix,
      STORAGE_DIR: storageDir,
      URL_SIGNING_SECRET: 'startup-test-secret',
      API_KEYS: 'k',
      LOG_LEVEL: 'info',
    });
    try {
      const [, base] = await otter.waitForOutput(/Server listening at (http:\/\/127\.0\.0\.1:\d+)/, 30_000);
      expect(await databaseExists(name)).toBe(true);
      const migrated = await new pg.Client({ connectionString: databaseUrl(name) });
      await migrated.connect();
      try {
        const applied = await migrated.query('SELECT name FROM kysely_migration');
        expect(applied.rowCount).toBeGreaterThan(0);
      } finally {
        await migrated.end();
      }

      const live = await fetch(`${base}/health/live`);
      expect(live.status).toBe(200);
      expect(await live.json()).toEqual({ status: 'ok' });

      const docs = await fetch(`${base}/docs/json`);
      expect(docs.status).toBe(200);
      const document = (await docs.json()) as { openapi?: string; paths?: Record<string, unknown> };
      expect(document.openapi).toMatch(/^3\./);
      expect(document.paths).toHaveProperty('/health/live');

      const refused = await fetch(`${base}/api/firmware`);
      expect(refused.status).toBe(401);
      const allowed = await fetch(`${base}/api/firmware`, { headers: { authorization: 'Bearer k' } });
      expect(allowed.status).not.toBe(401);
    } finally {
      otter.kill('SIGTERM');
    }
    const result = await otter.done;
    expect(result.signal).toBeNull();
    expect(result.code, `stderr: ${result.stderr}`).toBe(0);
    expect(result.stdout).toMatch(/shutting down/);
    expect(result.stderr).not.toMatch(/^\s+at /m);
  });
});

describe('npm run migrate', () => {
  function migrate(name: string): Spawned {
    return run('npm', ['run', '--silent', 'migrate'], { DATABASE_URL: databaseUrl(name), LOG_LEVEL: 'info' });
  }

  async function appliedMigrations(name: string): Promise<string[]> {
    const client = new pg.Client({ connectionString: databaseUrl(name) });
    await client.connect();
    try {
      const result = await client.query<{ name: string }>('SELECT name FROM kysely_migration ORDER BY name');
      return result.rows.map((row) => row.name);
    } finally {
      await client.end();
    }
  }

  it('creates the database when it does not exist and migrates it', async () => {
    const name = freshDatabaseName();
    expect(await databaseExists(name)).toBe(false);
    const result = await migrate(name).done;
    expect(result.code, `stderr: ${result.stderr}`).toBe(0);
    expect(await databaseExists(name)).toBe(true);
    const applied = await appliedMigrations(name);
    expect(applied.length).toBeGreaterThan(0);

    // a second run finds nothing to do
    const again = await migrate(name).done;
    expect(again.code, `stderr: ${again.stderr}`).toBe(0);
    expect(await appliedMigrations(name)).toEqual(applied);
  });

  it('is safe to run twice at the same time on a database that does not exist yet', async () => {
    const name = freshDatabaseName();
    const [first, second] = await Promise.all([migrate(name).done, migrate(name).done]);
    expect(first.code, `stderr: ${first.stderr}`).toBe(0);
    expect(second.code, `stderr: ${second.stderr}`).toBe(0);
    expect(await databaseExists(name)).toBe(true);
    const applied = await appliedMigrations(name);
    expect(new Set(applied).size).toBe(applied.length);
    expect(applied.length).toBeGreaterThan(0);
  });

  it('PostgreSQL down: one clear line, exit 1', async () => {
    const port = await closedPort();
    const result = await run('npm', ['run', '--silent', 'migrate'], {
      DATABASE_URL: `postgres://postgres:secret@127.0.0.1:${port}/otter`,
    }).done;
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('PostgreSQL');
    expect(result.stderr).toContain(`127.0.0.1:${port}`);
    expect(result.stderr).not.toContain('secret');
    expect(result.stderr).not.toMatch(/^\s+at /m);
  });
});
