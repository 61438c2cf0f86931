// A gateway with 100 child devices of another product, over a private broker: a release to the
// children's product pushes every child on the gateway's child topics (never a direct one), the
// fleet simulator's children answer through their gateway and every record succeeds, and a child's
// message through a different gateway is refused gateway_mismatch and changes nothing.
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { allFinal, createFirmware, createTask, waitForTask } from '../helpers/rollout.ts';
import { Fleet, fleetDeviceIds, spreadOverGateways } from '../../tools/fleet.ts';

const GATEWAY_PRODUCT = 'hub';
const CHILD_PRODUCT = 'sensor';
const GATEWAY = 'hub-1';
const OTHER_GATEWAY = 'hub-2';
const CHILDREN = fleetDeviceIds('sensor', 100);
/** A child behind GATEWAY that the simulated fleet does not know: the test speaks for it. */
const SOLO = 'sensor-solo';
const TARGET = '2.0.0';
const WAIT_MS = 15_000;

let broker: TestBroker;
let t: TestApp;
let fleet: Fleet;
let spy: MqttClient;
/** Every message on any firmware topic, direct or a gateway's, in order. */
const heard: Array<{ topic: string; body: Record<string, unknown> }> = [];

const childTopic = (gateway: string, child: string, suffix: string, level = 'child') => `/${GATEWAY_PRODUCT}/${gateway}/${level}/${child}/firmware/${suffix}`;

async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = WAIT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function refusedCount(reason: string, type: string): Promise<number> {
  const metric = await t.otter.metrics.deviceMessages.get();
  return metric.values
    .filter((v) => v.labels.result === 'refused' && v.labels.reason === reason && v.labels.type === type)
    .reduce((sum, v) => sum + v.value, 0);
}

/** Publishes on `topic` and waits until Otter has counted it refused for `reason`. */
async function expectRefused(reason: string, type: string, topic: string, body: object): Promise<void> {
  const before = await refusedCount(reason, type);
  await spy.publishAsync(topic, JSON.stringify(body), { qos: 1 });
  await waitFor(`${topic} refused as ${reason}`, async () => (await refusedCount(reason, type)) === before + 1);
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

async function putDevices(devices: object[]): Promise<void> {
  const response = await t.app.inject({ method: 'PUT', url: '/api/devices', headers: t.auth, payload: { devices } });
  expect(response.statusCode, response.body).toBe(200);
}

beforeAll(async () => {
  broker = await startBroker();
  t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url, ...broker.serviceEnv, WORKER_CONCURRENCY: '50' });
  spy = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: 'gateway-rollout-spy', reconnectPeriod: 0 });
  spy.on('message', (topic, payload) => heard.push({ topic, body: JSON.parse(payload.toString('utf8')) as Record<string, unknown> }));
  await spy.subscribeAsync(['/+/+/firmware/#', '/+/+/child/+/firmware/#', '/+/+/child-reply/+/firmware/#'], { qos: 1 });

  // the gateways under their own product, the children under theirs, each naming its gateway
  await putDevices([{ id: GATEWAY, productId: GATEWAY_PRODUCT }, { id: OTHER_GATEWAY, productId: GATEWAY_PRODUCT }]);
  await putDevices(CHILDREN.map((id) => ({ id, productId: CHILD_PRODUCT, firmwareVersion: '1.0.0', gatewayId: GATEWAY })));
  fleet = new Fleet({
    mqttUrl: broker.url,
    productId: CHILD_PRODUCT,
    deviceIds: CHILDREN,
    gateways: { productId: GATEWAY_PRODUCT, children: spreadOverGateways(CHILDREN, [GATEWAY]) },
    progressSteps: 3,
    stepMs: 20,
    seed: 'gateway-rollout',
    reportOnStart: false,
  });
  await fleet.start();
}, 60_000);

afterAll(async () => {
  await fleet?.stop();
  await spy?.endAsync();
  await t?.close();
  await broker?.stop();
});

describe('a gateway with 100 child devices of another product', () => {
  it("a release to the child product pushes every child on the gateway's child topic, and their progress through it completes every record", async () => {
    const firmwareId = await createFirmware(t.app, t.auth, CHILD_PRODUCT, TARGET, 2);
    // no retries: a child that cannot be reached fails its record after one timeout
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 15, retry: { maxAttempts: 1, backoffSeconds: 1, on: ['timeout', 'send_error'] } });
    const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: true } });
    expect(release.statusCode, release.body).toBe(200);
    // the children, not the gateways (another product)
    expect(release.json().added).toBe(100);

    const task = await waitForTask(t.app, t.auth, taskId, (x) => allFinal(x) && x.state === 'completed', 60_000);
    expect(task.stats).toEqual({ total: 100, waiting: 0, processing: 0, success: 100, failed: 0, canceled: 0 });

    // one upgrade per child, on its gateway's child topic, carrying the child's own message
    for (const child of CHILDREN) {
      const upgrades = heard.filter((m) => m.topic === childTopic(GATEWAY, child, 'upgrade'));
      expect(upgrades, child).toHaveLength(1);
      expect(upgrades[0]!.body).toMatchObject({ deviceId: child, version: TARGET, messageId: expect.any(String) });
    }
    expect(heard.filter((m) => m.topic.endsWith('/firmware/upgrade'))).toHaveLength(100);
    // nothing at all on the children's direct topics, either way, and nothing via the other gateway
    expect(heard.filter((m) => m.topic.startsWith(`/${CHILD_PRODUCT}/`)).map((m) => m.topic)).toEqual([]);
    expect(heard.filter((m) => m.topic.startsWith(`/${GATEWAY_PRODUCT}/${OTHER_GATEWAY}/`)).map((m) => m.topic)).toEqual([]);
    // the simulated children heard their upgrade only through their gateway, and answered through it
    expect(fleet.stats).toMatchObject({ upgradesReceived: 100, succeeded: 100, failed: 0, misrouted: 0 });
    expect(heard.filter((m) => m.topic.startsWith(`/${GATEWAY_PRODUCT}/${GATEWAY}/child/`) && m.topic.endsWith('/firmware/upgrade/progress'))).toHaveLength(300);

    const records = (await t.app.inject({ method: 'GET', url: `/api/tasks/${taskId}/records?pageSize=500`, headers: t.auth })).json().items as Array<Record<string, unknown>>;
    expect(records).toHaveLength(100);
    for (const record of records) expect(record).toMatchObject({ state: 'success', progress: 100, attempts: 1, errorReason: null });
    const one = (await t.app.inject({ method: 'GET', url: `/api/records/${records[0]!.id}`, headers: t.auth })).json();
    expect(one.events.map((e: { type: string }) => e.type)).toEqual(['released', 'queued', 'sent', 'acknowledged', 'progress', 'progress', 'success']);
    const devices = (await t.app.inject({ method: 'GET', url: `/api/devices?productId=${CHILD_PRODUCT}&pageSize=500`, headers: t.auth })).json().items as Array<Record<string, unknown>>;
    expect(devices).toHaveLength(100);
    for (const device of devices) expect(device).toMatchObject({ firmwareVersion: TARGET, gatewayId: GATEWAY });
  }, 90_000);

  it('refuses a child message through a different gateway (gateway_mismatch), and it changes nothing', async () => {
    // a child upgraded above: its report and pull through the other gateway are not its own
    const done = CHILDREN[0]!;
    const doneBefore = await state(done);
    await expectRefused('gateway_mismatch', 'REPORT_FIRMWARE', childTopic(OTHER_GATEWAY, done, 'report'), { version: '1.0.0', properties: { faked: 'true' }, timestamp: Date.now() });
    await expectRefused('gateway_mismatch', 'REQUEST_FIRMWARE', childTopic(OTHER_GATEWAY, done, 'pull'), { messageId: 'pull-other', timestamp: Date.now() });
    expect(await state(done)).toEqual(doneBefore);

    // a child with a record in progress: nothing through the other gateway touches it
    await putDevices([{ id: SOLO, productId: CHILD_PRODUCT, firmwareVersion: '1.0.0', gatewayId: GATEWAY }]);
    const firmwareId = await createFirmware(t.app, t.auth, CHILD_PRODUCT, '3.0.0', 3);
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 3_600 });
    const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { deviceIds: [SOLO], push: true } });
    expect(release.json().added, release.body).toBe(1);
    const upgrade = await waitFor('the upgrade through hub-1', () => heard.find((m) => m.topic === childTopic(GATEWAY, SOLO, 'upgrade')));
    await waitFor('the record to be sent', async () => (await state(SOLO)).records[0]?.state === 'processing');
    const before = await state(SOLO);
    expect(before.records).toHaveLength(1);
    expect(before.records[0]).toMatchObject({ state: 'processing', progress: 0 });

    const messageId = upgrade.body.messageId;
    for (const level of ['child', 'child-reply']) {
      await expectRefused('gateway_mismatch', 'UPGRADE_FIRMWARE_REPLY', childTopic(OTHER_GATEWAY, SOLO, 'upgrade/reply', level), { messageId, success: false, message: 'faked rejection' });
      await expectRefused('gateway_mismatch', 'UPGRADE_FIRMWARE_PROGRESS', childTopic(OTHER_GATEWAY, SOLO, 'upgrade/progress', level), { progress: 100, complete: true, success: true, version: '3.0.0' });
      await expectRefused('gateway_mismatch', 'UPGRADE_FIRMWARE_PROGRESS', childTopic(OTHER_GATEWAY, SOLO, 'upgrade/progress', level), { progress: 10, complete: false, success: false, version: '3.0.0', errorReason: 'faked' });
      await expectRefused('gateway_mismatch', 'REPORT_FIRMWARE', childTopic(OTHER_GATEWAY, SOLO, 'report', level), { version: '3.0.0', timestamp: Date.now() });
    }
    expect(await state(SOLO)).toEqual(before);
    // nothing (a pull reply, say) went out through the other gateway
    const platformSuffixes = ['/firmware/upgrade', '/firmware/pull/reply', '/firmware/read'];
    expect(heard.filter((m) => m.topic.startsWith(`/${GATEWAY_PRODUCT}/${OTHER_GATEWAY}/`) && platformSuffixes.some((suffix) => m.topic.endsWith(suffix))).map((m) => m.topic)).toEqual([]);

    // the very same completion through its own gateway applies
    await spy.publishAsync(childTopic(GATEWAY, SOLO, 'upgrade/progress'), JSON.stringify({ progress: 100, complete: true, success: true, version: '3.0.0' }), { qos: 1 });
    const task = await waitForTask(t.app, t.auth, taskId, allFinal, WAIT_MS);
    expect(task.stats).toMatchObject({ total: 1, success: 1, failed: 0 });
    expect((await state(SOLO)).row?.firmware_version).toBe('3.0.0');
  }, 60_000);
});
