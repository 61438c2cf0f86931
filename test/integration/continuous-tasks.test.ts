// Continuous tasks and endAt (docs/strategies.md#continuous): a running continuous task enrols,
// within 10 s, the devices that come to match its release later — registered later with its tags,
// given its tags later, reporting a version of its fromVersions later — upgrades them through its
// waves, and stays running until canceled or its endAt; endAt ends any task, canceling what waits.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { Fleet, fleetDeviceIds } from '../../tools/fleet.ts';
import { createFirmware, createTask, taskStats, waitForTask } from '../helpers/rollout.ts';

const ENROL_WITHIN_MS = 10_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('continuous tasks and endAt', () => {
  let broker: TestBroker;
  let t: TestApp;
  const fleets: Fleet[] = [];

  beforeAll(async () => {
    broker = await startBroker();
    t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url });
  }, 60_000);

  afterAll(async () => {
    for (const fleet of fleets) await fleet.stop();
    await t?.close();
    await broker?.stop();
  });

  async function putDevices(devices: Array<Record<string, unknown>>): Promise<void> {
    const response = await t.app.inject({ method: 'PUT', url: '/api/devices', headers: t.auth, payload: { devices } });
    expect(response.statusCode, response.body).toBe(200);
  }

  async function startFleet(productId: string, ids: string[]): Promise<void> {
    const fleet = new Fleet({ mqttUrl: broker.url, productId, deviceIds: ids, reportOnStart: false, seed: productId, progressSteps: 2, stepMs: 50 });
    fleets.push(fleet);
    await fleet.start();
  }

  /** When each of the task's records was created, by device. */
  async function enrolledAt(taskId: string): Promise<Map<string, { at: number; wave: number }>> {
    const { rows } = await sql<{ device_id: string; created_at: Date; wave: number }>`
      SELECT device_id, created_at, wave FROM upgrade_records WHERE task_id = ${taskId}`.execute(t.database.db);
    return new Map(rows.map((row) => [row.device_id, { at: row.created_at.getTime(), wave: row.wave }]));
  }

  it('enrols devices that come to match later within 10 s, upgrades them through its waves, and runs until canceled', async () => {
    const productId = 'continuous';
    const ids = fleetDeviceIds(productId, 35);
    const [initial, taggedLater, reportLater, registeredLater] = [ids.slice(0, 20), ids.slice(20, 25), ids.slice(25, 30), ids.slice(30, 35)];
    await putDevices([
      ...initial.map((id) => ({ id, productId, firmwareVersion: '1.0.0', tags: { region: 'eu' } })),
      ...taggedLater.map((id) => ({ id, productId, firmwareVersion: '1.0.0', tags: { region: 'us' } })),
      ...reportLater.map((id) => ({ id, productId, firmwareVersion: '0.9.0', tags: { region: 'eu' } })),
    ]);
    await startFleet(productId, ids);
    const firmwareId = await createFirmware(t.app, t.auth, productId);
    const taskId = await createTask(t.app, t.auth, {
      firmwareId,
      continuous: true,
      rollout: { waves: [{ percent: 50 }, { percent: 100 }], gate: { minSuccessRate: 0.9 } },
    });
    const release = await t.app.inject({
      method: 'POST',
      url: `/api/tasks/${taskId}/release`,
      headers: t.auth,
      payload: { tags: { region: 'eu' }, fromVersions: ['1.0.0'], push: true },
    });
    expect(release.statusCode, release.body).toBe(200);
    expect(release.json()).toMatchObject({ added: 20, skipped: { version_filtered: 5 } });
    await waitForTask(t.app, t.auth, taskId, (task) => task.stats.success === 20, 30_000);
    await sleep(1_500);
    // every record final, yet a continuous task does not complete on its own
    expect(await taskStats(t.app, t.auth, taskId)).toMatchObject({ state: 'running', stats: { total: 20, success: 20 } });

    const changedAt = Date.now();
    await putDevices(taggedLater.map((id) => ({ id, productId, tags: { region: 'eu' } })));
    await putDevices(registeredLater.map((id) => ({ id, productId, firmwareVersion: '1.0.0', tags: { region: 'eu' } })));
    const reports = await t.app.inject({
      method: 'POST',
      url: '/api/device-messages',
      headers: t.auth,
      payload: reportLater.map((deviceId) => ({ messageType: 'REPORT_FIRMWARE', deviceId, version: '1.0.0', timestamp: Date.now() })),
    });
    expect(reports.statusCode, reports.body).toBe(200);

    const late = [...taggedLater, ...reportLater, ...registeredLater];
    const done = await waitForTask(t.app, t.auth, taskId, (task) => task.stats.success === 35, ENROL_WITHIN_MS + 20_000);
    expect(done).toMatchObject({ state: 'running', stats: { total: 35, success: 35 } });
    const enrolled = await enrolledAt(taskId);
    for (const id of late) {
      expect(enrolled.get(id)!.at - changedAt, id).toBeLessThanOrEqual(ENROL_WITHIN_MS);
      // after wave 1 passed, late devices join the waves still to come: here the last
      expect(enrolled.get(id)!.wave, id).toBe(2);
    }

    const cancel = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/cancel`, headers: t.auth, payload: {} });
    expect(cancel.statusCode, cancel.body).toBe(200);
    expect(cancel.json().task.state).toBe('canceled');
    // a canceled continuous task enrols no more
    await putDevices([{ id: 'continuous-after-cancel', productId, firmwareVersion: '1.0.0', tags: { region: 'eu' } }]);
    await sleep(6_000);
    expect((await taskStats(t.app, t.auth, taskId)).stats.total).toBe(35);
  }, 90_000);

  it('endAt: a continuous task completes there; a task with waiting records has them canceled and completes', async () => {
    const productId = 'ends';
    const ids = fleetDeviceIds(productId, 10);
    await putDevices(ids.map((id) => ({ id, productId, firmwareVersion: '1.0.0' })));
    await startFleet(productId, ids.slice(0, 5));
    const firmwareId = await createFirmware(t.app, t.auth, productId);
    const endAt = new Date(Date.now() + 4_000).toISOString();

    const continuous = await createTask(t.app, t.auth, { firmwareId, continuous: true, endAt });
    await t.app.inject({ method: 'POST', url: `/api/tasks/${continuous}/release`, headers: t.auth, payload: { deviceIds: ids.slice(0, 5), push: true } });
    // released, not pushed: its records wait until endAt cancels them
    const waiting = await createTask(t.app, t.auth, { firmwareId, endAt });
    await t.app.inject({ method: 'POST', url: `/api/tasks/${waiting}/release`, headers: t.auth, payload: { deviceIds: ids.slice(5) } });

    await waitForTask(t.app, t.auth, continuous, (task) => task.stats.success === 5, 20_000);
    expect((await taskStats(t.app, t.auth, continuous)).state).toBe('running');
    const ended = await waitForTask(t.app, t.auth, continuous, (task) => task.state === 'completed', 15_000);
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(endAt));
    expect(ended.stats).toMatchObject({ total: 5, success: 5 });
    const canceled = await waitForTask(t.app, t.auth, waiting, (task) => task.state === 'completed', 15_000);
    expect(canceled.stats).toMatchObject({ total: 5, waiting: 0, canceled: 5 });
  }, 60_000);
});
