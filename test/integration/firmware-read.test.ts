// POST /api/devices/{id}/firmware/read (docs/rest-api.md#devices): a ReadFirmwareMessage goes to a simulated
// device over a real broker; its reply is answered (and stored on the device), a silent device is
// a 504 device_timeout within the asked time. With split processes the reply reaches a worker
// through the shared subscription and travels to the waiting API process over Redis pub/sub.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { registerDevices } from '../helpers/rollout.ts';
import { Fleet, fleetDeviceIds } from '../../tools/fleet.ts';
import { createLogger } from '../../service/logger.ts';
import { startOtter, type Otter } from '../../service/service.ts';
import type { Metrics } from '../../services/metrics.ts';

const VERSION = '1.4.2';
/** Slack on top of timeoutMs for the 504: the request's own work on a loaded machine. */
const TIMEOUT_SLACK_MS = 2_000;

async function read(app: FastifyInstance, auth: Record<string, string>, deviceId: string, body?: unknown): Promise<{ response: LightMyRequestResponse; ms: number }> {
  const started = performance.now();
  const response = await app.inject({
    method: 'POST',
    url: `/api/devices/${encodeURIComponent(deviceId)}/firmware/read`,
    headers: auth,
    ...(body === undefined ? {} : { payload: body as object }),
  });
  return { response, ms: performance.now() - started };
}

async function device(app: FastifyInstance, auth: Record<string, string>, deviceId: string): Promise<Record<string, unknown>> {
  const response = await app.inject({ method: 'GET', url: `/api/devices/${deviceId}`, headers: auth });
  expect(response.statusCode, response.body).toBe(200);
  return response.json();
}

/** READ_FIRMWARE_REPLY messages this process accepted. */
async function readRepliesAccepted(metrics: Metrics): Promise<number> {
  const values = (await metrics.deviceMessages.get()).values;
  return values.filter((v) => v.labels.type === 'READ_FIRMWARE_REPLY' && v.labels.result === 'accepted').reduce((sum, v) => sum + v.value, 0);
}

describe('firmware read, one process (ROLE=all)', () => {
  const product = 'reader';
  const ids = fleetDeviceIds('reader', 6);
  const silent = ids[5]!;
  let broker: TestBroker;
  let t: TestApp;
  let fleet: Fleet;

  beforeAll(async () => {
    broker = await startBroker();
    t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url });
    fleet = new Fleet({ mqttUrl: broker.url, productId: product, deviceIds: ids, version: VERSION, reportOnStart: false });
    fleet.devices.get(silent)!.fate = 'silent';
    await fleet.start();
    await registerDevices(t.app, t.auth, product, ids, '1.0.0');
  });

  afterAll(async () => {
    await fleet?.stop();
    await t?.close();
    await broker?.stop();
  });

  it('answers the version and properties the device reports, and stores them on the device', async () => {
    const before = await device(t.app, t.auth, ids[0]!);
    expect(before).toMatchObject({ firmwareVersion: '1.0.0', firmwareProperties: null });

    const { response } = await read(t.app, t.auth, ids[0]!, { timeoutMs: 5_000 });
    expect(response.statusCode, response.body).toBe(200);
    expect(response.json()).toEqual({ version: VERSION, properties: { simulated: 'true' } });
    expect(fleet.stats.readsReceived).toBe(1);

    const after = await device(t.app, t.auth, ids[0]!);
    expect(after).toMatchObject({ firmwareVersion: VERSION, firmwareProperties: { simulated: 'true' } });
    expect(Date.parse(after.firmwareReportedAt as string)).toBeGreaterThan(Date.parse(before.firmwareReportedAt as string));
    // the others were not asked and are unchanged
    expect(await device(t.app, t.auth, ids[1]!)).toMatchObject({ firmwareVersion: '1.0.0', firmwareProperties: null });
    expect(await readRepliesAccepted(t.otter.metrics)).toBe(1);
  });

  it('with no body, waits the default time and answers', async () => {
    const { response } = await read(t.app, t.auth, ids[1]!);
    expect(response.statusCode, response.body).toBe(200);
    expect(response.json()).toEqual({ version: VERSION, properties: { simulated: 'true' } });
  });

  it('concurrent reads each get their own device\'s answer', async () => {
    const asked = ids.slice(0, 5);
    asked.forEach((id, i) => {
      fleet.devices.get(id)!.version = `1.4.${10 + i}`;
    });
    const answers = await Promise.all(asked.map((id) => read(t.app, t.auth, id, { timeoutMs: 5_000 })));
    expect(answers.map((a) => a.response.statusCode)).toEqual([200, 200, 200, 200, 200]);
    expect(answers.map((a) => a.response.json().version)).toEqual(['1.4.10', '1.4.11', '1.4.12', '1.4.13', '1.4.14']);
    for (const [i, id] of asked.entries()) {
      expect((await device(t.app, t.auth, id)).firmwareVersion).toBe(`1.4.${10 + i}`);
    }
  });

  it('a silent device: 504 device_timeout after the asked time, not much later; nothing stored', async () => {
    const readsBefore = fleet.stats.readsReceived;
    const stored = await device(t.app, t.auth, silent);
    const timeoutMs = 1_000;
    const { response, ms } = await read(t.app, t.auth, silent, { timeoutMs });
    expect(response.statusCode, response.body).toBe(504);
    expect(response.json()).toMatchObject({ statusCode: 504, code: 'device_timeout' });
    expect(response.json().message).toContain(silent);
    expect(ms).toBeGreaterThanOrEqual(timeoutMs);
    expect(ms).toBeLessThan(timeoutMs + TIMEOUT_SLACK_MS);
    // the device did get the ReadFirmwareMessage: the silence is its own
    expect(fleet.stats.readsReceived).toBe(readsBefore + 1);
    expect(await device(t.app, t.auth, silent)).toEqual(stored);
    expect(stored).toMatchObject({ firmwareVersion: '1.0.0', firmwareProperties: null });
  });

  it('an unknown device is 404 not_found, sends nothing and answers at once', async () => {
    const readsBefore = fleet.stats.readsReceived;
    const { response, ms } = await read(t.app, t.auth, 'reader-ghost', { timeoutMs: 5_000 });
    expect(response.statusCode, response.body).toBe(404);
    expect(response.json()).toMatchObject({ statusCode: 404, code: 'not_found' });
    expect(ms).toBeLessThan(2_000);
    expect(fleet.stats.readsReceived).toBe(readsBefore);
  });

  it.each([
    ['below the minimum', { timeoutMs: 99 }],
    ['above the maximum', { timeoutMs: 60_001 }],
    ['not an integer', { timeoutMs: 1_500.5 }],
    ['a string', { timeoutMs: '1000' }],
    ['negative', { timeoutMs: -1 }],
  ])('timeoutMs %s is 400 validation_error, sends nothing', async (_name, body) => {
    const readsBefore = fleet.stats.readsReceived;
    const { response } = await read(t.app, t.auth, ids[0]!, body);
    expect(response.statusCode, response.body).toBe(400);
    expect(response.json()).toMatchObject({ statusCode: 400, code: 'validation_error' });
    expect(fleet.stats.readsReceived).toBe(readsBefore);
  });

  it('an invalid device id is 400 validation_error', async () => {
    const { response } = await read(t.app, t.auth, 'bad id!', { timeoutMs: 1_000 });
    expect(response.statusCode, response.body).toBe(400);
    expect(response.json().code).toBe('validation_error');
  });
});

describe('firmware read, split processes (ROLE=api + ROLE=worker)', () => {
  const product = 'split';
  const ids = fleetDeviceIds('split', 3);
  const silent = ids[2]!;
  let broker: TestBroker;
  let api: TestApp;
  let worker: Otter;
  let fleet: Fleet;

  beforeAll(async () => {
    broker = await startBroker();
    // the API process: no workers, so it does not subscribe to device messages
    api = await buildTestApp({ ROLE: 'api', MQTT_URL: broker.url });
    // the worker process: same database, Redis prefix and broker
    const config = { ...api.config, role: 'worker' as const };
    worker = await startOtter(config, { logger: createLogger(config.logLevel), listen: false, defaultMetrics: false });
    fleet = new Fleet({ mqttUrl: broker.url, productId: product, deviceIds: ids, version: VERSION, reportOnStart: false });
    fleet.devices.get(silent)!.fate = 'silent';
    await fleet.start();
    await registerDevices(api.app, api.auth, product, ids, '1.0.0');
  });

  afterAll(async () => {
    await fleet?.stop();
    await worker?.stop();
    await api?.close();
    await broker?.stop();
  });

  it('the worker receives the reply and the API process answers it', async () => {
    const { response } = await read(api.app, api.auth, ids[0]!, { timeoutMs: 5_000 });
    expect(response.statusCode, response.body).toBe(200);
    expect(response.json()).toEqual({ version: VERSION, properties: { simulated: 'true' } });
    // applied by the worker, not by the API process
    expect(await readRepliesAccepted(worker.metrics)).toBe(1);
    expect(await readRepliesAccepted(api.otter.metrics)).toBe(0);
    expect(await device(api.app, api.auth, ids[0]!)).toMatchObject({ firmwareVersion: VERSION, firmwareProperties: { simulated: 'true' } });

    fleet.devices.get(ids[1]!)!.version = '1.4.7';
    const second = await read(api.app, api.auth, ids[1]!, { timeoutMs: 5_000 });
    expect(second.response.json()).toEqual({ version: '1.4.7', properties: { simulated: 'true' } });
    expect(await readRepliesAccepted(worker.metrics)).toBe(2);
  });

  it('a silent device is still a 504 within the asked time', async () => {
    const timeoutMs = 800;
    const { response, ms } = await read(api.app, api.auth, silent, { timeoutMs });
    expect(response.statusCode, response.body).toBe(504);
    expect(response.json().code).toBe('device_timeout');
    expect(ms).toBeGreaterThanOrEqual(timeoutMs);
    expect(ms).toBeLessThan(timeoutMs + TIMEOUT_SLACK_MS);
  });
});
