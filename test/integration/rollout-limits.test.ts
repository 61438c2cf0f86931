// rollout.maxInFlight and abort across worker processes: an in-process API and two ROLE=worker
// processes share one database, Redis prefix and broker. The task's processing count never passes
// maxInFlight (sampled from the API and computed from the records' timelines), and a task past its
// failure threshold is aborted having sent no more than the threshold plus what was in flight.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { spawnWorkers, type OtterProcess } from '../helpers/processes.ts';
import { TEST_API_KEY } from '../helpers/env.ts';
import { Fleet, fleetDeviceIds, type FleetOptions } from '../../tools/fleet.ts';
import { createFirmware, createTask, registerDevices, taskStats, waitForTask } from '../helpers/rollout.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface TimelineEvent {
  recordId: number;
  type: string;
  at: number;
}

/** Every event of a task's records, in the order they were written. */
async function taskEvents(t: TestApp, taskId: string): Promise<TimelineEvent[]> {
  const { rows } = await sql<{ record_id: number; type: string; at: Date }>`
    SELECT e.record_id, e.type, e.at FROM record_events e JOIN upgrade_records r ON r.id = e.record_id
    WHERE r.task_id = ${taskId} ORDER BY e.at, e.id`.execute(t.database.db);
  return rows.map((row) => ({ recordId: Number(row.record_id), type: row.type, at: row.at.getTime() }));
}

const FINAL = new Set(['success', 'failed', 'canceled']);

/**
 * The most records in flight at once by the timeline: each sent record is in flight from its
 * `sent` event to its final event (or still now). At equal times an end counts before a start.
 */
function maxInFlightOf(events: TimelineEvent[]): number {
  const sentAt = new Map<number, number>();
  const points: Array<{ at: number; delta: number }> = [];
  for (const event of events) {
    if (event.type === 'sent') {
      sentAt.set(event.recordId, event.at);
      points.push({ at: event.at, delta: +1 });
    } else if (FINAL.has(event.type) && sentAt.has(event.recordId)) {
      sentAt.delete(event.recordId);
      points.push({ at: event.at, delta: -1 });
    }
  }
  points.sort((a, b) => a.at - b.at || a.delta - b.delta);
  let current = 0;
  let max = 0;
  for (const point of points) {
    current += point.delta;
    max = Math.max(max, current);
  }
  return max;
}

async function upgradesSentBy(worker: OtterProcess): Promise<number> {
  const response = await fetch(`${worker.baseUrl}/metrics`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
  expect(response.status).toBe(200);
  const line = (await response.text())
    .split('\n')
    .find((l) => l.startsWith('otter_messages_sent_total{') && l.includes('type="UPGRADE_FIRMWARE"') && l.includes('result="ok"'));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

describe('rollout limits with two worker processes', () => {
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

  async function startFleet(productId: string, count: number, options: Partial<FleetOptions>): Promise<Fleet> {
    const ids = fleetDeviceIds(productId, count);
    await registerDevices(t.app, t.auth, productId, ids);
    const fleet = new Fleet({ mqttUrl: broker.url, productId, deviceIds: ids, reportOnStart: false, seed: productId, ...options });
    fleets.push(fleet);
    await fleet.start();
    return fleet;
  }

  async function releaseAndPush(taskId: string, expected: number): Promise<void> {
    const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: true } });
    expect(release.statusCode, release.body).toBe(200);
    expect(release.json().added).toBe(expected);
  }

  it('never has more than maxInFlight records processing, by the API and by the timeline', async () => {
    const COUNT = 80;
    const MAX_IN_FLIGHT = 10;
    // ~1.2 s per device: at most 10 at once, the rollout takes at least 80 / 10 × 1.2 s
    await startFleet('inflight', COUNT, { progressSteps: 3, stepMs: 400 });
    const firmwareId = await createFirmware(t.app, t.auth, 'inflight');
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 120, rollout: { maxInFlight: MAX_IN_FLIGHT } });
    const baseline = await Promise.all(workers.map(upgradesSentBy));
    const started = Date.now();
    await releaseAndPush(taskId, COUNT);

    const samples: number[] = [];
    const deadline = Date.now() + 60_000;
    for (;;) {
      const task = await taskStats(t.app, t.auth, taskId);
      samples.push(task.stats.processing);
      if (task.state === 'completed') {
        expect(task.stats).toMatchObject({ total: COUNT, success: COUNT, waiting: 0, processing: 0 });
        break;
      }
      if (Date.now() > deadline) throw new Error(`rollout did not complete in 60 s: ${JSON.stringify(task.stats)}`);
      await sleep(25);
    }
    const elapsed = Date.now() - started;
    const events = await taskEvents(t, taskId);
    const timelineMax = maxInFlightOf(events);
    const perWorker = (await Promise.all(workers.map(upgradesSentBy))).map((n, i) => n - baseline[i]!);
    console.log(
      `maxInFlight ${MAX_IN_FLIGHT}: ${samples.length} samples, max processing ${Math.max(...samples)} (API), ` +
        `${timelineMax} (timeline); ${COUNT} devices in ${(elapsed / 1000).toFixed(1)} s; per worker ${perWorker.join(' / ')}`,
    );

    expect(Math.max(...samples)).toBeLessThanOrEqual(MAX_IN_FLIGHT);
    expect(timelineMax).toBeLessThanOrEqual(MAX_IN_FLIGHT);
    expect(samples.length).toBeGreaterThan(50);
    // the limit is used, not just respected
    expect(Math.max(...samples)).toBeGreaterThanOrEqual(MAX_IN_FLIGHT - 2);
    expect(timelineMax).toBeGreaterThanOrEqual(MAX_IN_FLIGHT - 2);
    expect(elapsed).toBeGreaterThanOrEqual(((COUNT / MAX_IN_FLIGHT) * 1_200) * 0.9);
    expect(events.filter((e) => e.type === 'sent')).toHaveLength(COUNT);
    expect(perWorker.every((n) => n > 0), `per worker: ${perWorker.join(', ')}`).toBe(true);
    expect(perWorker.reduce((a, b) => a + b, 0)).toBe(COUNT);
  }, 120_000);

  it('aborts at the failure threshold: waiting records canceled, no more sent than the threshold plus what was in flight', async () => {
    const COUNT = 100;
    const MAX_IN_FLIGHT = 10;
    const MIN_FINISHED = 20;
    const FAILURE_RATE = 0.3;
    // finished records are applied in batches, so the counters may step past minFinished by a few
    // at the moment the threshold is crossed; the bound below allows that much and no more
    const BATCH_SLACK = 3;
    const fleet = await startFleet('abort', COUNT, { failRate: 0.5, progressSteps: 3, stepMs: 200 });
    const failing = fleet.fateCount('fail');
    expect(failing).toBeGreaterThan(35);
    expect(failing).toBeLessThan(65);
    const firmwareId = await createFirmware(t.app, t.auth, 'abort');
    const taskId = await createTask(t.app, t.auth, {
      firmwareId,
      timeoutSeconds: 60,
      retry: { maxAttempts: 1, backoffSeconds: 1, on: ['timeout'] },
      rollout: { maxInFlight: MAX_IN_FLIGHT },
      abort: { failureRate: FAILURE_RATE, minFinished: MIN_FINISHED },
    });
    await releaseAndPush(taskId, COUNT);

    const aborted = await waitForTask(t.app, t.auth, taskId, (task) => task.state === 'aborted' && task.stats.processing === 0, 60_000);
    const receivedAtEnd = fleet.stats.upgradesReceived;
    // nothing more is sent afterwards
    await sleep(1_500);
    expect(fleet.stats.upgradesReceived).toBe(receivedAtEnd);

    const { stats } = await taskStats(t.app, t.auth, taskId);
    expect(stats).toEqual(aborted.stats);
    const { rows: records } = await sql<{ id: number; state: string; attempts: number }>`
      SELECT id, state, attempts FROM upgrade_records WHERE task_id = ${taskId}`.execute(t.database.db);
    const events = await taskEvents(t, taskId);
    const sentEvents = events.filter((e) => e.type === 'sent');
    const sentRecords = records.filter((r) => r.attempts >= 1);
    const finished = stats.success + stats.failed;

    // when the threshold was first met, by the timeline of final events
    const finals = events.filter((e) => e.type === 'success' || e.type === 'failed');
    let thresholdFinished: number | undefined;
    for (let i = 0; i < finals.length; i += 1) {
      // events written in one transaction share their time: count them together
      if (i + 1 < finals.length && finals[i + 1]!.at === finals[i]!.at) continue;
      const failedSoFar = finals.slice(0, i + 1).filter((e) => e.type === 'failed').length;
      if (i + 1 >= MIN_FINISHED && failedSoFar / (i + 1) >= FAILURE_RATE) {
        thresholdFinished = i + 1;
        break;
      }
    }
    const canceledEvents = events.filter((e) => e.type === 'canceled');
    const abortAt = Math.min(...canceledEvents.map((e) => e.at));
    console.log(
      `abort: ${failing}/${COUNT} devices fail; threshold met at ${thresholdFinished} finished; ` +
        `sent ${sentRecords.length} (${sentEvents.length} sent events, ${receivedAtEnd} received by devices); final ${JSON.stringify(stats)}; ` +
        `last send ${abortAt - Math.max(...sentEvents.map((e) => e.at))} ms before the abort`,
    );

    // aborted, its waiting records canceled (never sent), its in-flight ones finished
    expect(stats.waiting).toBe(0);
    expect(stats.processing).toBe(0);
    expect(stats.canceled).toBeGreaterThan(0);
    expect(stats.success + stats.failed + stats.canceled).toBe(COUNT);
    const canceled = records.filter((r) => r.state === 'canceled');
    expect(canceled).toHaveLength(stats.canceled);
    expect(canceled.every((r) => r.attempts === 0)).toBe(true);
    expect(canceledEvents).toHaveLength(stats.canceled);

    // no more sent than what finished plus maxInFlight, and about minFinished + maxInFlight at most
    expect(sentEvents).toHaveLength(sentRecords.length);
    expect(receivedAtEnd).toBe(sentRecords.length);
    expect(sentRecords.length).toBeLessThanOrEqual(finished + MAX_IN_FLIGHT);
    expect(thresholdFinished).toBeDefined();
    expect(thresholdFinished!).toBeLessThanOrEqual(MIN_FINISHED + BATCH_SLACK);
    expect(sentRecords.length).toBeLessThanOrEqual(thresholdFinished! + MAX_IN_FLIGHT);
    expect(sentRecords.length).toBeLessThanOrEqual(MIN_FINISHED + MAX_IN_FLIGHT + BATCH_SLACK);
    expect(stats.failed / finished).toBeGreaterThanOrEqual(FAILURE_RATE);

    // nothing was sent after the abort
    const { rows: cancelMessages } = await sql<{ message: string }>`
      SELECT DISTINCT e.message FROM record_events e JOIN upgrade_records r ON r.id = e.record_id
      WHERE r.task_id = ${taskId} AND e.type = 'canceled'`.execute(t.database.db);
    expect(cancelMessages.map((row) => row.message)).toEqual(['task aborted: failure rate reached its threshold']);
    expect(Math.max(...sentEvents.map((e) => e.at))).toBeLessThanOrEqual(abortAt);
  }, 120_000);
});
