// Who may speak for a device, over a private broker and over REST: a message on another product's
// topic is refused product_mismatch, a child's message through a gateway not its own (or on its own
// direct topic) gateway_mismatch — for every message type, and nothing changes. An MQTT report from
// an unknown device registers nothing unless DEVICE_SELF_REGISTRATION=true. Child devices behind a
// gateway are pushed, read and answered on the gateway's child topics, and upgrade through it.
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { allFinal, createFirmware, createTask, registerDevices, waitForTask } from '../helpers/rollout.ts';

const PRODUCT = 'bind-a';
const FOREIGN = 'bind-b';
const TARGET = '2.0.0';
const GATEWAY_PRODUCT = 'gw-prod';
const CHILD_PRODUCT = 'child-prod';
const WAIT_MS = 15_000;

let broker: TestBroker;
let t: TestApp;
let device: MqttClient;
/** Every message the platform published, by topic. */
const received = new Map<string, Array<Record<string, unknown>>>();

async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = WAIT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function counted(app: TestApp, labels: { result: string; reason?: string; type?: string }): Promise<number> {
  const metric = await app.otter.metrics.deviceMessages.get();
  return metric.values
    .filter((v) => Object.entries(labels).every(([key, value]) => v.labels[key as 'type' | 'result' | 'reason'] === value))
    .reduce((sum, v) => sum + v.value, 0);
}

/** Publishes on `topic` and waits until the message is counted as refused for `reason`. */
async function expectRefused(reason: string, type: string, topic: string, body: unknown, app = t, client = device): Promise<void> {
  const before = await counted(app, { result: 'refused', reason, type });
  await client.publishAsync(topic, JSON.stringify(body), { qos: 1 });
  await waitFor(`${topic} refused as ${reason}`, async () => (await counted(app, { result: 'refused', reason, type })) === before + 1);
}

/** Everything a message could change about a device: its row, its records and their timelines. */
async function state(deviceId: string) {
  const db = t.database.db;
  const row = await db.selectFrom('devices')
    .select(['product_id', 'gateway_id', 'firmware_version', 'firmware_properties', 'firmware_reported_at', 'report_timestamp', 'updated_at'])
    .where('id', '=', deviceId).executeTakeFirst();
  const records = await db.selectFrom('upgrade_records')
    .select(['id', 'state', 'progress', 'attempts', 'error_reason', 'revision', 'last_message_at', 'ignored_events', 'updated_at'])
    .where('device_id', '=', deviceId).orderBy('id').execute();
  const events = await db.selectFrom('record_events').select(['record_id', 'type'])
    .where('record_id', 'in', records.length > 0 ? records.map((r) => r.id) : [-1]).orderBy('id').execute();
  return { row, records, events };
}

async function post(messages: unknown): Promise<Array<{ index: number; accepted: boolean; code?: string }>> {
  const response = await t.app.inject({ method: 'POST', url: '/api/device-messages', headers: t.auth, payload: messages as object });
  expect(response.statusCode, response.body).toBe(200);
  return response.json().results;
}

async function putDevices(devices: object[]) {
  return t.app.inject({ method: 'PUT', url: '/api/devices', headers: t.auth, payload: { devices } });
}

/** Releases `deviceIds` in a new task of `firmwareId` and, for a push task, pushes it. */
async function startTask(firmwareId: string, deviceIds: string[], mode: 'push' | 'pull' = 'push'): Promise<string> {
  const taskId = await createTask(t.app, t.auth, { firmwareId, mode, timeoutSeconds: 3_600 });
  const released = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { deviceIds, push: mode === 'push' } });
  expect(released.json().added, released.body).toBe(deviceIds.length);
  return taskId;
}

beforeAll(async () => {
  broker = await startBroker();
  t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url });
  device = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: 'binding-devices', reconnectPeriod: 0 });
  device.on('message', (topic, payload) => {
    const list = received.get(topic) ?? [];
    list.push(JSON.parse(payload.toString('utf8')) as Record<string, unknown>);
    received.set(topic, list);
  });
  // everything the platform sends, direct or to a gateway's children
  await device.subscribeAsync(['/+/+/firmware/upgrade', '/+/+/firmware/read', '/+/+/firmware/pull/reply', '/+/+/child/+/firmware/#'], { qos: 1 });
}, 60_000);

afterAll(async () => {
  await device?.endAsync();
  await t?.close();
  await broker?.stop();
});

describe('product binding', () => {
  const ID = 'bd-1';
  let upgrade: Record<string, unknown>;

  beforeAll(async () => {
    await registerDevices(t.app, t.auth, PRODUCT, [ID, 'bd-rest'], '1.0.0');
    const firmwareId = await createFirmware(t.app, t.auth, PRODUCT, TARGET, 2);
    await startTask(firmwareId, [ID, 'bd-rest']);
    upgrade = (await waitFor('the upgrade message', () => received.get(`/${PRODUCT}/${ID}/firmware/upgrade`)?.[0]))!;
  }, 30_000);

  it("refuses every message type on another product's topic (product_mismatch) and changes nothing", async () => {
    const before = await state(ID);
    expect(before.records[0]).toMatchObject({ state: 'processing', progress: 0 });
    const topic = (suffix: string) => `/${FOREIGN}/${ID}/firmware/${suffix}`;
    // each of these would change the device or its record if it were applied
    await expectRefused('product_mismatch', 'UPGRADE_FIRMWARE_PROGRESS', topic('upgrade/progress'), { progress: 100, complete: true, success: true, version: TARGET });
    await expectRefused('product_mismatch', 'UPGRADE_FIRMWARE_PROGRESS', topic('upgrade/progress'), { progress: 10, complete: false, success: false, version: TARGET, errorReason: 'faked' });
    await expectRefused('product_mismatch', 'UPGRADE_FIRMWARE_REPLY', topic('upgrade/reply'), { messageId: upgrade.messageId, success: false, message: 'faked rejection' });
    await expectRefused('product_mismatch', 'UPGRADE_FIRMWARE_REPLY', topic('upgrade/reply'), { messageId: upgrade.messageId, success: true });
    await expectRefused('product_mismatch', 'REPORT_FIRMWARE', topic('report'), { version: TARGET, properties: { faked: true }, timestamp: Date.now() });
    await expectRefused('product_mismatch', 'REQUEST_FIRMWARE', topic('pull'), { messageId: 'pull-1', timestamp: Date.now() });
    await expectRefused('product_mismatch', 'READ_FIRMWARE_REPLY', topic('read/reply'), { messageId: 'read-1', version: '6.6.6', properties: { faked: true } });
    expect(await state(ID)).toEqual(before);
    // no pull reply went anywhere
    expect([...received.keys()].filter((key) => key.endsWith('/pull/reply') && key.includes(ID))).toEqual([]);
  });

  it('does not take a read reply on another product topic for the device asked', async () => {
    const read = t.app.inject({ method: 'POST', url: `/api/devices/${ID}/firmware/read`, headers: t.auth, payload: { timeoutMs: 1_500 } });
    const asked = await waitFor('the read message', () => received.get(`/${PRODUCT}/${ID}/firmware/read`)?.[0]);
    await expectRefused('product_mismatch', 'READ_FIRMWARE_REPLY', `/${FOREIGN}/${ID}/firmware/read/reply`, { messageId: asked.messageId, version: '6.6.6' });
    expect((await read).statusCode).toBe(504);
    expect((await state(ID)).row?.firmware_version).toBe('1.0.0');
  });

  it('refuses every message type posted with a productId that is not the device product, and changes nothing', async () => {
    const before = await state('bd-rest');
    const results = await post([
      { messageType: 'UPGRADE_FIRMWARE_PROGRESS', deviceId: 'bd-rest', productId: FOREIGN, progress: 100, complete: true, success: true, version: TARGET },
      { messageType: 'UPGRADE_FIRMWARE_REPLY', deviceId: 'bd-rest', productId: FOREIGN, messageId: 'm', success: false },
      { messageType: 'REPORT_FIRMWARE', deviceId: 'bd-rest', productId: FOREIGN, version: TARGET, timestamp: Date.now() },
      { messageType: 'REQUEST_FIRMWARE', deviceId: 'bd-rest', productId: FOREIGN, messageId: 'pull-2' },
      { messageType: 'READ_FIRMWARE_REPLY', deviceId: 'bd-rest', productId: FOREIGN, messageId: 'r', version: '6.6.6' },
    ]);
    expect(results.map((r) => [r.accepted, r.code])).toEqual(Array.from({ length: 5 }, () => [false, 'product_mismatch']));
    expect(await state('bd-rest')).toEqual(before);
    // with the right product (or none) the same progress applies
    expect((await post({ messageType: 'UPGRADE_FIRMWARE_PROGRESS', deviceId: 'bd-rest', productId: PRODUCT, progress: 100, complete: true, success: true, version: TARGET }))[0])
      .toMatchObject({ accepted: true });
    expect((await state('bd-rest')).records[0]?.state).toBe('success');
  });

  it('applies the same messages on the device own topic', async () => {
    await device.publishAsync(`/${PRODUCT}/${ID}/firmware/upgrade/progress`, JSON.stringify({ progress: 100, complete: true, success: true, version: TARGET }), { qos: 1 });
    await waitFor('the record to succeed', async () => (await state(ID)).records[0]?.state === 'success');
    expect((await state(ID)).row?.firmware_version).toBe(TARGET);
  });
});

describe('self-registration', () => {
  it('an MQTT report from an unknown device is refused unknown_device and registers nothing', async () => {
    await expectRefused('unknown_device', 'REPORT_FIRMWARE', `/${PRODUCT}/ghost-1/firmware/report`, { version: '1.0.0', timestamp: Date.now() });
    expect(await t.database.db.selectFrom('devices').select('id').where('id', '=', 'ghost-1').executeTakeFirst()).toBeUndefined();
  });

  it('a platform still registers a device with a REPORT_FIRMWARE naming its product', async () => {
    expect(await post({ messageType: 'REPORT_FIRMWARE', deviceId: 'rest-new', productId: PRODUCT, version: '1.2.0' })).toEqual([{ index: 0, accepted: true }]);
    expect(await t.database.db.selectFrom('devices').select(['product_id', 'firmware_version']).where('id', '=', 'rest-new').executeTakeFirst())
      .toEqual({ product_id: PRODUCT, firmware_version: '1.2.0' });
  });

  it('with DEVICE_SELF_REGISTRATION=true an MQTT report registers its device, but never a child through a gateway', async () => {
    const ownBroker = await startBroker();
    const app = await buildTestApp({ ROLE: 'all', MQTT_URL: ownBroker.url, DEVICE_SELF_REGISTRATION: 'true' });
    const client = await mqtt.connectAsync(ownBroker.url, { protocolVersion: 5, clientId: 'self-registering', reconnectPeriod: 0 });
    try {
      const find = (id: string) => app.database.db.selectFrom('devices').select(['product_id', 'firmware_version', 'gateway_id']).where('id', '=', id).executeTakeFirst();
      await client.publishAsync(`/${PRODUCT}/self-1/firmware/report`, JSON.stringify({ version: '1.4.0', timestamp: Date.now() }), { qos: 1 });
      expect(await waitFor('self-1 to be registered', () => find('self-1'))).toEqual({ product_id: PRODUCT, firmware_version: '1.4.0', gateway_id: null });
      await expectRefused('unknown_device', 'REPORT_FIRMWARE', `/${GATEWAY_PRODUCT}/gw-x/child/self-child/firmware/report`, { version: '1.0.0', productId: CHILD_PRODUCT }, app, client);
      expect(await find('self-child')).toBeUndefined();
      // and a registered device still speaks only for its own product
      await expectRefused('product_mismatch', 'REPORT_FIRMWARE', `/${FOREIGN}/self-1/firmware/report`, { version: '9.0.0', timestamp: Date.now() }, app, client);
      expect((await find('self-1'))?.firmware_version).toBe('1.4.0');
    } finally {
      await client.endAsync();
      await app.close();
      await ownBroker.stop();
    }
  }, 60_000);
});

describe('gatewayId on devices', () => {
  it('is set by PUT /api/devices, shown by GET, kept when omitted and taken away with null', async () => {
    expect((await putDevices([{ id: 'gw-api', productId: GATEWAY_PRODUCT }, { id: 'child-api', productId: CHILD_PRODUCT, gatewayId: 'gw-api' }])).statusCode).toBe(200);
    const get = async () => (await t.app.inject({ url: '/api/devices/child-api', headers: t.auth })).json();
    expect(await get()).toMatchObject({ id: 'child-api', productId: CHILD_PRODUCT, gatewayId: 'gw-api' });
    expect((await t.app.inject({ url: '/api/devices/gw-api', headers: t.auth })).json().gatewayId).toBeNull();
    expect((await putDevices([{ id: 'child-api', productId: CHILD_PRODUCT, name: 'renamed' }])).statusCode).toBe(200);
    expect(await get()).toMatchObject({ name: 'renamed', gatewayId: 'gw-api' });
    const listed = (await t.app.inject({ url: `/api/devices?productId=${CHILD_PRODUCT}`, headers: t.auth })).json();
    expect(listed.items.find((d: { id: string }) => d.id === 'child-api')).toMatchObject({ gatewayId: 'gw-api' });
    expect((await putDevices([{ id: 'child-api', productId: CHILD_PRODUCT, gatewayId: null }])).statusCode).toBe(200);
    expect(await get()).toMatchObject({ name: 'renamed', gatewayId: null });
  });

  it('refuses a device as its own gateway, and a malformed gateway id, writing nothing', async () => {
    const self = await putDevices([{ id: 'loop-1', productId: GATEWAY_PRODUCT, gatewayId: 'loop-1' }]);
    expect(self.statusCode).toBe(400);
    expect(self.json().code).toBe('validation_error');
    const bad = await putDevices([{ id: 'loop-2', productId: GATEWAY_PRODUCT, gatewayId: 'a/b' }]);
    expect(bad.statusCode).toBe(400);
    expect(await t.database.db.selectFrom('devices').select('id').where('id', 'in', ['loop-1', 'loop-2']).execute()).toEqual([]);
  });
});

describe('a gateway with child devices of another product', () => {
  const CHILDREN = ['ch-1', 'ch-2', 'ch-3'];
  const childTopic = (gateway: string, child: string, suffix: string, level = 'child', product = GATEWAY_PRODUCT) => `/${product}/${gateway}/${level}/${child}/firmware/${suffix}`;
  let taskId: string;

  beforeAll(async () => {
    expect((await putDevices([
      { id: 'gw-1', productId: GATEWAY_PRODUCT },
      { id: 'gw-2', productId: GATEWAY_PRODUCT },
      ...[...CHILDREN, 'ch-pull'].map((id) => ({ id, productId: CHILD_PRODUCT, firmwareVersion: '1.0.0', gatewayId: 'gw-1' })),
    ])).statusCode).toBe(200);
    const firmwareId = await createFirmware(t.app, t.auth, CHILD_PRODUCT, TARGET, 2);
    taskId = await startTask(firmwareId, CHILDREN);
  }, 30_000);

  it("pushes each child on the gateway's child topic, with the child's own message, never on a direct topic", async () => {
    for (const child of CHILDREN) {
      const [message, ...more] = await waitFor(`${child}'s upgrade through gw-1`, () => received.get(childTopic('gw-1', child, 'upgrade')));
      expect(more).toEqual([]);
      expect(message).toMatchObject({ deviceId: child, version: TARGET, messageId: expect.any(String) });
      expect(received.has(`/${CHILD_PRODUCT}/${child}/firmware/upgrade`)).toBe(false);
    }
  });

  it('refuses a child message through another gateway, a wrong gateway product, or its own direct topic (gateway_mismatch) — for every message type — and changes nothing', async () => {
    const before = await state('ch-1');
    const messageId = received.get(childTopic('gw-1', 'ch-1', 'upgrade'))![0]!.messageId;
    const bodies: Array<[string, string, object]> = [
      ['UPGRADE_FIRMWARE_PROGRESS', 'upgrade/progress', { progress: 100, complete: true, success: true, version: TARGET }],
      ['UPGRADE_FIRMWARE_REPLY', 'upgrade/reply', { messageId, success: false, message: 'faked' }],
      ['REPORT_FIRMWARE', 'report', { version: TARGET, timestamp: Date.now() }],
      ['REQUEST_FIRMWARE', 'pull', { messageId: 'pull-gw' }],
      ['READ_FIRMWARE_REPLY', 'read/reply', { messageId: 'r', version: '6.6.6' }],
    ];
    for (const [type, suffix, body] of bodies) {
      await expectRefused('gateway_mismatch', type, childTopic('gw-2', 'ch-1', suffix), body);
      await expectRefused('gateway_mismatch', type, childTopic('gw-2', 'ch-1', suffix, 'child-reply'), body);
      await expectRefused('gateway_mismatch', type, childTopic('gw-1', 'ch-1', suffix, 'child', FOREIGN), body);
      await expectRefused('gateway_mismatch', type, `/${CHILD_PRODUCT}/ch-1/firmware/${suffix}`, body);
    }
    // a device that is no child cannot be spoken for by a gateway either
    await expectRefused('gateway_mismatch', 'REPORT_FIRMWARE', childTopic('gw-1', 'gw-2', 'report'), { version: '9.9.9' });
    expect(await state('ch-1')).toEqual(before);
    expect(before.records[0]).toMatchObject({ state: 'processing', progress: 0 });
  });

  it("completes the children's records from their messages through their gateway", async () => {
    for (const child of CHILDREN) {
      const messageId = received.get(childTopic('gw-1', child, 'upgrade'))![0]!.messageId;
      await device.publishAsync(childTopic('gw-1', child, 'upgrade/reply', 'child-reply'), JSON.stringify({ messageId, success: true }), { qos: 1 });
      await device.publishAsync(childTopic('gw-1', child, 'upgrade/progress'), JSON.stringify({ progress: 50, complete: false, success: true, version: TARGET }), { qos: 1 });
      await device.publishAsync(childTopic('gw-1', child, 'upgrade/progress', 'child-reply'), JSON.stringify({ progress: 100, complete: true, success: true, version: TARGET }), { qos: 1 });
    }
    const task = await waitForTask(t.app, t.auth, taskId, allFinal, WAIT_MS);
    expect(task.stats).toMatchObject({ total: 3, success: 3, failed: 0 });
    for (const child of CHILDREN) {
      const { row, events } = await state(child);
      expect(row?.firmware_version).toBe(TARGET);
      expect(events.map((e) => e.type)).toEqual(['released', 'queued', 'sent', 'acknowledged', 'progress', 'success']);
    }
  });

  it("reads a child's firmware through its gateway", async () => {
    const read = t.app.inject({ method: 'POST', url: '/api/devices/ch-2/firmware/read', headers: t.auth, payload: { timeoutMs: 5_000 } });
    const asked = await waitFor('the read through gw-1', () => received.get(childTopic('gw-1', 'ch-2', 'read'))?.[0]);
    expect(asked.deviceId).toBe('ch-2');
    await device.publishAsync(childTopic('gw-1', 'ch-2', 'read/reply', 'child-reply'), JSON.stringify({ messageId: asked.messageId, version: TARGET, properties: { via: 'gw-1' } }), { qos: 1 });
    const response = await read;
    expect(response.statusCode, response.body).toBe(200);
    expect(response.json()).toEqual({ version: TARGET, properties: { via: 'gw-1' } });
  });

  it('answers a child pull request through the gateway it came by', async () => {
    const firmwareId = await createFirmware(t.app, t.auth, CHILD_PRODUCT, '3.0.0', 3);
    await startTask(firmwareId, ['ch-pull'], 'pull');
    await device.publishAsync(childTopic('gw-1', 'ch-pull', 'pull'), JSON.stringify({ messageId: 'pull-child', timestamp: Date.now() }), { qos: 1 });
    const reply = await waitFor('the pull reply through gw-1', () => received.get(childTopic('gw-1', 'ch-pull', 'pull/reply'))?.[0]);
    expect(reply).toMatchObject({ messageId: 'pull-child', deviceId: 'ch-pull', success: true, version: '3.0.0' });
    expect(received.has(`/${CHILD_PRODUCT}/ch-pull/firmware/pull/reply`)).toBe(false);
  });
});
