// Controlling a rollout across worker processes: an in-process API and two ROLE=worker processes
// share one database, Redis prefix and broker. startAt holds every send until its time; pause stops
// new sends within a second and resume finishes the rollout; cancel leaves no job behind and its
// devices receive nothing more; retry sends failed records again. A spy MQTT client sees every
// upgrade message the devices see.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import mqtt, { type MqttClient } from 'mqtt';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { spawnWorkers, type OtterProcess } from '../helpers/processes.ts';
import { upgradeJobId } from '../../core/jobs.ts';
import { Fleet, fleetDeviceIds, type FleetOptions } from '../../tools/fleet.ts';
import { allFinal, createFirmware, createTask, registerDevices, taskStats, waitForTask } from '../helpers/rollout.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface TimelineEvent {
  recordId: number;
  type: string;
  at: number;
}

async function taskEvents(t: TestApp, taskId: string, type?: string): Promise<TimelineEvent[]> {
  const typeFilter = type ? sql`AND e.type = ${type}` : sql``;
  const { rows } = await sql<{ record_id: number; type: string; at: Date }>`
    SELECT e.record_id, e.type, e.at FROM record_events e JOIN upgrade_records r ON r.id = e.record_id
    WHERE r.task_id = ${taskId} ${typeFilter} ORDER BY e.at, e.id`.execute(t.database.db);
  return rows.map((row) => ({ recordId: Number(row.record_id), type: row.type, at: row.at.getTime() }));
}

async function taskRecords(t: TestApp, taskId: string) {
  const { rows } = await sql<{ id: number; device_id: string; state: string; attempts: number; dispatches: number }>`
    SELECT id, device_id, state, attempts, dispatches FROM upgrade_records WHERE task_id = ${taskId} ORDER BY id`.execute(t.database.db);
  return rows.map((row) => ({ ...row, id: Number(row.id) }));
}

const LATER_COUNT = 30;

describe('rollout control with two worker processes', () => {
  let broker: TestBroker;
  let t: TestApp;
  const workers: OtterProcess[] = [];
  const fleets: Fleet[] = [];
  let spy: MqttClient | undefined;
  /** Every UpgradeFirmwareMessage the broker delivered, as the devices got them. */
  const received: Array<{ productId: string; deviceId: string; at: number }> = [];
  const receivedBy = (productId: string) => received.filter((r) => r.productId === productId);

  beforeAll(async () => {
    broker = await startBroker();
    t = await buildTestApp({ ROLE: 'api', MQTT_URL: broker.url });
    workers.push(...(await spawnWorkers(t.config, 2)));
    spy = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: `spy-${Date.now()}`, clean: true, reconnectPeriod: 0 });
    spy.on('message', (topic) => {
      const [, productId = '', deviceId = ''] = topic.split('/');
      received.push({ productId, deviceId, at: Date.now() });
    });
    await spy.subscribeAsync('/+/+/firmware/upgrade', { qos: 1 });

    // a task to start a minute from now, watched in the background while the other tests run
    const fleet = await startFleet('later', LATER_COUNT, { progressSteps: 3, stepMs: 20 });
    const firmwareId = await createFirmware(t.app, t.auth, 'later');
    const startAt = Date.now() + 60_000;
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 120, startAt: new Date(startAt).toISOString() });
    await action(taskId, 'release', { allDevices: true, push: true });
    later = { taskId, startAt, fleet, watched: watchUntil(taskId, startAt - 500, fleet) };
    later.watched.catch(() => {}); // awaited (and its failure reported) by the startAt test
  }, 90_000);

  afterAll(async () => {
    closing = true;
    await later?.watched.catch(() => {});
    await Promise.all(workers.map((worker) => worker.stop()));
    for (const fleet of fleets) await fleet.stop();
    await spy?.endAsync();
    await t?.close();
    await broker?.stop();
  });

  interface LaterCheck {
    at: number;
    state: string;
    waiting: number;
    processing: number;
    sent: number;
    received: number;
  }
  let closing = false;
  let later: { taskId: string; startAt: number; fleet: Fleet; watched: Promise<LaterCheck[]> };

  /** Samples a task, its sent events and its devices about every second until `until`. */
  async function watchUntil(taskId: string, until: number, fleet: Fleet): Promise<LaterCheck[]> {
    const checks: LaterCheck[] = [];
    while (Date.now() < until && !closing) {
      const at = Date.now();
      const task = (await t.app.inject({ method: 'GET', url: `/api/tasks/${taskId}`, headers: t.auth })).json();
      const sent = (await taskEvents(t, taskId, 'sent')).length;
      checks.push({ at, state: task.state, waiting: task.stats.waiting, processing: task.stats.processing, sent, received: fleet.stats.upgradesReceived });
      await sleep(Math.min(1_000, Math.max(0, until - Date.now())));
    }
    return checks;
  }

  async function startFleet(productId: string, count: number, options: Partial<FleetOptions> = {}): Promise<Fleet> {
    const ids = fleetDeviceIds(productId, count);
    await registerDevices(t.app, t.auth, productId, ids);
    const fleet = new Fleet({ mqttUrl: broker.url, productId, deviceIds: ids, reportOnStart: false, seed: productId, ...options });
    fleets.push(fleet);
    await fleet.start();
    return fleet;
  }

  async function action(taskId: string, name: string, payload: object = {}) {
    const response = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/${name}`, headers: t.auth, payload });
    expect(response.statusCode, response.body).toBe(200);
    return response.json();
  }

  async function waitForSent(taskId: string, atLeast: number, timeoutMs = 30_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const sent = (await taskEvents(t, taskId, 'sent')).length;
      if (sent >= atLeast) return sent;
      if (Date.now() > deadline) throw new Error(`only ${sent} sent in ${timeoutMs} ms, waiting for ${atLeast}`);
      await sleep(50);
    }
  }

  it('pause stops new sends within a second, in-flight ones finish; resume completes the rollout', async () => {
    const COUNT = 60;
    const MAX_IN_FLIGHT = 5;
    const fleet = await startFleet('pause', COUNT, { progressSteps: 3, stepMs: 300 });
    const firmwareId = await createFirmware(t.app, t.auth, 'pause');
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 120, rollout: { maxInFlight: MAX_IN_FLIGHT } });
    await action(taskId, 'release', { allDevices: true, push: true });

    await waitForSent(taskId, 15);
    const paused = await action(taskId, 'pause');
    const pausedAt = Date.now();
    expect(paused.state).toBe('paused');
    const sentAtPause = (await taskEvents(t, taskId, 'sent')).length;
    await sleep(1_000);
    const sentAfter1s = (await taskEvents(t, taskId, 'sent')).length;
    const receivedAfter1s = fleet.stats.upgradesReceived;
    // the in-flight ones finish; the task stays paused with records waiting
    const settled = await waitForTask(t.app, t.auth, taskId, (task) => task.stats.processing === 0, 10_000);
    await sleep(1_500);
    const sentLater = await taskEvents(t, taskId, 'sent');
    const task = await taskStats(t.app, t.auth, taskId);
    console.log(
      `pause: ${sentAtPause} sent at the pause, ${sentAfter1s} a second later, ${sentLater.length} after the in-flight ones finished; ` +
        `last send +${sentLater.at(-1)!.at - pausedAt} ms after the pause; ${JSON.stringify(task.stats)}`,
    );
    expect(sentAfter1s - sentAtPause).toBeLessThanOrEqual(MAX_IN_FLIGHT);
    expect(sentLater).toHaveLength(sentAfter1s);
    expect(fleet.stats.upgradesReceived).toBe(receivedAfter1s);
    expect(sentLater.at(-1)!.at).toBeLessThanOrEqual(pausedAt + 1_000);
    expect(receivedBy('pause').filter((r) => r.at > pausedAt + 1_000)).toHaveLength(0);
    expect(settled.state).toBe('paused');
    expect(task.state).toBe('paused');
    expect(task.stats).toMatchObject({ total: COUNT, processing: 0, success: sentLater.length, waiting: COUNT - sentLater.length, canceled: 0 });
    expect(task.stats.waiting).toBeGreaterThan(20);

    const resumed = await action(taskId, 'resume');
    expect(resumed.state).toBe('running');
    const done = await waitForTask(t.app, t.auth, taskId, (x) => x.state === 'completed', 60_000);
    expect(done.stats).toMatchObject({ total: COUNT, success: COUNT, failed: 0, canceled: 0 });
    expect(await taskEvents(t, taskId, 'sent')).toHaveLength(COUNT);
    expect(new Set(receivedBy('pause').map((r) => r.deviceId)).size).toBe(COUNT);
    expect(fleet.stats.upgradesReceived).toBe(COUNT);
  }, 120_000);

  it('cancel (processing included) leaves no job behind and its devices receive nothing afterwards', async () => {
    const COUNT = 60;
    const fleet = await startFleet('cancel', COUNT, { progressSteps: 3, stepMs: 300 });
    const firmwareId = await createFirmware(t.app, t.auth, 'cancel');
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 120, rollout: { maxInFlight: 8 } });
    await action(taskId, 'release', { allDevices: true, push: true });

    // right after a send, that device is still upgrading (~0.9 s): the cancel catches it in flight
    await waitForSent(taskId, 20);
    const canceledReply = await action(taskId, 'cancel', { includeProcessing: true });
    const canceledAt = Date.now();
    expect(canceledReply.task.state).toBe('canceled');
    expect(canceledReply.canceled).toBeGreaterThan(COUNT / 2);
    expect(canceledReply.canceled).toBeLessThanOrEqual(COUNT - 12);
    const afterCancel = await waitForTask(t.app, t.auth, taskId, allFinal, 10_000);
    expect(afterCancel.state).toBe('canceled');
    expect(afterCancel.stats.canceled).toBe(canceledReply.canceled);
    expect(afterCancel.stats.success + afterCancel.stats.canceled).toBe(COUNT);

    // no job of a canceled record is left in Redis (a job running at that moment drops itself)
    const records = await taskRecords(t, taskId);
    const canceled = records.filter((r) => r.state === 'canceled');
    expect(canceled).toHaveLength(canceledReply.canceled);
    const wasDispatched = canceled.filter((r) => r.dispatches > 0);
    expect(canceled.filter((r) => r.attempts > 0).length).toBeGreaterThan(0);
    const PENDING = ['waiting', 'active', 'delayed', 'prioritized', 'waiting-children'] as const;
    const deadline = Date.now() + 5_000;
    let leftBehind: string[] = [];
    let pendingOfTask: string[] = [];
    let counts: Record<string, number>;
    do {
      if (leftBehind.length + pendingOfTask.length > 0) await sleep(200);
      leftBehind = [];
      for (const record of canceled) {
        const jobId = upgradeJobId(record.id, record.dispatches);
        const job = await t.otter.queue.shardOf(jobId).getJob(jobId);
        if (job) leftBehind.push(`${job.id} (${await job.getState()})`);
      }
      pendingOfTask = (await Promise.all(t.otter.queue.shards.map((shard) => shard.getJobs([...PENDING])))).flat().filter((job) => job.data.taskId === taskId).map((job) => job.id!);
      counts = await t.otter.queue.getJobCounts(...PENDING);
    } while (leftBehind.length + pendingOfTask.length > 0 && Date.now() < deadline);
    expect(leftBehind).toEqual([]);
    expect(pendingOfTask).toEqual([]);
    // nothing else is pending either, as long as the startAt task (the only other one) has not started
    if (Date.now() < later.startAt - 1_000) expect(counts).toEqual({ waiting: 0, active: 0, delayed: 0, prioritized: 0, 'waiting-children': 0 });

    // the canceled devices receive nothing more; the in-flight ones that report on change nothing
    await sleep(2_000);
    const canceledDevices = new Set(canceled.map((r) => r.device_id));
    const neverSent = new Set(canceled.filter((r) => r.attempts === 0).map((r) => r.device_id));
    const got = receivedBy('cancel');
    console.log(
      `cancel: ${canceled.length} canceled (${wasDispatched.length} had been queued, ${canceled.length - neverSent.size} sent), ` +
        `${afterCancel.stats.success} succeeded; queue ${JSON.stringify(counts)}; devices received ${got.length}`,
    );
    expect(got.filter((r) => canceledDevices.has(r.deviceId) && r.at > canceledAt + 500)).toEqual([]);
    expect(got.filter((r) => neverSent.has(r.deviceId))).toEqual([]);
    expect(fleet.stats.upgradesReceived).toBe(COUNT - neverSent.size);
    const events = await taskEvents(t, taskId);
    for (const record of canceled) {
      const own = events.filter((e) => e.recordId === record.id);
      const cancelEvent = own.find((e) => e.type === 'canceled')!;
      expect(own.filter((e) => e.type === 'sent' && e.at > cancelEvent.at)).toEqual([]);
    }
    expect((await taskStats(t.app, t.auth, taskId)).stats).toEqual(afterCancel.stats);
  }, 120_000);

  it('cancel amid a busy rollout answers 200 and leaves every record final', async () => {
    // hundreds of devices reporting progress every 30 ms while the task is canceled: the cancel
    // and the batches applying those reports lock the same rows, and must not deadlock
    const COUNT = 300;
    for (let round = 0; round < 4; round += 1) {
      const productId = `busy${round}`;
      // ~2.4 s per device: long enough that a busy machine still cancels amid it, not after it
      await startFleet(productId, COUNT, { progressSteps: 80, stepMs: 30 });
      const firmwareId = await createFirmware(t.app, t.auth, productId);
      const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 120 });
      await action(taskId, 'release', { allDevices: true, push: true });
      await waitForTask(t.app, t.auth, taskId, (task) => task.stats.processing >= COUNT / 2 || task.state === 'completed', 20_000);
      await sleep(100 * round);
      const reply = await action(taskId, 'cancel', { includeProcessing: true });
      expect(reply.task.state).toBe('canceled');
      // every record in flight is canceled, including one whose progress report was written while
      // the cancel waited for its lock
      expect(reply.task.stats).toMatchObject({ waiting: 0, processing: 0 });
      const done = await waitForTask(t.app, t.auth, taskId, allFinal, 10_000);
      expect(done.stats.success + done.stats.canceled).toBe(COUNT);
      expect(done.stats.canceled).toBe(reply.canceled);
      expect(reply.canceled).toBeGreaterThan(0);
    }
  }, 120_000);

  it('retry sends failed records again, and they can succeed', async () => {
    const COUNT = 40;
    const fleet = await startFleet('retry', COUNT, { failRate: 0.3, progressSteps: 3, stepMs: 20 });
    const failing = [...fleet.devices.values()].filter((d) => d.fate === 'fail').map((d) => d.id);
    expect(failing.length).toBeGreaterThan(3);
    const firmwareId = await createFirmware(t.app, t.auth, 'retry');
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 60, retry: { maxAttempts: 1, backoffSeconds: 1, on: ['timeout'] } });
    await action(taskId, 'release', { allDevices: true, push: true });
    const first = await waitForTask(t.app, t.auth, taskId, (task) => task.state === 'completed', 30_000);
    expect(first.stats).toMatchObject({ total: COUNT, success: COUNT - failing.length, failed: failing.length });

    // the failing devices are fixed, then their records are retried
    for (const id of failing) fleet.devices.get(id)!.fate = 'success';
    const retried = await action(taskId, 'retry', {});
    expect(retried.retried).toBe(failing.length);
    expect(retried.task.state).toBe('running');
    const done = await waitForTask(t.app, t.auth, taskId, (task) => task.state === 'completed', 30_000);
    expect(done.stats).toMatchObject({ total: COUNT, success: COUNT, failed: 0 });

    const got = receivedBy('retry');
    const perDevice = new Map<string, number>();
    for (const r of got) perDevice.set(r.deviceId, (perDevice.get(r.deviceId) ?? 0) + 1);
    for (const id of fleet.devices.keys()) expect(perDevice.get(id), id).toBe(failing.includes(id) ? 2 : 1);
    expect(fleet.stats.upgradesReceived).toBe(COUNT + failing.length);
    expect([...fleet.devices.values()].every((d) => d.version === '2.0.0')).toBe(true);

    const records = await taskRecords(t, taskId);
    const events = await taskEvents(t, taskId);
    for (const record of records.filter((r) => failing.includes(r.device_id))) {
      expect(record).toMatchObject({ state: 'success', attempts: 1 });
      // (a late or repeated message from the device, handled by the other worker, may add `ignored`)
      const types = events.filter((e) => e.recordId === record.id && e.type !== 'ignored').map((e) => e.type);
      const second = types.slice(types.indexOf('failed'));
      expect(second.slice(0, 4)).toEqual(['failed', 'retry', 'queued', 'sent']);
      expect(second.at(-1)).toBe('success');
      expect(second.filter((type) => type === 'sent')).toHaveLength(1);
    }
    console.log(`retry: ${failing.length} of ${COUNT} failed, retried and succeeded; devices received ${got.length} upgrade messages`);
  }, 120_000);
  it('startAt: nothing is sent before it, everything after', async () => {
    // scheduled in beforeAll a minute ahead; the tests above ran while it waited
    const { taskId, startAt, fleet } = later;
    const checks = await later.watched;
    const dirty = checks.filter((c) => c.state !== 'running' || c.waiting !== LATER_COUNT || c.processing !== 0 || c.sent !== 0 || c.received !== 0);
    expect(dirty).toEqual([]);
    // checked all along, every second or so, up to half a second before startAt
    expect(checks.length).toBeGreaterThan(30);
    expect(checks[0]!.at).toBeLessThan(startAt - 50_000);
    expect(checks.at(-1)!.at).toBeGreaterThan(startAt - 2_000);

    const done = await waitForTask(t.app, t.auth, taskId, (task) => task.state === 'completed', startAt - Date.now() + 30_000);
    const sent = await taskEvents(t, taskId, 'sent');
    const got = receivedBy('later');
    console.log(
      `startAt: ${checks.length} checks before it found nothing sent; first send +${sent[0]!.at - startAt} ms after startAt, ` +
        `last +${sent.at(-1)!.at - startAt} ms; completed +${Date.now() - startAt} ms`,
    );
    expect(done.stats).toMatchObject({ total: LATER_COUNT, success: LATER_COUNT });
    expect(sent).toHaveLength(LATER_COUNT);
    expect(sent[0]!.at).toBeGreaterThanOrEqual(startAt);
    expect(sent.at(-1)!.at).toBeLessThan(startAt + 5_000);
    expect(got).toHaveLength(LATER_COUNT);
    expect(Math.min(...got.map((r) => r.at))).toBeGreaterThanOrEqual(startAt);
    expect(fleet.stats.upgradesReceived).toBe(LATER_COUNT);
  }, 120_000);
});
