// Waiting on devices costs no worker slots: while 10,000 devices take ~30 s each to upgrade, their
// jobs are parked (delayed) and the worker's active job count stays near zero.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { Fleet, fleetDeviceIds } from '../../tools/fleet.ts';
import { allFinal, createFirmware, createTask, registerDevices, taskStats, waitForTask } from '../helpers/rollout.ts';

const PRODUCT = 'meter';
const COUNT = 10_000;

describe('a slow fleet', () => {
  let broker: TestBroker;
  let t: TestApp;
  let fleet: Fleet;

  beforeAll(async () => {
    broker = await startBroker();
    t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url, WORKER_CONCURRENCY: '50' });
  });

  afterAll(async () => {
    await fleet?.stop();
    await t?.close();
    await broker?.stop();
  });

  it('holds no worker slot while 10,000 devices upgrade for ~30 s each', async () => {
    const ids = fleetDeviceIds(PRODUCT, COUNT);
    await registerDevices(t.app, t.auth, PRODUCT, ids);
    fleet = new Fleet({ mqttUrl: broker.url, productId: PRODUCT, deviceIds: ids, progressSteps: 3, stepMs: 10_000, reportOnStart: false, ack: false });
    await fleet.start();
    const firmwareId = await createFirmware(t.app, t.auth, PRODUCT);
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 120 });
    const started = Date.now();
    await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: true } });

    // once every device has its message, sample the queue until the first device finishes
    await waitForTask(t.app, t.auth, taskId, (task) => task.stats.processing === COUNT, 60_000);
    const samples: Array<{ active: number; delayed: number }> = [];
    while ((await taskStats(t.app, t.auth, taskId)).stats.success === 0 && Date.now() - started < 28_000) {
      const counts = await t.otter.queue.getJobCounts('active', 'delayed');
      samples.push({ active: counts.active ?? 0, delayed: counts.delayed ?? 0 });
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    console.log(`queue while devices upgrade: ${samples.length} samples, max active ${Math.max(...samples.map((s) => s.active))}, delayed ${samples.at(-1)?.delayed}`);
    expect(samples.length).toBeGreaterThan(5);
    expect(Math.max(...samples.map((s) => s.active))).toBeLessThanOrEqual(5);
    expect(Math.min(...samples.map((s) => s.delayed))).toBeGreaterThan(COUNT * 0.95);

    const done = await waitForTask(t.app, t.auth, taskId, allFinal, 90_000);
    expect(done.stats.success).toBe(COUNT);
    expect(Date.now() - started).toBeGreaterThanOrEqual(29_000);
  }, 180_000);
});
