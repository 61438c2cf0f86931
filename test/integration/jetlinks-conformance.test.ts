// A device written for JetLinks' official MQTT protocol upgrades through Otter unchanged: the
// payloads of test/fixtures/jetlinks/device-messages.json, each in exactly JetLinks' format and
// naming the JetLinks source it follows, go through a real broker to the running service and every
// record ends as JetLinks would end it; what Otter publishes is compared field by field with what
// JetLinks' platform sends (platform-messages.json); and a device that pulls at boot while its
// record waits in a push task gets the upgrade in the pull reply and is not pushed again.
import { readFileSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { allFinal, createFirmware, createTask, registerDevices, waitForTask } from '../helpers/rollout.ts';
import { Fleet, fleetDeviceIds } from '../../tools/fleet.ts';

interface Step {
  topic: string;
  payload: Record<string, unknown>;
}

interface DeviceFixture {
  name: string;
  source: string;
  task: 'push' | 'pull' | 'none' | 'read';
  steps: Step[];
  expect: {
    state?: string;
    progress?: number;
    errorReason?: string;
    events?: string[];
    progressEvents?: number[];
    deviceVersion?: string;
    deviceProperties?: Record<string, unknown>;
    reply?: Record<string, unknown>;
    read?: Record<string, unknown>;
  };
}

interface PlatformFixture {
  source: string;
  topic: string;
  example: Record<string, unknown>;
  fixed: string[];
  whenUnknown: Record<string, unknown>;
}

type Json = Record<string, unknown>;

const fixture = <T>(name: string): T => JSON.parse(readFileSync(new URL(`../fixtures/jetlinks/${name}`, import.meta.url), 'utf8')) as T;
const DEVICE_FIXTURES = fixture<{ fixtures: DeviceFixture[] }>('device-messages.json').fixtures;
const PLATFORM = fixture<{ messages: Record<string, PlatformFixture> }>('platform-messages.json').messages;

const PRODUCT = 'jl';
const TARGET = '2.0.0';
const WAIT_MS = 15_000;
const deviceOf = (index: number) => `jl-${index + 1}`;
const devicesFor = (task: DeviceFixture['task']) => DEVICE_FIXTURES.flatMap((f, i) => (f.task === task ? [deviceOf(i)] : []));

let broker: TestBroker;
let t: TestApp;
let device: MqttClient;
let firmwareId: string;
/** Everything the platform published to devices, by device id, in arrival order. */
const received = new Map<string, Array<{ kind: string; body: Json }>>();

function messagesTo(deviceId: string, kind: string): Json[] {
  return (received.get(deviceId) ?? []).filter((m) => m.kind === kind).map((m) => m.body);
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = WAIT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

function publish(productId: string, deviceId: string, topic: string, payload: unknown): Promise<unknown> {
  return device.publishAsync(`/${productId}/${deviceId}/${topic}`, JSON.stringify(payload), { qos: 1 });
}

/** The fixture's payload with its placeholders filled in (each stays the string it stands for). */
function fill(value: unknown, values: Record<string, string>): unknown {
  if (typeof value === 'string' && value.startsWith('$') && value in values) return values[value];
  if (Array.isArray(value)) return value.map((v) => fill(v, values));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, fill(v, values)]));
  return value;
}

async function api<T = Json>(url: string): Promise<T> {
  const response = await t.app.inject({ url, headers: t.auth });
  expect(response.statusCode, response.body).toBe(200);
  return response.json() as T;
}

interface RecordView {
  id: number;
  state: string;
  progress: number;
  attempts: number;
  errorReason: string | null;
  events: Array<{ type: string; progress?: number | null }>;
}

/** The device's newest record, with its timeline. */
async function recordOf(deviceId: string): Promise<RecordView> {
  const list = await api<{ items: Array<{ id: number }> }>(`/api/devices/${deviceId}/records`);
  expect(list.items.length, `${deviceId} has a record`).toBeGreaterThan(0);
  return api<RecordView>(`/api/records/${list.items[0]!.id}`);
}

/** The first path holding a null in `value`, or undefined. */
function nullAt(value: unknown, path = ''): string | undefined {
  if (value === null) return path || '/';
  if (typeof value !== 'object') return undefined;
  for (const [key, item] of Object.entries(value as Json)) {
    const found = nullAt(item, `${path}/${key}`);
    if (found) return found;
  }
  return undefined;
}

const jsonType = (value: unknown) => (value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value);

/**
 * `actual` against JetLinks' `spec`, field by field: the same fields (less those the firmware does
 * not know, which Otter leaves out), each of the same JSON type, the fixed ones equal; no null.
 */
function expectLikeJetLinks(actual: Json, spec: PlatformFixture, unknown: string[] = []): void {
  expect(nullAt(actual), 'a null field').toBeUndefined();
  const expectedFields = Object.keys(spec.example).filter((field) => !unknown.includes(field)).sort();
  expect(Object.keys(actual).sort()).toEqual(expectedFields);
  for (const field of expectedFields) {
    expect(jsonType(actual[field]), field).toBe(jsonType(spec.example[field]));
    if (spec.fixed.includes(field)) expect(actual[field], field).toEqual(spec.example[field]);
  }
  for (const field of unknown) expect(actual, `${field} left out when unknown`).not.toHaveProperty(field);
}

beforeAll(async () => {
  broker = await startBroker();
  t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url, ...broker.serviceEnv });
  // a device of JetLinks' kind speaks MQTT 3.1.1
  device = await mqtt.connectAsync(broker.url, { protocolVersion: 4, clientId: 'jetlinks-devices', reconnectPeriod: 0 });
  device.on('message', (topic, payload) => {
    const [, , deviceId, ...rest] = topic.split('/');
    const list = received.get(deviceId!) ?? [];
    list.push({ kind: rest.join('/'), body: JSON.parse(payload.toString('utf8')) as Json });
    received.set(deviceId!, list);
  });
  await device.subscribeAsync(['/+/+/firmware/upgrade', '/+/+/firmware/pull/reply', '/+/+/firmware/read'], { qos: 1 });

  await registerDevices(t.app, t.auth, PRODUCT, [...DEVICE_FIXTURES.map((_, i) => deviceOf(i)), 'jl-idle'], '1.0.0');
  firmwareId = await createFirmware(t.app, t.auth, PRODUCT, TARGET, 2);

  const pushTask = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 3_600, name: 'jetlinks push' });
  const pushed = await t.app.inject({ method: 'POST', url: `/api/tasks/${pushTask}/release`, headers: t.auth, payload: { deviceIds: devicesFor('push'), push: true } });
  expect(pushed.json().added, pushed.body).toBe(devicesFor('push').length);
  const pullTask = await createTask(t.app, t.auth, { firmwareId, mode: 'pull', timeoutSeconds: 3_600, name: 'jetlinks pull' });
  const pulled = await t.app.inject({ method: 'POST', url: `/api/tasks/${pullTask}/release`, headers: t.auth, payload: { deviceIds: devicesFor('pull') } });
  expect(pulled.json().added, pulled.body).toBe(devicesFor('pull').length);
  await waitFor('every pushed device to receive its upgrade', () => devicesFor('push').every((id) => messagesTo(id, 'firmware/upgrade').length > 0));
}, 60_000);

afterAll(async () => {
  await device?.endAsync();
  await t?.close();
  await broker?.stop();
});

describe('device payloads in JetLinks\' format (test/fixtures/jetlinks/device-messages.json)', () => {
  it('every fixture names the JetLinks source it follows', () => {
    expect(DEVICE_FIXTURES.length).toBeGreaterThanOrEqual(12);
    for (const f of DEVICE_FIXTURES) expect(f.source, f.name).toMatch(/jetlinks|seed/);
  });

  it.each(DEVICE_FIXTURES.map((f, i) => [f.name, f, deviceOf(i)] as const))('%s', async (_name, f, deviceId) => {
    const upgrade = messagesTo(deviceId, 'firmware/upgrade')[0];
    const values: Record<string, string> = { $deviceId: deviceId, $version: TARGET, $firmwareId: firmwareId };
    if (upgrade) values.$messageId = String(upgrade.messageId);

    let read: Promise<{ statusCode: number; body: string }> | undefined;
    if (f.task === 'read') {
      read = t.app.inject({ method: 'POST', url: `/api/devices/${deviceId}/firmware/read`, headers: t.auth, payload: { timeoutMs: 10_000 } });
      const [asked] = await waitFor('the ReadFirmwareMessage', () => (messagesTo(deviceId, 'firmware/read').length > 0 ? messagesTo(deviceId, 'firmware/read') : undefined));
      values.$messageId = String(asked!.messageId);
    }

    for (const step of f.steps) {
      const before = f.task === 'push' || f.task === 'pull' ? (await recordOf(deviceId)).events.length : 0;
      await publish(PRODUCT, deviceId, step.topic, fill(step.payload, values));
      if (f.task === 'push' || f.task === 'pull') {
        await waitFor(`${f.name}: the record to take the message`, async () => (await recordOf(deviceId)).events.length > before);
      }
    }

    const expected = fill(f.expect, values) as DeviceFixture['expect'];
    if (expected.reply) {
      const [reply] = await waitFor('the pull reply', () => (messagesTo(deviceId, 'firmware/pull/reply').length > 0 ? messagesTo(deviceId, 'firmware/pull/reply') : undefined));
      expect(reply).toMatchObject(expected.reply);
      expect(reply!.messageId).toEqual(expect.stringMatching(/.+/));
    }
    if (read) {
      const response = await read;
      expect(response.statusCode, response.body).toBe(200);
      expect(JSON.parse(response.body)).toEqual(expected.read);
    }
    if (expected.state) {
      const record = await waitFor(`${f.name}: the record to be ${expected.state}`, async () => {
        const r = await recordOf(deviceId);
        return r.state === expected.state ? r : undefined;
      });
      if (expected.progress !== undefined) expect(record.progress).toBe(expected.progress);
      if (expected.errorReason !== undefined) expect(record.errorReason).toBe(expected.errorReason);
      // the timeline may note the download; what the device said is all there, in order
      if (expected.events) expect(record.events.map((e) => e.type).filter((type) => type !== 'downloaded')).toEqual(expected.events);
      if (expected.progressEvents) expect(record.events.filter((e) => e.type === 'progress').map((e) => e.progress)).toEqual(expected.progressEvents);
      expect(record.attempts).toBe(1);
    }
    if (expected.deviceVersion || expected.deviceProperties) {
      const stored = await waitFor(`${f.name}: the device's firmware`, async () => {
        const d = await api<{ firmwareVersion: string; firmwareProperties: Json | null }>(`/api/devices/${deviceId}`);
        return d.firmwareVersion === (expected.deviceVersion ?? d.firmwareVersion) ? d : undefined;
      });
      if (expected.deviceProperties) expect(stored.firmwareProperties).toEqual(expected.deviceProperties);
    }
  });

  it('refused nothing, and failed on nothing', async () => {
    const metric = await t.otter.metrics.deviceMessages.get();
    const refused = metric.values.filter((v) => v.labels.result === 'refused' || v.labels.result === 'error');
    expect(refused).toEqual([]);
  });
});

describe('what Otter publishes, field by field against JetLinks\' platform (platform-messages.json)', () => {
  it('UPGRADE_FIRMWARE: JetLinks\' fields and types, messageType and headers, size a number', () => {
    for (const id of devicesFor('push')) {
      const [upgrade] = messagesTo(id, 'firmware/upgrade');
      expectLikeJetLinks(upgrade!, PLATFORM.UPGRADE_FIRMWARE!);
      expect(upgrade).toMatchObject({ deviceId: id, firmwareId, version: TARGET, size: 1024, sign: 'ab'.repeat(32), signMethod: 'sha256' });
    }
  });

  it('UPGRADE_FIRMWARE of a firmware with neither sign nor size: those fields left out, never null', async () => {
    const product = 'jl-min';
    await registerDevices(t.app, t.auth, product, ['jl-min-1'], '1.0.0');
    const created = await t.app.inject({
      method: 'POST',
      url: '/api/firmware',
      headers: t.auth,
      payload: { productId: product, name: 'bare', version: TARGET, versionOrder: 2, url: 'https://firmware.example.com/bare.bin' },
    });
    expect(created.statusCode, created.body).toBe(201);
    const task = await createTask(t.app, t.auth, { firmwareId: created.json().id, timeoutSeconds: 600 });
    await t.app.inject({ method: 'POST', url: `/api/tasks/${task}/release`, headers: t.auth, payload: { allDevices: true, push: true } });
    const [upgrade] = await waitFor('the upgrade', () => (messagesTo('jl-min-1', 'firmware/upgrade').length > 0 ? messagesTo('jl-min-1', 'firmware/upgrade') : undefined));
    expectLikeJetLinks(upgrade!, PLATFORM.UPGRADE_FIRMWARE!, ['sign', 'signMethod', ...Object.keys(PLATFORM.UPGRADE_FIRMWARE!.whenUnknown)]);
    expect(upgrade!.parameters).toEqual({});
  });

  it('REQUEST_FIRMWARE_REPLY with the firmware', () => {
    const index = DEVICE_FIXTURES.findIndex((f) => f.task === 'pull');
    const [reply] = messagesTo(deviceOf(index), 'firmware/pull/reply');
    expectLikeJetLinks(reply!, PLATFORM['REQUEST_FIRMWARE_REPLY found']!);
    expect(reply).toMatchObject({ deviceId: deviceOf(index), firmwareId, version: TARGET, size: 1024 });
  });

  it('REQUEST_FIRMWARE_REPLY not_found, to a device with nothing to install', async () => {
    await publish(PRODUCT, 'jl-idle', 'firmware/pull', { messageId: 'pull-2', timestamp: 1601196762389 });
    const [reply] = await waitFor('the not_found reply', () => (messagesTo('jl-idle', 'firmware/pull/reply').length > 0 ? messagesTo('jl-idle', 'firmware/pull/reply') : undefined));
    expectLikeJetLinks(reply!, PLATFORM['REQUEST_FIRMWARE_REPLY not_found']!, Object.keys(PLATFORM['REQUEST_FIRMWARE_REPLY not_found']!.whenUnknown));
    expect(reply).toMatchObject({ messageId: 'pull-2', deviceId: 'jl-idle' });
  });

  it('READ_FIRMWARE', () => {
    const index = DEVICE_FIXTURES.findIndex((f) => f.task === 'read');
    const [read] = messagesTo(deviceOf(index), 'firmware/read');
    expectLikeJetLinks(read!, PLATFORM.READ_FIRMWARE!);
    expect(read).toMatchObject({ deviceId: deviceOf(index) });
  });
});

describe('a device that pulls at boot while its record waits in a push task', () => {
  it('gets the upgrade in the pull reply, and the record is not pushed a second time', async () => {
    const product = 'jl-boot';
    const ids = ['jl-boot-1', 'jl-boot-2', 'jl-boot-3', 'jl-boot-4'];
    await registerDevices(t.app, t.auth, product, ids, '1.0.0');
    const bootFirmware = await createFirmware(t.app, t.auth, product, TARGET, 2);
    // two in flight at most: two devices are pushed, the other two wait in the push task
    const task = await createTask(t.app, t.auth, { firmwareId: bootFirmware, timeoutSeconds: 600, rollout: { maxInFlight: 2 } });
    const released = await t.app.inject({ method: 'POST', url: `/api/tasks/${task}/release`, headers: t.auth, payload: { deviceIds: ids, push: true } });
    expect(released.json().added).toBe(4);
    const pushedFirst = await waitFor('two pushes', () => {
      const got = ids.filter((id) => messagesTo(id, 'firmware/upgrade').length > 0);
      return got.length === 2 ? got : undefined;
    });
    const records = await api<{ items: Array<{ id: number; deviceId: string; state: string }> }>(`/api/tasks/${task}/records?pageSize=10`);
    const waiting = records.items.filter((r) => r.state === 'waiting').sort((a, b) => a.id - b.id).map((r) => r.deviceId);
    expect(waiting).toHaveLength(2);
    // the one the dispatcher would push next boots and asks; the other asks for a version it is not getting
    const [booter, other] = waiting as [string, string];

    await publish(product, other, 'firmware/pull', { messageId: 'boot-0', requestVersion: '9.9.9', timestamp: Date.now() });
    const [refused] = await waitFor('the reply to a pull for another version', () => (messagesTo(other, 'firmware/pull/reply').length > 0 ? messagesTo(other, 'firmware/pull/reply') : undefined));
    expect(refused).toMatchObject({ messageId: 'boot-0', success: false, code: 'not_found' });
    expect((await recordOf(other)).state).toBe('waiting');

    await publish(product, booter, 'firmware/pull', { messageId: 'boot-1', currentVersion: '1.0.0', timestamp: Date.now() });
    const [reply] = await waitFor('the pull reply', () => (messagesTo(booter, 'firmware/pull/reply').length > 0 ? messagesTo(booter, 'firmware/pull/reply') : undefined));
    expect(reply).toMatchObject({ messageType: 'REQUEST_FIRMWARE_REPLY', messageId: 'boot-1', success: true, firmwareId: bootFirmware, version: TARGET, headers: { async: true } });
    const pulledRecord = await recordOf(booter);
    expect(pulledRecord).toMatchObject({ state: 'processing', attempts: 1 });
    expect(pulledRecord.events.map((e) => e.type)).toEqual(['released', 'pulled']);

    // the first two finish: the dispatcher has room again, and pushes the one still waiting — not the booter
    const complete = (id: string) => publish(product, id, 'firmware/upgrade/progress', { progress: 100, complete: true, success: true, version: TARGET, timestamp: Date.now() });
    for (const id of pushedFirst) await complete(id);
    await waitFor(`${other} to be pushed`, () => messagesTo(other, 'firmware/upgrade').length > 0);
    expect(messagesTo(booter, 'firmware/upgrade')).toEqual([]);

    await complete(booter);
    await complete(other);
    const done = await waitForTask(t.app, t.auth, task, (x) => x.state === 'completed', WAIT_MS);
    expect(done.stats).toMatchObject({ total: 4, success: 4, failed: 0 });
    const finished = await recordOf(booter);
    expect(finished).toMatchObject({ state: 'success', attempts: 1 });
    expect(finished.events.map((e) => e.type)).toEqual(['released', 'pulled', 'success']);
    expect(messagesTo(booter, 'firmware/upgrade')).toEqual([]);
    expect((await recordOf(other)).events.map((e) => e.type)).toEqual(['released', 'queued', 'sent', 'success']);
  });

  it('racing the dispatcher: 200 devices pull while their task is pushed, and each record is sent exactly once', async () => {
    const product = 'jl-race';
    const ids = Array.from({ length: 200 }, (_, i) => `jl-race-${i + 1}`);
    await registerDevices(t.app, t.auth, product, ids, '1.0.0');
    const raceFirmware = await createFirmware(t.app, t.auth, product, TARGET, 2);
    const task = await createTask(t.app, t.auth, { firmwareId: raceFirmware, timeoutSeconds: 600 });
    await t.app.inject({ method: 'POST', url: `/api/tasks/${task}/release`, headers: t.auth, payload: { allDevices: true } });
    // the devices ask while the dispatcher works through the pushed task: each record goes one way or the other
    const pushed = await t.app.inject({ method: 'POST', url: `/api/tasks/${task}/push`, headers: t.auth });
    expect(pushed.json()).toEqual({ queued: ids.length });
    await Promise.all(ids.map((id, i) => publish(product, id, 'firmware/pull', { messageId: `race-${i}`, timestamp: Date.now() })));
    await waitForTask(t.app, t.auth, task, (x) => x.stats.processing === ids.length, WAIT_MS);
    const records = await api<{ items: Array<{ id: number; deviceId: string; attempts: number }> }>(`/api/tasks/${task}/records?pageSize=500`);
    let pulledCount = 0;
    for (const record of records.items) {
      expect(record.attempts, record.deviceId).toBe(1);
      const detail = await api<RecordView>(`/api/records/${record.id}`);
      const sends = detail.events.filter((e) => e.type === 'sent' || e.type === 'pulled').map((e) => e.type);
      expect(sends, record.deviceId).toHaveLength(1);
      if (sends[0] === 'pulled') {
        pulledCount += 1;
        expect(messagesTo(record.deviceId, 'firmware/upgrade'), `${record.deviceId} was pulled, then pushed`).toEqual([]);
      } else {
        await waitFor(`${record.deviceId}'s push`, () => messagesTo(record.deviceId, 'firmware/upgrade').length > 0);
      }
    }
    // a little settling time, then no device has more than one push
    await new Promise((resolve) => setTimeout(resolve, 500));
    for (const id of ids) expect(messagesTo(id, 'firmware/upgrade').length, id).toBeLessThanOrEqual(1);
    expect(records.items).toHaveLength(ids.length);
    // every device got the firmware exactly one way (here about 150 by their pull, 50 by the first push round)
    expect(pulledCount + ids.filter((id) => messagesTo(id, 'firmware/upgrade').length === 1).length).toBe(ids.length);
  });
});

describe('the simulator with --jetlinks-strict', () => {
  const fleets: Fleet[] = [];
  afterAll(async () => {
    await Promise.all(fleets.map((fleet) => fleet.stop()));
  });

  it.each([
    ['push', false],
    ['pull', true],
  ] as const)('a %s rollout to 60 devices that send only what JetLinks documents ends as their fates say', async (mode, pull) => {
    const product = `jl-strict-${mode}`;
    const ids = fleetDeviceIds(product, 60);
    await registerDevices(t.app, t.auth, product, ids, '1.0.0');
    const fleetFirmware = await createFirmware(t.app, t.auth, product, TARGET, 2);
    const task = await createTask(t.app, t.auth, { firmwareId: fleetFirmware, mode, timeoutSeconds: 600 });
    const fleet = new Fleet({
      mqttUrl: broker.url,
      productId: product,
      deviceIds: ids,
      failRate: 0.15,
      rejectRate: pull ? 0 : 0.15,
      progressSteps: 3,
      jetlinksStrict: true,
      pull: false,
      reportOnStart: true,
    });
    fleets.push(fleet);
    await fleet.start();
    // the string-typed reports are stored first
    await waitFor('the reports', async () => (await api<{ firmwareReportedAt: string | null }>(`/api/devices/${ids[0]}`)).firmwareReportedAt !== null);
    const released = await t.app.inject({ method: 'POST', url: `/api/tasks/${task}/release`, headers: t.auth, payload: { allDevices: true, push: !pull } });
    expect(released.json().added, released.body).toBe(ids.length);
    if (pull) fleet.requestAll();

    const done = await waitForTask(t.app, t.auth, task, (x) => allFinal(x), 30_000);
    const failed = fleet.fateCount('fail') + (pull ? 0 : fleet.fateCount('reject'));
    expect(done.stats).toMatchObject({ total: ids.length, success: ids.length - failed, failed });
    expect(failed).toBeGreaterThan(0);
    const succeeded = ids.find((id) => fleet.devices.get(id)!.fate === 'success')!;
    const timeline = (await recordOf(succeeded)).events.map((e) => e.type).filter((type) => type !== 'downloaded');
    // an acknowledgement without `success`, progress as "33" and "66", completion as "true"
    expect(timeline).toEqual(pull ? ['released', 'pulled', 'progress', 'progress', 'success'] : ['released', 'queued', 'sent', 'acknowledged', 'progress', 'progress', 'success']);
    const metric = await t.otter.metrics.deviceMessages.get();
    expect(metric.values.filter((v) => v.labels.result === 'refused' || v.labels.result === 'error')).toEqual([]);
  });
});
