// PostgreSQL gone between a send's commit and its message (what made the postgres-restart fault
// test flake): a send is written only once everything its message needs from the database is read
// (the firmware offer, the device's gateway route), so when the database drops right after the
// commit the message still leaves, once, and no attempt is spent on the outage. The database is cut
// for this test's own connections only, through a TCP proxy, at the exact moment after the commit.
import pino from 'pino';
import type { UpgradeQueues } from '../../services/upgrade-queues.ts';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { OutgoingDeviceMessage } from '../../core/messages.ts';
import { createDb, type DbHandle } from '../../db/connection.ts';
import { claimRecordsForDispatch } from '../../db/queries/dispatch.ts';
import type { Connector } from '../../protocols/connector.ts';
import { DirectSends } from '../../workers/direct-sends.ts';
import { FirmwareOffers } from '../../workers/firmware-offers.ts';
import { GatewayDirectory, routeThroughGateways } from '../../workers/gateway-routes.ts';
import type { JobWaker } from '../../workers/job-waker.ts';
import { RecordStore } from '../../workers/record-store.ts';
import { UpgradeSender } from '../../workers/upgrade-sender.ts';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { createFirmware, createTask, registerDevices } from '../helpers/rollout.ts';
import { startTcpProxy, type CuttableProxy } from '../helpers/tcp-proxy.ts';

const PRODUCT = 'outage';
/** Longer than a send waits for nothing, shorter than the record store waits for the database. */
const OUTAGE_MS = 1_500;

let t: TestApp;
let proxy: CuttableProxy;
let handle: DbHandle;
let firmwareId: string;
let outage: Promise<void> | undefined;
const delivered: OutgoingDeviceMessage[] = [];

/** The database through the proxy, and the worker pieces of one process over it. */
function workerParts() {
  const { db } = handle;
  const offers = new FirmwareOffers(db, t.config);
  const routes = new GatewayDirectory(db);
  const transport: Connector = {
    name: 'recording',
    start: async () => {},
    stop: async () => {},
    send: async (message) => {
      delivered.push(message);
    },
  };
  const store = new RecordStore(db);
  const sender = new UpgradeSender({ store, connector: routeThroughGateways(transport, routes), offers, routes, logger: pino({ level: 'silent' }) });
  return { db, offers, store, sender };
}

/** Cuts the database now, for OUTAGE_MS. */
async function cutDatabase(): Promise<void> {
  await proxy.cut();
  outage = new Promise((resolve) => setTimeout(resolve, OUTAGE_MS)).then(() => proxy.restore());
}

async function releasedTask(deviceIds: string[]): Promise<string> {
  await registerDevices(t.app, t.auth, PRODUCT, deviceIds);
  const taskId = await createTask(t.app, t.auth, {
    firmwareId,
    timeoutSeconds: 120,
    retry: { maxAttempts: 3, backoffSeconds: 1, on: ['timeout', 'send_error'] },
  });
  const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { deviceIds, push: true } });
  expect(release.json().added, release.body).toBe(deviceIds.length);
  return taskId;
}

/** The records of `deviceIds` as written (read past the proxy), once the outage is over. */
async function recordsOf(deviceIds: string[]) {
  await outage;
  return t.database.db
    .selectFrom('upgrade_records')
    .select(['device_id', 'state', 'attempts', 'retry_at', 'error_reason', 'message_id'])
    .where('device_id', 'in', deviceIds)
    .orderBy('device_id')
    .execute();
}

/** Each device got exactly one upgrade message, the one for the attempt its record is on. */
function expectSentOnce(records: Awaited<ReturnType<typeof recordsOf>>): void {
  for (const record of records) {
    const messages = delivered.filter((m) => m.deviceId === record.device_id);
    expect(messages.map((m) => (m.body as { messageId: string }).messageId), record.device_id).toEqual([record.message_id]);
  }
  expect(records.map((r) => ({ state: r.state, attempts: r.attempts, retry_at: r.retry_at, error_reason: r.error_reason }))).toEqual(
    records.map(() => ({ state: 'processing', attempts: 1, retry_at: null, error_reason: null })),
  );
}

beforeAll(async () => {
  t = await buildTestApp();
  const target = new URL(t.database.url);
  proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
  const viaProxy = new URL(t.database.url);
  viaProxy.host = `127.0.0.1:${proxy.port}`;
  handle = createDb(viaProxy.toString());
  firmwareId = await createFirmware(t.app, t.auth, PRODUCT);
}, 60_000);

afterAll(async () => {
  await outage;
  await handle?.db.destroy();
  await proxy?.close();
  await t?.close();
});

it('the dispatcher’s direct sends: the database drops right after the claim commits, every message still leaves once', async () => {
  const devices = Array.from({ length: 20 }, (_, i) => `direct-${String(i).padStart(2, '0')}`);
  const taskId = await releasedTask(devices);
  const { db, offers, sender } = workerParts();
  // a rollout under way has its firmware read already
  await offers.offer(firmwareId, { deviceId: devices[0]!, timeoutSeconds: 120 });
  // the jobs are added between the commit and the messages: that is where the database goes
  const queue = { addBulk: async () => cutDatabase() } as unknown as UpgradeQueues;
  const waker = { wake: () => {} } as unknown as JobWaker;

  const sent = await new DirectSends(db, sender, queue, waker).dispatch(taskId, async () => devices.length);

  expect(sent).toBe(devices.length);
  expectSentOnce(await recordsOf(devices));
});

it('a job’s send: the database drops right after the send is written, the message still leaves once', async () => {
  const devices = Array.from({ length: 5 }, (_, i) => `job-${i}`);
  const taskId = await releasedTask(devices);
  const { db, offers, store, sender } = workerParts();
  await offers.offer(firmwareId, { deviceId: devices[0]!, timeoutSeconds: 120 });
  // claimed for jobs, as the dispatcher does for a rate-limited task: the jobs then send
  const claimed = await claimRecordsForDispatch(db, taskId, async () => devices.length);
  expect(claimed).toHaveLength(devices.length);
  const states = await Promise.all(claimed.map((record) => store.load(record.id)));
  let cut: Promise<void> | undefined;
  store.onApplied = () => {
    cut ??= cutDatabase();
  };

  const outcomes = await Promise.all(states.map((state) => sender.send(state!)));

  expect(outcomes.map((outcome) => outcome.kind)).toEqual(devices.map(() => 'sent'));
  await cut;
  expectSentOnce(await recordsOf(devices));
});
