// Maintenance windows (docs/strategies.md#windows) through a whole rollout, with the clock of the
// dispatcher, the jobs and the API injected: a Saturday-night window in Los Angeles that crosses
// midnight and the end of daylight saving time (2026-11-01, 02:00 PDT → 01:00 PST). No send —
// first attempt or retry — happens while the window is closed; upgrades in flight go on; the task
// shows when the next window opens.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { Fleet, deviceFate, fleetDeviceIds } from '../../tools/fleet.ts';
import { createFirmware, createTask, registerDevices, waitForTask } from '../helpers/rollout.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
// Saturday 23:30 local for 3 real hours: 06:30Z (PDT, UTC−7) to 09:30Z (01:30 PST, UTC−8)
const WINDOW = { days: ['sat'], start: '23:30', durationMinutes: 180, timeZone: 'America/Los_Angeles' };
const BEFORE = Date.parse('2026-11-01T05:00:00Z'); // Saturday 22:00 PDT
const OPENS = Date.parse('2026-11-01T06:30:00Z');
const CLOSES = Date.parse('2026-11-01T09:30:00Z');
const NEXT_OPENS = Date.parse('2026-11-08T07:30:00Z'); // the next Saturday 23:30, now PST
/** A send decided just before the clock moved may still be written just after it. */
const SLACK_MS = 300;

describe('maintenance windows across midnight and a daylight-saving change', () => {
  let broker: TestBroker;
  let t: TestApp;
  let fleet: Fleet;
  let now = BEFORE;

  beforeAll(async () => {
    broker = await startBroker();
    t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url }, { strategies: { clock: () => now, windowRecheckMs: 100 } });
  }, 60_000);

  afterAll(async () => {
    await fleet?.stop();
    await t?.close();
    await broker?.stop();
  });

  async function sentEvents(taskId: string): Promise<Array<{ deviceId: string; at: number }>> {
    const { rows } = await sql<{ device_id: string; at: Date }>`
      SELECT r.device_id, e.at FROM record_events e JOIN upgrade_records r ON r.id = e.record_id
      WHERE r.task_id = ${taskId} AND e.type = 'sent' ORDER BY e.at`.execute(t.database.db);
    return rows.map((row) => ({ deviceId: row.device_id, at: row.at.getTime() }));
  }

  async function getTask(taskId: string) {
    const response = await t.app.inject({ method: 'GET', url: `/api/tasks/${taskId}`, headers: t.auth });
    expect(response.statusCode, response.body).toBe(200);
    return response.json();
  }

  async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
      await sleep(50);
    }
  }

  it('sends only inside the window, lets in-flight upgrades finish, holds retries, and shows nextWindowAt', async () => {
    const productId = 'windows';
    const rates = { failRate: 0.1, silentRate: 0, rejectRate: 0 };
    const all = fleetDeviceIds(productId, 200);
    const failing = all.filter((id) => deviceFate(productId, id, rates) === 'fail').slice(0, 2);
    const succeeding = all.filter((id) => deviceFate(productId, id, rates) === 'success').slice(0, 22);
    const ids = [...failing, ...succeeding];
    await registerDevices(t.app, t.auth, productId, ids);
    fleet = new Fleet({ mqttUrl: broker.url, productId, deviceIds: ids, reportOnStart: false, seed: productId, ...rates, progressSteps: 4, stepMs: 400 });
    await fleet.start();
    const firmwareId = await createFirmware(t.app, t.auth, productId);
    const taskId = await createTask(t.app, t.auth, {
      firmwareId,
      windows: [WINDOW],
      rollout: { maxInFlight: 6 },
      retry: { maxAttempts: 2, backoffSeconds: 1, on: ['device_failure'] },
    });
    // the two failing devices and four others first (records are dispatched in the order released)
    const first = [...failing, ...succeeding.slice(0, 4)];
    for (const deviceIds of [first, succeeding.slice(4)]) {
      const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { deviceIds, push: true } });
      expect(release.statusCode, release.body).toBe(200);
    }

    // closed: nothing is sent, and the task says when the window opens
    expect((await getTask(taskId)).nextWindowAt).toBe(new Date(OPENS).toISOString());
    await sleep(1_500);
    expect(await sentEvents(taskId)).toEqual([]);

    // open: the first six go out
    now = OPENS;
    expect((await getTask(taskId)).nextWindowAt).toBeNull();
    await waitFor('the first six sent', async () => (await sentEvents(taskId)).length >= 6);

    // closed again (01:30 PST, after the clocks went back): in-flight upgrades finish, nothing is sent
    now = CLOSES;
    const closedAt = Date.now();
    expect((await getTask(taskId)).nextWindowAt).toBe(new Date(NEXT_OPENS).toISOString());
    await waitFor('the four good in-flight upgrades succeeded', async () => (await getTask(taskId)).stats.success === 4);
    // the failing devices' retries fall due after 1 s: held, as are the 18 waiting records
    await sleep(2_500);
    const sentWhileClosed = (await sentEvents(taskId)).filter((event) => event.at > closedAt + SLACK_MS);
    expect(sentWhileClosed).toEqual([]);
    expect((await getTask(taskId)).stats).toMatchObject({ success: 4, waiting: 18, processing: 2 });

    // the next Saturday night: the retries and the rest go out, and the rollout ends
    now = NEXT_OPENS;
    const reopenedAt = Date.now();
    const done = await waitForTask(t.app, t.auth, taskId, (task) => task.state === 'completed', 60_000);
    expect(done.stats).toMatchObject({ total: 24, success: 22, failed: 2 });
    const sent = await sentEvents(taskId);
    expect(sent).toHaveLength(24 + 2);
    const retries = sent.filter((event) => failing.includes(event.deviceId)).slice(2);
    expect(retries).toHaveLength(2);
    for (const retry of retries) expect(retry.at).toBeGreaterThanOrEqual(reopenedAt - SLACK_MS);
  }, 120_000);
});
