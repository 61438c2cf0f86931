// Back-pressure under a database outage: PostgreSQL (a private cluster) is stopped for 60 s while
// 1,000 devices send their progress. The Otter process holds at most DEVICE_MESSAGE_BACKLOG (500
// here) received, unapplied messages — the broker holds the rest, unacknowledged — so its RSS stays
// flat (the figures are printed), and once PostgreSQL is back every record ends exactly as in a
// run of the same fleet without the outage.
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, expect, it } from 'vitest';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { uniqueName } from '../helpers/database.ts';
import { TEST_API_KEY, TEST_REDIS_URL } from '../helpers/env.ts';
import { startPostgres, type PrivatePostgres } from '../helpers/postgres-server.ts';
import { spawnOtter, type OtterProcess } from '../helpers/processes.ts';
import { deleteQueueKeys } from '../helpers/queue-keys.ts';
import { Fleet, fleetDeviceIds } from '../../tools/fleet.ts';
import { OtterClient, type TaskView } from '../../tools/otter-client.ts';

const DEVICES = 1_000;
const BACKLOG = 500;
const OUTAGE_MS = 60_000;
const PRODUCT = 'backlog';

let postgres: PrivatePostgres | undefined;
let broker: TestBroker | undefined;
let otter: OtterProcess | undefined;
let fleet: Fleet | undefined;
let storageDir: string | undefined;
const queuePrefix = uniqueName('otter-backlog');

afterAll(async () => {
  await fleet?.stop().catch(() => {});
  await otter?.stop('SIGKILL');
  await broker?.stop();
  await postgres?.destroy();
  await deleteQueueKeys(TEST_REDIS_URL, queuePrefix);
  if (storageDir) await rm(storageDir, { recursive: true, force: true });
});

function rssMb(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
}

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${otter?.output().split('\n').slice(-15).join('\n')}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

const finished = (task: TaskView) => task.stats.total === DEVICES && task.stats.waiting === 0 && task.stats.processing === 0;

async function gauge(name: string): Promise<number> {
  const text = await (await fetch(`${otter!.baseUrl}/metrics`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } })).text();
  return Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
}

/** Every record of a task, by device: how it ended. */
async function finalStates(taskId: string): Promise<Map<string, string>> {
  const client = new pg.Client({ connectionString: postgres!.url('otter_backlog') });
  await client.connect();
  try {
    const { rows } = await client.query<{ device_id: string; state: string; progress: number; attempts: number; error_reason: string | null }>(
      'SELECT device_id, state, progress, attempts, error_reason FROM upgrade_records WHERE task_id = $1',
      [taskId],
    );
    return new Map(rows.map((r) => [r.device_id, `${r.state} ${r.progress}% attempt ${r.attempts} ${r.error_reason ?? ''}`.trim()]));
  } finally {
    await client.end();
  }
}

it('bounded memory while PostgreSQL is away for 60 s; every record ends as without the outage', async () => {
  postgres = await startPostgres();
  broker = await startBroker();
  storageDir = await mkdtemp(path.join(os.tmpdir(), 'otter-storage-'));
  otter = await spawnOtter({
    ROLE: 'all',
    DATABASE_URL: postgres.url('otter_backlog'),
    REDIS_URL: TEST_REDIS_URL,
    MQTT_URL: broker.url,
    QUEUE_PREFIX: queuePrefix,
    API_KEYS: TEST_API_KEY,
    URL_SIGNING_SECRET: 'backlog-test-secret',
    STORAGE_DIR: storageDir,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'warn',
    DEVICE_MESSAGE_BACKLOG: String(BACKLOG),
    RECONCILE_INTERVAL_SECONDS: '5',
  });
  const api = new OtterClient(otter.baseUrl, TEST_API_KEY);
  const ids = fleetDeviceIds(PRODUCT, DEVICES);
  await api.registerDevices(PRODUCT, ids, '1.0.0');
  // each device acknowledges the push, then sends 30 progress reports 400 ms apart (some fail or
  // reject, as a fleet does): ~2,500 messages a second from the fleet, most of them during the
  // outage. 31 messages a device stay within the per-device rate limit's burst, so the held ones
  // arriving together afterwards are all taken.
  fleet = new Fleet({ mqttUrl: broker.url, productId: PRODUCT, deviceIds: ids, progressSteps: 30, stepMs: 400, failRate: 0.05, rejectRate: 0.02, seed: 'backlog', reportOnStart: false });
  await fleet.start();

  const rollout = async (version: string, versionOrder: number) => {
    const firmware = await api.createFirmware({ productId: PRODUCT, name: `fw ${version}`, version, versionOrder, url: `https://firmware.example.com/${version}.bin`, sign: 'ab'.repeat(32), signMethod: 'sha256', size: 1024 });
    const task = await api.createTask({ name: `to ${version}`, firmwareId: firmware.id, timeoutSeconds: 900, retry: { maxAttempts: 1, backoffSeconds: 1, on: ['timeout'] } });
    const release = await api.release(task.id, { allDevices: true, push: true });
    expect(release.added).toBe(DEVICES);
    return task.id;
  };

  // the run without an outage: how each record ends
  const baselineTask = await rollout('2.0.0', 2);
  await until('the baseline rollout to finish', async () => finished(await api.task(baselineTask)), 120_000);
  const baseline = await finalStates(baselineTask);
  expect(baseline.size).toBe(DEVICES);

  // the same fleet again; the database goes away once every device is sending its progress
  const pushesBefore = fleet.stats.upgradesReceived;
  const outageTask = await rollout('3.0.0', 3);
  await until('every device to have its push', async () => fleet!.stats.upgradesReceived - pushesBefore >= DEVICES, 60_000);
  const rssBefore = rssMb(otter.child.pid!);
  let rssPeak = rssBefore;
  const sampler = setInterval(() => {
    rssPeak = Math.max(rssPeak, rssMb(otter!.child.pid!));
  }, 200);
  const sentBefore = fleet.stats.messagesSent;
  await postgres.stop();
  const stoppedAt = Date.now();
  await new Promise((resolve) => setTimeout(resolve, OUTAGE_MS / 2));
  // the REST intake shares the backlog: at the cap it answers 503 and takes nothing
  const rest = await fetch(`${otter.baseUrl}/api/device-messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ messageType: 'UPGRADE_FIRMWARE_PROGRESS', deviceId: ids[0], progress: 50, complete: false, success: true, version: '3.0.0' }),
  });
  const restBody = (await rest.json()) as { code?: string };
  expect({ status: rest.status, code: restBody.code, retryAfter: rest.headers.get('retry-after') }).toEqual({ status: 503, code: 'backlog_full', retryAfter: '1' });
  await new Promise((resolve) => setTimeout(resolve, OUTAGE_MS / 2));
  const sentDuringOutage = fleet.stats.messagesSent - sentBefore;
  const rssAtEnd = rssMb(otter.child.pid!);
  await postgres.start();
  console.log(`postgres away for ${((Date.now() - stoppedAt) / 1000).toFixed(0)} s; the fleet sent ${sentDuringOutage} messages meanwhile`);

  try {
    await until('the rollout to finish after the outage', async () => finished(await api.task(outageTask)), 180_000);
  } finally {
    clearInterval(sampler);
  }
  const peakBacklog = await gauge('otter_device_message_backlog_peak');
  console.log(`otter RSS: ${rssBefore.toFixed(0)} MB when PostgreSQL stopped, ${rssAtEnd.toFixed(0)} MB after 60 s without it, ${rssPeak.toFixed(0)} MB at most until the rollout finished; backlog peak ${peakBacklog} (cap ${BACKLOG})`);

  // the connector stopped taking messages at the cap (the broker held the rest), and memory stayed put
  expect(sentDuringOutage).toBeGreaterThan(20 * BACKLOG);
  expect(peakBacklog).toBeLessThanOrEqual(BACKLOG);
  expect(peakBacklog).toBeGreaterThanOrEqual(BACKLOG * 0.9);
  expect(rssPeak - rssBefore).toBeLessThan(100);

  // every record ended as it did without the outage (same state, progress, attempts, error)
  const after = await finalStates(outageTask);
  const differences = ids.filter((id) => after.get(id) !== baseline.get(id)).map((id) => `${id}: ${baseline.get(id)} → ${after.get(id)}`);
  expect(differences).toEqual([]);
  const states = [...after.values()].map((s) => s.split(' ')[0]);
  console.log(`final states: ${states.filter((s) => s === 'success').length} success, ${states.filter((s) => s === 'failed').length} failed`);
});
