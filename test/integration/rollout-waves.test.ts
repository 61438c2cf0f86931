// Canary waves with gates (docs/strategies.md#waves), across an in-process API and two ROLE=worker
// processes sharing one database, Redis prefix and broker: each wave is sent to only once the one
// before is final, soaked and (with approval) approved; a wave whose success rate cannot reach the
// gate pauses the task (gate_failed) before anything reaches the next wave; resume goes on; wave
// membership is in Postgres, the same before and after every process (API and workers) restarts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { spawnWorkers, type OtterProcess } from '../helpers/processes.ts';
import { Fleet, deviceFate, fleetDeviceIds, type FleetOptions } from '../../tools/fleet.ts';
import { createFirmware, createTask, registerDevices, waitForTask } from '../helpers/rollout.ts';

const DEVICES = 2_000;
const SOAK_SECONDS = 2;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface WaveJson {
  index: number;
  size: number;
  state: string;
  stats: { total: number; waiting: number; processing: number; success: number; failed: number; canceled: number };
}
interface TaskJson {
  state: string;
  pausedReason: string | null;
  waves: WaveJson[];
  stats: WaveJson['stats'];
}

/** Per record of the task: its device, wave, when it was first sent and when it became final. */
async function recordTimes(t: TestApp, taskId: string) {
  const { rows } = await sql<{ device_id: string; wave: number; state: string; first_sent: Date | null; final_at: Date | null }>`
    SELECT r.device_id, r.wave, r.state,
      (SELECT min(e.at) FROM record_events e WHERE e.record_id = r.id AND e.type = 'sent') AS first_sent,
      (SELECT max(e.at) FROM record_events e WHERE e.record_id = r.id AND e.type IN ('success', 'failed', 'canceled')) AS final_at
    FROM upgrade_records r WHERE r.task_id = ${taskId}`.execute(t.database.db);
  return rows;
}

describe('canary waves with gates, two worker processes', () => {
  let broker: TestBroker;
  let t: TestApp;
  let workers: OtterProcess[] = [];
  const fleets: Fleet[] = [];

  async function startWorkers(): Promise<void> {
    workers = await spawnWorkers(t.config, 2);
  }

  beforeAll(async () => {
    broker = await startBroker();
    t = await buildTestApp({ ROLE: 'api', MQTT_URL: broker.url });
    await startWorkers();
  }, 90_000);

  afterAll(async () => {
    await Promise.all(workers.map((worker) => worker.stop()));
    for (const fleet of fleets) await fleet.stop();
    await t?.close();
    await broker?.stop();
  });

  async function startFleet(productId: string, ids: string[], options: Partial<FleetOptions> = {}): Promise<Fleet> {
    await registerDevices(t.app, t.auth, productId, ids);
    const fleet = new Fleet({ mqttUrl: broker.url, productId, deviceIds: ids, reportOnStart: false, seed: productId, progressSteps: 2, stepMs: 50, ...options });
    fleets.push(fleet);
    await fleet.start();
    return fleet;
  }

  async function getTask(taskId: string): Promise<TaskJson> {
    const response = await t.app.inject({ method: 'GET', url: `/api/tasks/${taskId}`, headers: t.auth });
    expect(response.statusCode, response.body).toBe(200);
    return response.json();
  }

  async function waitForWave(taskId: string, index: number, state: string, timeoutMs = 60_000): Promise<TaskJson> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const task = await getTask(taskId);
      if (task.waves[index - 1]?.state === state) return task;
      if (Date.now() > deadline) throw new Error(`wave ${index} not ${state} in ${timeoutMs} ms: ${JSON.stringify(task.waves)}`);
      await sleep(100);
    }
  }

  const approve = (taskId: string, index: number) =>
    t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/waves/${index}/approve`, headers: t.auth });

  it('sends wave n+1 only once wave n is final, soaked and approved; first devices in wave 1; membership survives restarts', async () => {
    const productId = 'waves-pass';
    const ids = fleetDeviceIds(productId, DEVICES);
    await startFleet(productId, ids);
    const firstDeviceIds = [ids[1_999]!, ids[1_500]!, ids[7]!, ids[42]!, ids[1_000]!];
    const firmwareId = await createFirmware(t.app, t.auth, productId);
    const taskId = await createTask(t.app, t.auth, {
      firmwareId,
      rollout: {
        waves: [{ percent: 1 }, { percent: 10 }, { percent: 100 }],
        gate: { minSuccessRate: 0.95, soakSeconds: SOAK_SECONDS, approval: true },
        firstDeviceIds,
      },
    });
    const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: true } });
    expect(release.statusCode, release.body).toBe(200);

    const released = await getTask(taskId);
    expect(released.waves.map((wave) => [wave.index, wave.size])).toEqual([[1, 20], [2, 180], [3, 1_800]]);
    expect(released.waves.slice(1).map((wave) => wave.state)).toEqual(['pending', 'pending']);
    const membership = new Map((await recordTimes(t, taskId)).map((row) => [row.device_id, row.wave]));
    expect(firstDeviceIds.map((id) => membership.get(id))).toEqual([1, 1, 1, 1, 1]);
    const firstWave = await t.app.inject({ method: 'GET', url: `/api/tasks/${taskId}/records?wave=1&pageSize=100`, headers: t.auth });
    expect(firstWave.json().total).toBe(20);
    expect(firstWave.json().items.every((record: { wave: number }) => record.wave === 1)).toBe(true);

    // a pending wave has no gate to approve yet; there is no wave 9
    expect((await approve(taskId, 3)).json().code).toBe('wave_not_approvable');
    expect((await approve(taskId, 9)).statusCode).toBe(404);

    const waiting = await waitForWave(taskId, 1, 'awaiting_approval');
    expect(waiting.waves[0]!.stats).toMatchObject({ total: 20, success: 20 });
    expect(waiting.waves[1]).toMatchObject({ state: 'pending', stats: { waiting: 180 } });
    // nothing moves without the approval, across a restart of every process: the workers and the API
    await Promise.all(workers.map((worker) => worker.stop()));
    await t.restart();
    await startWorkers();
    await sleep(1_500);
    const still = await getTask(taskId);
    expect(still.waves.map((wave) => wave.state)).toEqual(['awaiting_approval', 'pending', 'pending']);
    expect((await recordTimes(t, taskId)).filter((row) => row.wave > 1 && row.first_sent !== null)).toEqual([]);

    const approvedAt = [Date.now()];
    expect((await approve(taskId, 1)).statusCode).toBe(200);
    await waitForWave(taskId, 2, 'awaiting_approval');
    approvedAt.push(Date.now());
    expect((await approve(taskId, 2)).statusCode).toBe(200);
    const done = await waitForTask(t.app, t.auth, taskId, (task) => task.state === 'completed', 90_000);
    expect(done.stats).toMatchObject({ total: DEVICES, success: DEVICES });

    const rows = await recordTimes(t, taskId);
    expect(new Map(rows.map((row) => [row.device_id, row.wave]))).toEqual(membership);
    for (const wave of [2, 3]) {
      const before = rows.filter((row) => row.wave === wave - 1);
      const lastFinal = Math.max(...before.map((row) => row.final_at!.getTime()));
      const firstSent = Math.min(...rows.filter((row) => row.wave === wave).map((row) => row.first_sent!.getTime()));
      // final, then soaked, then approved; the database clock and this one agree within a few ms
      expect(firstSent, `wave ${wave}`).toBeGreaterThanOrEqual(lastFinal + SOAK_SECONDS * 1_000);
      expect(firstSent, `wave ${wave}`).toBeGreaterThanOrEqual(approvedAt[wave - 2]! - 50);
    }
    // the last wave shows how it ended once the scheduler has looked (once a second)
    const final = await waitForWave(taskId, 3, 'passed', 5_000);
    expect(final.waves.map((wave) => wave.state)).toEqual(['passed', 'passed', 'passed']);
  }, 180_000);

  it('pauses the task with gate_failed when wave 1 cannot reach its success rate, sends nothing to wave 2, and goes on after resume', async () => {
    const productId = 'waves-fail';
    const ids = fleetDeviceIds(productId, DEVICES);
    const rates = { failRate: 0.01, silentRate: 0, rejectRate: 0 };
    const fleet = await startFleet(productId, ids, rates);
    // wave 1 (1 %: 20 devices) is these: 4 that fail (20 %) and 16 that succeed
    const failing = ids.filter((id) => deviceFate(productId, id, rates) === 'fail').slice(0, 4);
    const succeeding = ids.filter((id) => deviceFate(productId, id, rates) === 'success').slice(0, 16);
    expect(failing).toHaveLength(4);
    // wave.gate events wait in the outbox: this hook's receiver never answers
    const hook = await t.app.inject({
      method: 'POST',
      url: '/api/webhooks',
      headers: t.auth,
      payload: { url: 'http://127.0.0.1:9/gates', secret: 'wave-gate-secret-0', events: ['wave.gate'], productId },
    });
    expect(hook.statusCode, hook.body).toBe(201);
    const firmwareId = await createFirmware(t.app, t.auth, productId);
    const taskId = await createTask(t.app, t.auth, {
      firmwareId,
      retry: { maxAttempts: 1, backoffSeconds: 0, on: [] },
      rollout: {
        waves: [{ percent: 1 }, { percent: 10 }, { percent: 100 }],
        gate: { minSuccessRate: 0.95 },
        firstDeviceIds: [...failing, ...succeeding],
      },
    });
    await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: true } });

    const paused = await waitForTask(t.app, t.auth, taskId, (task) => task.state === 'paused', 60_000);
    expect(paused).toMatchObject({ pausedReason: 'gate_failed' });
    await sleep(1_000);
    const task = await getTask(taskId);
    expect(task.waves.map((wave) => wave.state)).toEqual(['failed', 'pending', 'pending']);
    expect(task.waves[0]!.stats.failed).toBeGreaterThanOrEqual(2);
    const rows = await recordTimes(t, taskId);
    expect(rows.filter((row) => row.wave > 1 && row.first_sent !== null)).toEqual([]);
    expect(rows.filter((row) => row.wave === 1).map((row) => row.device_id).sort()).toEqual([...failing, ...succeeding].sort());
    const upgradesBefore = fleet.stats.upgradesReceived;
    const { rows: gateEvents } = await sql<{ data: { taskId: string; wave: number; state: string; previousState: string } }>`
      SELECT e.value->'data' AS data FROM webhook_outbox o CROSS JOIN LATERAL json_array_elements(o.events) WITH ORDINALITY AS e
      WHERE e.value->>'type' = 'wave.gate' ORDER BY o.id, e.ordinality`.execute(t.database.db);
    expect(gateEvents.map((event) => event.data)).toEqual([expect.objectContaining({ taskId, wave: 1, state: 'failed', previousState: 'running' })]);

    const resumed = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/resume`, headers: t.auth });
    expect(resumed.statusCode, resumed.body).toBe(200);
    expect(resumed.json().pausedReason).toBeNull();
    const done = await waitForTask(t.app, t.auth, taskId, (current) => current.state === 'completed', 90_000);
    expect(done.stats.success + done.stats.failed).toBe(DEVICES);
    expect(fleet.stats.upgradesReceived - upgradesBefore).toBeGreaterThanOrEqual(DEVICES - 20);
    const end = await waitForWave(taskId, 3, 'passed', 5_000);
    expect(end.waves.map((wave) => wave.state)).toEqual(['failed', 'passed', 'passed']);
  }, 180_000);
});
