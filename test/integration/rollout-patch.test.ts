// PATCH of rollout limits takes effect on what is dispatched next: a task held to 5 in flight
// opens up to 20 once patched, and never beyond.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { Fleet, fleetDeviceIds } from '../../tools/fleet.ts';
import { allFinal, createFirmware, createTask, registerDevices, taskStats, waitForTask } from '../helpers/rollout.ts';

describe('PATCH /api/tasks/{id} rollout', () => {
  let broker: TestBroker;
  let t: TestApp;
  let fleet: Fleet;

  beforeAll(async () => {
    broker = await startBroker();
    t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url });
  });

  afterAll(async () => {
    await fleet?.stop();
    await t?.close();
    await broker?.stop();
  });

  it('raises maxInFlight for what is dispatched next', async () => {
    const ids = fleetDeviceIds('dimmer', 120);
    await registerDevices(t.app, t.auth, 'dimmer', ids);
    fleet = new Fleet({ mqttUrl: broker.url, productId: 'dimmer', deviceIds: ids, progressSteps: 3, stepMs: 300, reportOnStart: false });
    await fleet.start();
    const firmwareId = await createFirmware(t.app, t.auth, 'dimmer');
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 60, rollout: { maxInFlight: 5 } });
    await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: true } });

    const before: number[] = [];
    for (let i = 0; i < 15; i += 1) {
      before.push((await taskStats(t.app, t.auth, taskId)).stats.processing);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(Math.max(...before)).toBeLessThanOrEqual(5);
    expect(Math.max(...before)).toBeGreaterThanOrEqual(4);

    const patched = await t.app.inject({ method: 'PATCH', url: `/api/tasks/${taskId}`, headers: t.auth, payload: { rollout: { maxInFlight: 20 } } });
    expect(patched.statusCode).toBe(200);
    expect(patched.json().rollout).toEqual({ maxInFlight: 20 });

    const after: number[] = [];
    for (let i = 0; i < 20; i += 1) {
      after.push((await taskStats(t.app, t.auth, taskId)).stats.processing);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(Math.max(...after)).toBeGreaterThan(10);
    expect(Math.max(...after)).toBeLessThanOrEqual(20);
    const done = await waitForTask(t.app, t.auth, taskId, (x) => allFinal(x) && x.state === 'completed', 60_000);
    expect(done.stats.success).toBe(120);
  }, 90_000);
});
