// rollout.maxPerMinute across worker processes: an in-process API and two ROLE=worker processes
// share one database, Redis prefix and broker. The limit holds for every sliding 60 s window of
// the recorded send times while both workers send, and a rate-limited task never holds back an
// unlimited one running beside it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { spawnWorkers, type OtterProcess } from '../helpers/processes.ts';
import { TEST_API_KEY } from '../helpers/env.ts';
import { Fleet, fleetDeviceIds } from '../../tools/fleet.ts';
import { allFinal, createFirmware, createTask, registerDevices, taskStats, waitForTask } from '../helpers/rollout.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Times (ms since the epoch, ascending) of a task's `sent` events, from the database. */
async function sendTimes(t: TestApp, taskId: string): Promise<number[]> {
  const { rows } = await sql<{ at: Date }>`
    SELECT e.at FROM record_events e JOIN upgrade_records r ON r.id = e.record_id
    WHERE r.task_id = ${taskId} AND e.type = 'sent' ORDER BY e.at`.execute(t.database.db);
  return rows.map((row) => row.at.getTime());
}

/** The most sends in any closed window [s, s + windowMs] (windows starting at a send suffice). */
function maxInWindow(times: number[], windowMs: number): number {
  let max = 0;
  let end = 0;
  for (let start = 0; start < times.length; start += 1) {
    while (end < times.length && times[end]! - times[start]! <= windowMs) end += 1;
    max = Math.max(max, end - start);
  }
  return max;
}

/** otter_messages_sent_total{type="UPGRADE_FIRMWARE",result="ok"} of one worker process. */
async function upgradesSentBy(worker: OtterProcess): Promise<number> {
  const response = await fetch(`${worker.baseUrl}/metrics`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
  expect(response.status).toBe(200);
  const text = await response.text();
  const line = text.split('\n').find((l) => l.startsWith('otter_messages_sent_total{') && l.includes('type="UPGRADE_FIRMWARE"') && l.includes('result="ok"'));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

describe('rollout rate limits with two worker processes', () => {
  let broker: TestBroker;
  let t: TestApp;
  const workers: OtterProcess[] = [];
  const fleets: Fleet[] = [];

  beforeAll(async () => {
    broker = await startBroker();
    t = await buildTestApp({ ROLE: 'api', MQTT_URL: broker.url });
    workers.push(...(await spawnWorkers(t.config, 2)));
  }, 90_000);

  afterAll(async () => {
    await Promise.all(workers.map((worker) => worker.stop()));
    for (const fleet of fleets) await fleet.stop();
    await t?.close();
    await broker?.stop();
  });

  async function startFleet(productId: string, count: number): Promise<string[]> {
    const ids = fleetDeviceIds(productId, count);
    await registerDevices(t.app, t.auth, productId, ids);
    const fleet = new Fleet({ mqttUrl: broker.url, productId, deviceIds: ids, progressSteps: 3, stepMs: 5, reportOnStart: false, seed: productId });
    fleets.push(fleet);
    await fleet.start();
    return ids;
  }

  async function releaseAndPush(taskId: string, expected: number): Promise<void> {
    const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: true } });
    expect(release.statusCode, release.body).toBe(200);
    expect(release.json().added).toBe(expected);
  }

  it('sends at most maxPerMinute in every sliding 60 s window, across both workers, and keeps sending after the first minute', async () => {
    const LIMIT = 120;
    await startFleet('rate', 400);
    const firmwareId = await createFirmware(t.app, t.auth, 'rate');
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 600, rollout: { maxPerMinute: LIMIT } });
    const baseline = await Promise.all(workers.map(upgradesSentBy));
    await releaseAndPush(taskId, 400);

    // wait for the first send, then let the rollout run past its first minute
    let times: number[];
    const firstDeadline = Date.now() + 15_000;
    while ((times = await sendTimes(t, taskId)).length === 0) {
      if (Date.now() > firstDeadline) throw new Error('nothing was sent within 15 s');
      await sleep(200);
    }
    const first = times[0]!;
    let sampledAt30s: number | undefined;
    while (Date.now() < first + 68_000) {
      await sleep(1_000);
      if (sampledAt30s === undefined && Date.now() >= first + 30_000) sampledAt30s = (await sendTimes(t, taskId)).length;
    }
    times = await sendTimes(t, taskId);
    const perWindow = maxInWindow(times, 60_000);
    const inFirstMinute = times.filter((at) => at - first <= 60_000).length;
    const afterFirstMinute = times.filter((at) => at - first > 60_000);
    const perWorker = (await Promise.all(workers.map(upgradesSentBy))).map((n, i) => n - baseline[i]!);
    console.log(
      `maxPerMinute ${LIMIT}: ${times.length} sent in ${((times.at(-1)! - first) / 1000).toFixed(1)} s, ` +
        `max ${perWindow} in any 60 s window, ${inFirstMinute} in the first minute, ${sampledAt30s} by 30 s, ` +
        `first send after the minute at +${afterFirstMinute[0] === undefined ? '-' : ((afterFirstMinute[0] - first) / 1000).toFixed(2)} s; per worker ${perWorker.join(' / ')}`,
    );

    expect(perWindow).toBeLessThanOrEqual(LIMIT);
    // the budget is used, not wasted: the first minute sends all it may, then nothing more until the window rolls
    expect(inFirstMinute).toBe(LIMIT);
    expect(sampledAt30s).toBe(LIMIT);
    // and sending goes on once the window has rolled
    expect(times.length).toBeGreaterThan(LIMIT);
    expect(afterFirstMinute.length).toBeGreaterThan(0);
    // both worker processes sent, and together they sent exactly what the timeline says
    expect(perWorker.every((n) => n > 0), `per worker: ${perWorker.join(', ')}`).toBe(true);
    expect(perWorker.reduce((a, b) => a + b, 0)).toBe(times.length);

    const stats = (await taskStats(t.app, t.auth, taskId)).stats;
    expect(stats.waiting).toBeGreaterThan(0);
    expect(stats.success + stats.processing).toBe(times.length);

    const cancel = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/cancel`, headers: t.auth, payload: {} });
    expect(cancel.statusCode, cancel.body).toBe(200);
    const canceled = await waitForTask(t.app, t.auth, taskId, allFinal, 15_000);
    expect(canceled.state).toBe('canceled');
    await sleep(1_000);
    const after = await sendTimes(t, taskId);
    expect(after.length).toBe(times.length);
    expect(canceled.stats.success + canceled.stats.canceled).toBe(400);
    expect(canceled.stats.success).toBe(times.length);
  }, 150_000);

  it('a rate-limited task beside an unlimited one: the unlimited one is not held back, the limited one sends its budget', async () => {
    const COUNT = 1_000;
    const LIMIT = 60;
    await startFleet('fast', COUNT);
    await startFleet('slow', COUNT);
    const fast2 = await createFirmware(t.app, t.auth, 'fast', '2.0.0', 2);
    const fast3 = await createFirmware(t.app, t.auth, 'fast', '3.0.0', 3);
    const slow2 = await createFirmware(t.app, t.auth, 'slow', '2.0.0', 2);

    // the unlimited rollout alone, for comparison
    const alone = await createTask(t.app, t.auth, { firmwareId: fast2, timeoutSeconds: 600 });
    let started = Date.now();
    await releaseAndPush(alone, COUNT);
    const aloneDone = await waitForTask(t.app, t.auth, alone, (task) => task.state === 'completed', 60_000);
    const aloneMs = Date.now() - started;
    expect(aloneDone.stats.success).toBe(COUNT);

    // the same devices to the next version, beside a task limited to 60 a minute
    const unlimited = await createTask(t.app, t.auth, { firmwareId: fast3, timeoutSeconds: 600 });
    const limited = await createTask(t.app, t.auth, { firmwareId: slow2, timeoutSeconds: 600, rollout: { maxPerMinute: LIMIT } });
    started = Date.now();
    await Promise.all([releaseAndPush(limited, COUNT), releaseAndPush(unlimited, COUNT)]);
    const unlimitedDone = await waitForTask(t.app, t.auth, unlimited, (task) => task.state === 'completed', 60_000);
    const besideMs = Date.now() - started;
    const limitedSent = await sendTimes(t, limited);
    const limitedTask = await taskStats(t.app, t.auth, limited);
    console.log(
      `1,000 unlimited alone ${(aloneMs / 1000).toFixed(1)} s, beside a 60/min task ${(besideMs / 1000).toFixed(1)} s; ` +
        `the limited task meanwhile sent ${limitedSent.length}: ${JSON.stringify(limitedTask.stats)}`,
    );

    expect(unlimitedDone.stats.success).toBe(COUNT);
    // not held back: about the time it takes alone (a held-back task would need ~17 minutes at 60/min)
    expect(besideMs).toBeLessThan(Math.max(2 * aloneMs, aloneMs + 5_000));
    // the limited one progressed by its budget, and no more, in that time (well under a minute)
    expect(besideMs).toBeLessThan(55_000);
    expect(limitedSent.length).toBeGreaterThanOrEqual(LIMIT - 5);
    expect(limitedSent.length).toBeLessThanOrEqual(LIMIT);
    expect(limitedTask.state).toBe('running');
    expect(limitedTask.stats.success).toBeGreaterThan(0);
    expect(limitedTask.stats.waiting).toBeGreaterThanOrEqual(COUNT - LIMIT);

    const cancel = await t.app.inject({ method: 'POST', url: `/api/tasks/${limited}/cancel`, headers: t.auth, payload: {} });
    expect(cancel.statusCode, cancel.body).toBe(200);
    await waitForTask(t.app, t.auth, limited, allFinal, 15_000);
  }, 120_000);
});
