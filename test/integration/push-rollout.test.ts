// A push rollout end to end over a real broker: 200 simulated devices, some failing, some silent,
// every record ends final with the right reason and a timeline that tells its story.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { Fleet, fleetDeviceIds } from '../../tools/fleet.ts';
import { allFinal, createFirmware, createTask, registerDevices, waitForTask } from '../helpers/rollout.ts';

const PRODUCT = 'thermo';
const DEVICES = fleetDeviceIds('thermo', 200);

describe('push rollout over MQTT', () => {
  let broker: TestBroker;
  let t: TestApp;
  let fleet: Fleet;

  beforeAll(async () => {
    broker = await startBroker();
    t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url, WORKER_CONCURRENCY: '50' });
    fleet = new Fleet({ mqttUrl: broker.url, productId: PRODUCT, deviceIds: DEVICES, failRate: 0.02, silentRate: 0.01, progressSteps: 3, stepMs: 20, seed: 'push-rollout', reportOnStart: false });
    await fleet.start();
  });

  afterAll(async () => {
    await fleet?.stop();
    await t?.close();
    await broker?.stop();
  });

  it('ends with every record final: successes, device failures and timeouts after maxAttempts', async () => {
    await registerDevices(t.app, t.auth, PRODUCT, DEVICES);
    const firmwareId = await createFirmware(t.app, t.auth, PRODUCT);
    const taskId = await createTask(t.app, t.auth, {
      firmwareId,
      timeoutSeconds: 3,
      retry: { maxAttempts: 2, backoffSeconds: 1, on: ['timeout', 'send_error'] },
    });
    const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: true } });
    expect(release.statusCode, release.body).toBe(200);
    expect(release.json().added).toBe(200);

    const task = await waitForTask(t.app, t.auth, taskId, (x) => allFinal(x) && x.state === 'completed', 60_000);
    const failing = fleet.fateCount('fail');
    const silent = fleet.fateCount('silent');
    expect(failing + silent).toBeGreaterThan(0);
    expect(task.stats).toEqual({ total: 200, waiting: 0, processing: 0, success: 200 - failing - silent, failed: failing + silent, canceled: 0 });

    const records = (await t.app.inject({ method: 'GET', url: `/api/tasks/${taskId}/records?pageSize=500`, headers: t.auth })).json().items as Array<Record<string, unknown>>;
    expect(records).toHaveLength(200);
    for (const record of records) {
      const fate = fleet.devices.get(record.deviceId as string)!.fate;
      if (fate === 'success') {
        expect(record).toMatchObject({ state: 'success', progress: 100, attempts: 1, errorReason: null });
      } else if (fate === 'fail') {
        expect(record).toMatchObject({ state: 'failed', attempts: 1, errorReason: 'simulated failure: flash write error' });
      } else {
        expect(record).toMatchObject({ state: 'failed', attempts: 2, errorReason: 'timeout' });
      }
    }

    // a success: the device's version is the target, and its timeline tells the story in order
    const ok = records.find((r) => r.state === 'success')!;
    const device = (await t.app.inject({ method: 'GET', url: `/api/devices/${ok.deviceId}`, headers: t.auth })).json();
    expect(device.firmwareVersion).toBe('2.0.0');
    expect(device.activeRecord).toBeNull();
    const detail = (await t.app.inject({ method: 'GET', url: `/api/records/${ok.id}`, headers: t.auth })).json();
    expect(detail.events.map((e: { type: string }) => e.type)).toEqual(['released', 'queued', 'sent', 'acknowledged', 'progress', 'progress', 'success']);
    expect(detail.events.filter((e: { type: string }) => e.type === 'progress').map((e: { progress: number }) => e.progress)).toEqual([33, 66]);

    // a silent device: sent twice, timed out twice, then failed
    const quiet = records.find((r) => fleet.devices.get(r.deviceId as string)!.fate === 'silent')!;
    const quietEvents = (await t.app.inject({ method: 'GET', url: `/api/records/${quiet.id}`, headers: t.auth })).json().events;
    expect(quietEvents.map((e: { type: string }) => e.type)).toEqual(['released', 'queued', 'sent', 'timeout', 'retry', 'sent', 'timeout', 'failed']);
    expect(quietEvents.filter((e: { type: string }) => e.type === 'sent').map((e: { attempt: number }) => e.attempt)).toEqual([1, 2]);
    expect(fleet.stats.upgradesReceived).toBe(200 + silent);
  });
});
