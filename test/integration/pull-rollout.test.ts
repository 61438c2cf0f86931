// A pull-mode rollout end to end: 100 simulated devices ask for the upgrade, download the uploaded
// file from its signed URL, check its sha256 against `sign`, and report; a device with nothing to
// upgrade is told not_found.
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { Fleet, fleetDeviceIds } from '../../tools/fleet.ts';
import { verifyDownload } from '../../tools/download.ts';
import { allFinal, createTask, registerDevices, waitForTask } from '../helpers/rollout.ts';

const PRODUCT = 'valve';

describe('pull rollout', () => {
  let broker: TestBroker;
  let t: TestApp;
  let fleet: Fleet;
  let baseUrl: string;

  beforeAll(async () => {
    broker = await startBroker();
    // the download URLs handed to devices must reach this app: listen on a free port first
    t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url, PORT: '0', HOST: '127.0.0.1' }, { listen: true });
    const address = t.app.server.address() as { port: number };
    baseUrl = `http://127.0.0.1:${address.port}`;
    t.config.publicBaseUrl = baseUrl;
  });

  afterAll(async () => {
    await fleet?.stop();
    await t?.close();
    await broker?.stop();
  });

  it('100 devices pull, download, verify the sign and succeed', async () => {
    const ids = fleetDeviceIds(PRODUCT, 100);
    await registerDevices(t.app, t.auth, PRODUCT, ids);
    const firmware = (await t.app.inject({ method: 'POST', url: '/api/firmware', headers: t.auth, payload: { productId: PRODUCT, name: 'valve fw', version: '3.1.0', versionOrder: 31 } })).json();
    const bytes = randomBytes(64 * 1024);
    const upload = await t.app.inject({ method: 'PUT', url: `/api/firmware/${firmware.id}/file`, headers: { ...t.auth, 'content-type': 'application/octet-stream' }, payload: bytes });
    expect(upload.statusCode, upload.body).toBe(200);
    expect(upload.json().sign).toBe(createHash('sha256').update(bytes).digest('hex'));

    const taskId = await createTask(t.app, t.auth, { firmwareId: firmware.id, mode: 'pull', timeoutSeconds: 30 });
    const push = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/push`, headers: t.auth });
    expect(push.statusCode).toBe(409);
    expect(push.json().code).toBe('task_mode_pull');
    const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true } });
    expect(release.json().added).toBe(100);

    let verified = 0;
    fleet = new Fleet({
      mqttUrl: broker.url,
      productId: PRODUCT,
      deviceIds: ids,
      pull: true,
      progressSteps: 2,
      stepMs: 10,
      reportOnStart: false,
      verifyDownload: async (url, sign, method) => {
        const ok = await verifyDownload(url, sign, method);
        if (ok) verified += 1;
        return ok;
      },
    });
    await fleet.start();

    const task = await waitForTask(t.app, t.auth, taskId, (x) => allFinal(x) && x.state === 'completed', 60_000);
    expect(task.stats).toMatchObject({ total: 100, success: 100, failed: 0 });
    expect(verified).toBe(100);
    expect(fleet.stats.downloadFailures).toBe(0);

    const record = (await t.app.inject({ url: `/api/tasks/${taskId}/records?pageSize=1`, headers: t.auth })).json().items[0];
    const events = (await t.app.inject({ url: `/api/records/${record.id}`, headers: t.auth })).json().events;
    // the download is noted in the background: usually before the first progress, not always
    const types = events.map((e: { type: string }) => e.type);
    expect(types.filter((type: string) => type !== 'downloaded')).toEqual(['released', 'pulled', 'progress', 'success']);
    expect(events.filter((e: { type: string }) => e.type === 'downloaded')).toMatchObject([{ attempt: 1 }]);
  });

  it('answers success: false, code not_found to a device with no active upgrade', async () => {
    await registerDevices(t.app, t.auth, PRODUCT, ['valve-idle']);
    const client = await mqtt.connectAsync(broker.url, { protocolVersion: 5 });
    try {
      const reply = new Promise<Record<string, unknown>>((resolve) => {
        client.on('message', (_topic, payload) => resolve(JSON.parse(payload.toString())));
      });
      await client.subscribeAsync(`/${PRODUCT}/valve-idle/firmware/pull/reply`, { qos: 1 });
      await client.publishAsync(`/${PRODUCT}/valve-idle/firmware/pull`, JSON.stringify({ messageId: 'ask-1', timestamp: Date.now() }), { qos: 1 });
      expect(await reply).toMatchObject({ messageId: 'ask-1', success: false, code: 'not_found' });
    } finally {
      await client.endAsync();
    }
  });
});
