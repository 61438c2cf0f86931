// bull-board shows each device's upgrade job as the device moves: parked with its progress while
// it upgrades, completed after success, failed with the reason after a failure; and only with the key.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { Fleet } from '../../tools/fleet.ts';
import { createFirmware, createTask, registerDevices, waitForTask, allFinal } from '../helpers/rollout.ts';

const PRODUCT = 'lamp';

interface BoardJob {
  id: string;
  name: string;
  progress: number;
  failedReason?: string;
  returnValue?: unknown;
}

describe('bull-board', () => {
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

  async function jobs(status: string): Promise<BoardJob[]> {
    const response = await t.app.inject({
      url: `/admin/queues/api/queues?activeQueue=upgrades&status=${status}&page=1&jobsPerPage=50`,
      headers: t.auth,
    });
    expect(response.statusCode).toBe(200);
    const queue = response.json().queues.find((q: { name: string }) => q.name === 'upgrades');
    return queue.jobs as BoardJob[];
  }

  async function eventually<T>(probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await probe();
      if (value !== undefined) return value;
      if (Date.now() > deadline) throw new Error('condition not reached in time');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  it('answers 401 without the key, and serves the board with it (Basic, key as password)', async () => {
    expect((await t.app.inject({ url: '/admin/queues' })).statusCode).toBe(401);
    expect((await t.app.inject({ url: '/admin/queues/api/queues' })).statusCode).toBe(401);
    const basic = `Basic ${Buffer.from(`operator:${t.config.apiKeys[0]}`).toString('base64')}`;
    const page = await t.app.inject({ url: '/admin/queues', headers: { authorization: basic } });
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain('<title>Otter upgrades</title>');
  });

  it("shows a device's job with its progress, then completed; a failing device's job failed with the reason", async () => {
    const ids = ['lamp-ok', 'lamp-bad'];
    await registerDevices(t.app, t.auth, PRODUCT, ids);
    // fates set by hand: one device succeeds, the other fails half way
    fleet = new Fleet({ mqttUrl: broker.url, productId: PRODUCT, deviceIds: ids, progressSteps: 3, stepMs: 1_500, reportOnStart: false, seed: 'board' });
    fleet.devices.get('lamp-bad')!.fate = 'fail';
    fleet.devices.get('lamp-ok')!.fate = 'success';
    await fleet.start();
    const firmwareId = await createFirmware(t.app, t.auth, PRODUCT);
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 60, retry: { maxAttempts: 1, backoffSeconds: 1, on: ['timeout'] } });
    await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { deviceIds: ids, push: true } });

    const parked = await eventually(async () => (await jobs('delayed')).find((job) => job.name === 'lamp-ok' && job.progress === 33));
    expect(parked.id).toMatch(/^rec-\d+-1$/);

    await waitForTask(t.app, t.auth, taskId, allFinal, 30_000);
    // the job's progress follows the device's within a quarter of a second
    const completed = await eventually(async () => (await jobs('completed')).find((job) => job.name === 'lamp-ok' && job.progress === 100));
    expect(completed.progress).toBe(100);
    expect(completed.returnValue).toMatchObject({ state: 'success', attempts: 1 });
    const failed = await eventually(async () => (await jobs('failed')).find((job) => job.name === 'lamp-bad'));
    expect(failed.failedReason).toBe('simulated failure: flash write error');
  });
});
