// The example connector, loaded by path as CONNECTOR=…, carries a rollout to completion.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../../test/helpers/app.ts';
import { allFinal, createFirmware, createTask, registerDevices, waitForTask } from '../../test/helpers/rollout.ts';

describe('CONNECTOR=./protocols/examples/loopback-connector.ts', () => {
  let t: TestApp;

  beforeAll(async () => {
    t = await buildTestApp({ ROLE: 'all', CONNECTOR: './protocols/examples/loopback-connector.ts' });
  });

  afterAll(async () => {
    await t?.close();
  });

  it('is the connector in use, and rolls out to 50 devices', async () => {
    expect(t.otter.connector.name).toBe('loopback');
    const ids = Array.from({ length: 50 }, (_, i) => `loop-${i}`);
    await registerDevices(t.app, t.auth, 'loop', ids);
    const firmwareId = await createFirmware(t.app, t.auth, 'loop', '9.0.0', 9);
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 30 });
    await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: true } });
    const task = await waitForTask(t.app, t.auth, taskId, (x) => allFinal(x) && x.state === 'completed', 30_000);
    expect(task.stats).toMatchObject({ total: 50, success: 50, failed: 0 });

    const read = await t.app.inject({ method: 'POST', url: '/api/devices/loop-7/firmware/read', headers: t.auth, payload: { timeoutMs: 2_000 } });
    expect(read.statusCode, read.body).toBe(200);
    expect(read.json()).toEqual({ version: '9.0.0', properties: { connector: 'loopback' } });
  });
});
