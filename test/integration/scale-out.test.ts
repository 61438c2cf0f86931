// Several processes against the same services: one ROLE=api and three ROLE=worker processes carry
// a 2,000-device rollout with every device sent its message exactly once; a worker stopped with
// SIGTERM mid-rollout exits 0 within 10 s and the others finish the rollout, nothing lost or doubled.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { envFor, spawnOtter, type OtterProcess } from '../helpers/processes.ts';
import { Fleet, fleetDeviceIds } from '../../tools/fleet.ts';
import { allFinal, createFirmware, createTask, registerDevices, waitForTask } from '../helpers/rollout.ts';

describe('scale-out', () => {
  let broker: TestBroker;
  let t: TestApp;
  let workers: OtterProcess[] = [];
  let fleet: Fleet | undefined;

  beforeAll(async () => {
    broker = await startBroker();
    t = await buildTestApp({ ROLE: 'api', MQTT_URL: broker.url });
  });

  afterEach(async () => {
    await fleet?.stop();
    fleet = undefined;
    await Promise.all(workers.map((worker) => worker.stop('SIGKILL')));
    workers = [];
  });

  afterAll(async () => {
    await t?.close();
    await broker?.stop();
  });

  async function rollout(product: string, count: number, stepMs: number) {
    const ids = fleetDeviceIds(product, count);
    await registerDevices(t.app, t.auth, product, ids);
    fleet = new Fleet({ mqttUrl: broker.url, productId: product, deviceIds: ids, progressSteps: 3, stepMs, reportOnStart: false });
    await fleet.start();
    const firmwareId = await createFirmware(t.app, t.auth, product);
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 60, retry: { maxAttempts: 3, backoffSeconds: 1, on: ['timeout', 'send_error'] } });
    const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: true } });
    expect(release.json().added).toBe(count);
    return { ids, taskId };
  }

  it('one api and three workers: 2,000 devices, each sent its message exactly once', async () => {
    workers = await Promise.all([1, 2, 3].map(() => spawnOtter(envFor(t.config, { ROLE: 'worker', WORKER_CONCURRENCY: '20' }))));
    const { ids, taskId } = await rollout('hub', 2_000, 20);
    const task = await waitForTask(t.app, t.auth, taskId, (x) => allFinal(x) && x.state === 'completed', 120_000);
    expect(task.stats).toMatchObject({ total: 2_000, success: 2_000, failed: 0 });
    const counts = ids.map((id) => fleet!.devices.get(id)!.upgradesReceived);
    expect(counts.filter((n) => n !== 1)).toEqual([]);

    // every worker took a share of the sends
    const sentByWorker = await Promise.all(workers.map(async (worker) => {
      const text = await (await fetch(`${worker.baseUrl}/metrics`, { headers: t.auth })).text();
      return Number(/otter_messages_sent_total\{type="UPGRADE_FIRMWARE",result="ok"\} (\d+)/.exec(text)?.[1] ?? 0);
    }));
    expect(sentByWorker.reduce((a, b) => a + b, 0)).toBe(2_000);
    for (const sent of sentByWorker) expect(sent).toBeGreaterThan(0);
  }, 180_000);

  it('SIGTERM to a worker mid-rollout: it exits 0 within 10 s, the others finish, nothing lost or sent twice', async () => {
    workers = await Promise.all([1, 2].map(() => spawnOtter(envFor(t.config, { ROLE: 'worker', WORKER_CONCURRENCY: '20' }))));
    const { ids, taskId } = await rollout('gateway', 2_000, 300);
    await waitForTask(t.app, t.auth, taskId, (x) => x.stats.success >= 200, 60_000);

    const stopping = Date.now();
    const code = await workers[0]!.stop('SIGTERM');
    const stopSeconds = (Date.now() - stopping) / 1000;
    console.log(`worker stopped with ${code} in ${stopSeconds.toFixed(1)} s`);
    expect(code).toBe(0);
    expect(stopSeconds).toBeLessThan(10);

    const task = await waitForTask(t.app, t.auth, taskId, (x) => allFinal(x) && x.state === 'completed', 150_000);
    expect(task.stats).toMatchObject({ total: 2_000, success: 2_000, failed: 0 });
    const records = await t.database.db.selectFrom('upgrade_records').select(['device_id', 'attempts']).where('task_id', '=', taskId).execute();
    const attempts = new Map(records.map((r) => [r.device_id, r.attempts]));
    // a device is sent its message once per attempt, and never more than maxAttempts times
    for (const id of ids) {
      const received = fleet!.devices.get(id)!.upgradesReceived;
      expect(received, id).toBe(attempts.get(id));
      expect(received, id).toBeLessThanOrEqual(3);
    }
    console.log(`devices sent more than once: ${ids.filter((id) => fleet!.devices.get(id)!.upgradesReceived > 1).length}`);
  }, 240_000);
});
