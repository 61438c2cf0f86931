// A ramp (docs/strategies.md#ramp) across three ROLE=worker processes: the send rate starts at
// startPerMinute and doubles each time `everySucceeded` more records succeed, capped by
// maxPerMinute. Checked against the recorded timeline: at every send, the sends of the trailing
// 60 s window never exceed the rate its successes allow, and once each step's sends have gone out,
// the window holds what that rate allows (within 10 %) while records still wait.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { spawnWorkers, type OtterProcess } from '../helpers/processes.ts';
import { Fleet, fleetDeviceIds } from '../../tools/fleet.ts';
import { createFirmware, createTask, registerDevices, taskStats } from '../helpers/rollout.ts';
import { rampRate } from '../../core/waves.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const RAMP = { startPerMinute: 20, factor: 2, everySucceeded: 20 };
const CAP = 160;
const WINDOW_MS = 60_000;

interface Event {
  type: 'sent' | 'success';
  at: number;
}

async function timeline(t: TestApp, taskId: string): Promise<Event[]> {
  const { rows } = await sql<{ type: 'sent' | 'success'; at: Date }>`
    SELECT e.type, e.at FROM record_events e JOIN upgrade_records r ON r.id = e.record_id
    WHERE r.task_id = ${taskId} AND e.type IN ('sent', 'success') ORDER BY e.at, e.id`.execute(t.database.db);
  return rows.map((row) => ({ type: row.type, at: row.at.getTime() }));
}

describe('a ramp across three worker processes', () => {
  let broker: TestBroker;
  let t: TestApp;
  const workers: OtterProcess[] = [];
  let fleet: Fleet | undefined;

  beforeAll(async () => {
    broker = await startBroker();
    t = await buildTestApp({ ROLE: 'api', MQTT_URL: broker.url });
    workers.push(...(await spawnWorkers(t.config, 3)));
  }, 90_000);

  afterAll(async () => {
    await Promise.all(workers.map((worker) => worker.stop()));
    await fleet?.stop();
    await t?.close();
    await broker?.stop();
  });

  it('sends as the ramp allows at each step: 20, then 40, 80 and 160 (the cap) per minute as records succeed', async () => {
    const productId = 'ramp';
    const ids = fleetDeviceIds(productId, 300);
    await registerDevices(t.app, t.auth, productId, ids);
    // each upgrade takes about a second, so each step of the ramp is a second apart
    fleet = new Fleet({ mqttUrl: broker.url, productId, deviceIds: ids, reportOnStart: false, seed: productId, progressSteps: 2, stepMs: 500 });
    await fleet.start();
    const firmwareId = await createFirmware(t.app, t.auth, productId);
    const taskId = await createTask(t.app, t.auth, { firmwareId, rollout: { ramp: RAMP, maxPerMinute: CAP } });
    const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: true } });
    expect(release.statusCode, release.body).toBe(200);

    // the cap is reached after three steps; then the window is full until its first sends age out
    const deadline = Date.now() + 40_000;
    while ((await taskStats(t.app, t.auth, taskId)).stats.success < CAP) {
      if (Date.now() > deadline) throw new Error(`the ramp did not reach its cap: ${JSON.stringify((await taskStats(t.app, t.auth, taskId)).stats)}`);
      await sleep(250);
    }
    await sleep(2_000);
    const events = await timeline(t, taskId);
    const sends = events.filter((event) => event.type === 'sent').map((event) => event.at);
    const successes = events.filter((event) => event.type === 'success').map((event) => event.at);
    const first = sends[0]!;
    const succeededBy = (at: number) => successes.filter((s) => s <= at).length;
    const sentInWindowTo = (at: number) => sends.filter((s) => s <= at && s > at - WINDOW_MS).length;

    // never more than the rate its successes allowed at that moment
    for (const at of sends) expect(sentInWindowTo(at), `at +${at - first} ms`).toBeLessThanOrEqual(rampRate(RAMP, succeededBy(at), CAP));

    // each step: the rate it reached, and the window's sends once that step's sends went out
    const steps = [...new Set(sends.map((at) => rampRate(RAMP, succeededBy(at), CAP)))];
    const reached = steps.map((rate) => Math.max(...sends.filter((at) => rampRate(RAMP, succeededBy(at), CAP) === rate).map(sentInWindowTo)));
    console.log(`ramp: steps ${steps.join(' → ')} per minute; window held ${reached.join(' → ')}; ${sends.length} sent in ${((sends.at(-1)! - first) / 1000).toFixed(1)} s`);
    expect(steps).toEqual([20, 40, 80, 160]);
    reached.forEach((count, i) => expect(count, `step ${steps[i]}`).toBeGreaterThanOrEqual(Math.floor(steps[i]! * 0.9)));
    // and at the cap the window is full: nothing more goes out while records wait
    const { stats } = await taskStats(t.app, t.auth, taskId);
    expect(stats.waiting).toBeGreaterThan(0);
    expect(sends).toHaveLength(CAP);
  }, 120_000);
});
