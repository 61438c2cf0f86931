// Releasing a task to a fleet of 100,000 registered devices (docs/rest-api.md#rollout-control: "Releasing to 100,000
// devices answers within seconds"): the counts and skip reasons are exact — devices already on the
// version, busy in another task, unknown ids — and the time is printed. The generous bound here
// only catches a release gone quadratic; the real target lives in the benchmark.
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql, type RawBuilder } from 'kysely';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { createFirmware, createTask, taskStats, type ReleaseReply } from '../helpers/rollout.ts';

const PRODUCT = 'scale';
const TARGET = '2.0.0';
const FLEET = 100_000;
const ON_VERSION = 1_000;
const BUSY = 500;
const UNKNOWN = 50;
const CHUNK = 10_000;
const MAX_RELEASE_MS = 60_000;

const deviceId = (i: number) => `scale-${String(i).padStart(6, '0')}`;
const ALL_IDS = Array.from({ length: FLEET }, (_, i) => deviceId(i + 1));
/** One device in 100 already runs the target version (none among the last 50). */
const isOnVersion = (i: number) => i % 100 === 50;
/** One device in 200 (never one on the version, none among the last 50) is busy in another task. */
const isBusy = (i: number) => i % 200 === 1;
const UNKNOWN_IDS = Array.from({ length: UNKNOWN }, (_, i) => `ghost-${String(i + 1).padStart(4, '0')}`);

let t: TestApp;
let firmwareId: string;

beforeAll(async () => {
  t = await buildTestApp();
  for (let start = 1; start <= FLEET; start += CHUNK) {
    const devices = Array.from({ length: CHUNK }, (_, k) => {
      const i = start + k;
      return { id: deviceId(i), productId: PRODUCT, firmwareVersion: isOnVersion(i) ? TARGET : '1.0.0' };
    });
    const response = await t.app.inject({ method: 'PUT', url: '/api/devices', headers: t.auth, payload: { devices } });
    expect(response.statusCode, response.body).toBe(200);
    expect(response.json()).toEqual({ upserted: CHUNK });
  }
  firmwareId = await createFirmware(t.app, t.auth, PRODUCT, TARGET, 2);
}, 120_000);

afterAll(async () => {
  await t?.close();
});

async function timedRelease(label: string, taskId: string, body: Record<string, unknown>): Promise<ReleaseReply> {
  const started = performance.now();
  const response = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: body });
  const elapsed = performance.now() - started;
  expect(response.statusCode, response.body.slice(0, 500)).toBe(200);
  console.log(`release ${label}: ${(elapsed / 1000).toFixed(2)} s`);
  expect(elapsed).toBeLessThan(MAX_RELEASE_MS);
  return response.json();
}

async function countRows(query: RawBuilder<{ n: number }>): Promise<number> {
  const { rows } = await query.execute(t.database.db);
  return Number(rows[0]!.n);
}

describe('release at fleet size', () => {
  let mainTaskId: string;
  const busyIds = ALL_IDS.filter((_, k) => isBusy(k + 1));
  // at most 100,000 ids per call: every registered device but the last 50, plus 50 unknown ids
  const chosenIds = [...ALL_IDS.slice(0, FLEET - UNKNOWN), ...UNKNOWN_IDS];
  const expectedAdded = FLEET - UNKNOWN - ON_VERSION - BUSY;

  it('registered the fleet', async () => {
    expect(busyIds).toHaveLength(BUSY);
    expect(ALL_IDS.filter((_, k) => isOnVersion(k + 1))).toHaveLength(ON_VERSION);
    expect(await countRows(sql<{ n: number }>`SELECT count(*) AS n FROM devices WHERE product_id = ${PRODUCT}`)).toBe(FLEET);
    expect(await countRows(sql<{ n: number }>`SELECT count(*) AS n FROM devices WHERE firmware_version = ${TARGET}`)).toBe(ON_VERSION);
  });

  it('releases to 100,000 chosen ids with exact counts and skip reasons', async () => {
    const otherTask = await createTask(t.app, t.auth, { firmwareId, name: 'the other task' });
    const busy = await timedRelease('of 500 devices (the other task)', otherTask, { deviceIds: busyIds });
    expect(busy).toEqual({ added: BUSY, skipped: {}, skippedDevices: [] });

    // more than 100,000 ids is refused
    mainTaskId = await createTask(t.app, t.auth, { firmwareId, name: 'fleet rollout' });
    const tooMany = await t.app.inject({
      method: 'POST',
      url: `/api/tasks/${mainTaskId}/release`,
      headers: t.auth,
      payload: { deviceIds: [...ALL_IDS, ...UNKNOWN_IDS] },
    });
    expect(tooMany.statusCode).toBe(400);
    expect(tooMany.json().code).toBe('validation_error');

    expect(chosenIds).toHaveLength(100_000);
    const result = await timedRelease('by deviceIds of 100,000 ids', mainTaskId, { deviceIds: chosenIds });
    expect(result.added).toBe(expectedAdded);
    expect(result.skipped).toEqual({ already_on_version: ON_VERSION, busy: BUSY, unknown_device: UNKNOWN });
    expect(result.skippedDevices).toHaveLength(100);
    const expectedReason = (id: string) => {
      if (id.startsWith('ghost-')) return 'unknown_device';
      const i = Number(id.slice('scale-'.length));
      return isOnVersion(i) ? 'already_on_version' : isBusy(i) ? 'busy' : 'none';
    };
    for (const skipped of result.skippedDevices) expect(skipped.reason, skipped.deviceId).toBe(expectedReason(skipped.deviceId));

    const task = await taskStats(t.app, t.auth, mainTaskId);
    expect(task.state).toBe('created');
    expect(task.stats).toEqual({ total: expectedAdded, waiting: expectedAdded, processing: 0, success: 0, failed: 0, canceled: 0 });
    expect(await countRows(sql<{ n: number }>`SELECT count(*) AS n FROM upgrade_records WHERE task_id = ${mainTaskId} AND state = 'waiting'`)).toBe(expectedAdded);
    expect(
      await countRows(sql<{ n: number }>`
        SELECT count(*) AS n FROM record_events e JOIN upgrade_records r ON r.id = e.record_id
        WHERE r.task_id = ${mainTaskId} AND e.type = 'released'`),
    ).toBe(expectedAdded);
    // one active upgrade per device, whatever the path
    expect(
      await countRows(sql<{ n: number }>`
        SELECT count(*) AS n FROM (SELECT device_id FROM upgrade_records WHERE state IN ('waiting', 'processing')
                                   GROUP BY device_id HAVING count(*) > 1) doubled`),
    ).toBe(0);

    // the same ids again: everything is skipped, nothing changes
    const again = await timedRelease('by deviceIds again (all skipped)', mainTaskId, { deviceIds: chosenIds });
    expect(again.added).toBe(0);
    expect(again.skipped).toEqual({ already_in_task: expectedAdded, already_on_version: ON_VERSION, busy: BUSY, unknown_device: UNKNOWN });
    expect((await taskStats(t.app, t.auth, mainTaskId)).stats.total).toBe(expectedAdded);
  }, 120_000);

  it('releases a fresh task to all devices of the product with the right counts', async () => {
    // the main task holds 98,450 devices, the other task 500; only the 50 left out are free
    const fresh = await createTask(t.app, t.auth, { firmwareId, name: 'all devices' });
    const first = await timedRelease('allDevices (50 free)', fresh, { allDevices: true });
    expect(first.added).toBe(UNKNOWN);
    expect(first.skipped).toEqual({ already_on_version: ON_VERSION, busy: BUSY + expectedAdded });
    expect((await taskStats(t.app, t.auth, fresh)).stats).toMatchObject({ total: UNKNOWN, waiting: UNKNOWN });

    // free the main task's devices, then another fresh task takes them all
    const cancel = await t.app.inject({ method: 'POST', url: `/api/tasks/${mainTaskId}/cancel`, headers: t.auth, payload: {} });
    expect(cancel.statusCode, cancel.body).toBe(200);
    expect(cancel.json()).toMatchObject({ canceled: expectedAdded, task: { state: 'canceled', stats: { canceled: expectedAdded, waiting: 0 } } });

    const last = await createTask(t.app, t.auth, { firmwareId, name: 'all devices again' });
    const result = await timedRelease('allDevices of 100,000 (98,450 added)', last, { allDevices: true });
    expect(result.added).toBe(expectedAdded);
    expect(result.skipped).toEqual({ already_on_version: ON_VERSION, busy: BUSY + UNKNOWN });
    expect((await taskStats(t.app, t.auth, last)).stats).toEqual({
      total: expectedAdded,
      waiting: expectedAdded,
      processing: 0,
      success: 0,
      failed: 0,
      canceled: 0,
    });

    // with a version filter nothing is left to add, and every device is classified
    const filtered = await createTask(t.app, t.auth, { firmwareId, name: 'filtered' });
    const none = await timedRelease('allDevices with fromVersions (0 added)', filtered, { allDevices: true, fromVersions: ['0.9.0'] });
    expect(none.added).toBe(0);
    expect(none.skipped).toEqual({ already_on_version: ON_VERSION, version_filtered: FLEET - ON_VERSION });
  }, 120_000);
});
