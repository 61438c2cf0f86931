// Device messages over a real broker (docs/device-protocol.md, docs/states-and-rules.md): progress that arrives twice, out of order,
// after the record is final, for another version, for an unknown device, or as malformed JSON
// changes nothing it should not; each refused message is counted in
// otter_device_messages_total{result="refused",reason=…}; and the service keeps running.
// The devices are a raw MQTT client, so every message is crafted by hand.
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { createFirmware, createTask, registerDevices } from '../helpers/rollout.ts';

const PRODUCT = 'dmsg';
const TARGET = '2.0.0';
const DEVICES = Array.from({ length: 10 }, (_, i) => `dm-${i + 1}`);
const WAIT_MS = 15_000;

interface UpgradeMessage {
  messageId: string;
  deviceId: string;
  firmwareId: string;
  version: string;
  url: string;
  sign: string | null;
  signMethod: string | null;
  size: number | null;
  parameters: Record<string, string>;
  timestamp: number;
}

interface RecordRow {
  id: number;
  state: string;
  progress: number;
  attempts: number;
  error_reason: string | null;
  revision: number;
  last_message_at: Date | null;
  completed_at: Date | null;
  updated_at: Date;
}

interface Snapshot {
  row: RecordRow;
  events: Array<{ type: string; attempt: number; progress: number | null; message: string | null }>;
}

let broker: TestBroker;
let t: TestApp;
let device: MqttClient;
let taskId: string;
let firmwareId: string;
const upgrades = new Map<string, UpgradeMessage[]>();

async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = WAIT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** The sum of otter_device_messages_total over the series matching `labels`. */
async function counted(labels: { result: string; reason?: string; type?: string }): Promise<number> {
  const metric = await t.otter.metrics.deviceMessages.get();
  return metric.values
    .filter((v) => Object.entries(labels).every(([key, value]) => v.labels[key as 'type' | 'result' | 'reason'] === value))
    .reduce((sum, v) => sum + v.value, 0);
}

async function refusedCount(reason: string): Promise<number> {
  return counted({ result: 'refused', reason });
}

async function snapshot(deviceId: string): Promise<Snapshot> {
  const row = (await t.database.db
    .selectFrom('upgrade_records')
    .select(['id', 'state', 'progress', 'attempts', 'error_reason', 'revision', 'last_message_at', 'completed_at', 'updated_at'])
    .where('device_id', '=', deviceId)
    .where('task_id', '=', taskId)
    .executeTakeFirstOrThrow()) as RecordRow;
  const events = await t.database.db
    .selectFrom('record_events')
    .select(['type', 'attempt', 'progress', 'message'])
    .where('record_id', '=', row.id)
    .orderBy('id')
    .execute();
  return { row, events };
}

function publish(deviceId: string, suffix: string, body: unknown, productId = PRODUCT): Promise<unknown> {
  const payload = typeof body === 'string' ? body : JSON.stringify(body);
  return device.publishAsync(`/${productId}/${deviceId}/firmware/${suffix}`, payload, { qos: 1 });
}

function progress(deviceId: string, body: Partial<{ progress: unknown; complete: unknown; success: unknown; version: unknown }> & Record<string, unknown>) {
  return publish(deviceId, 'upgrade/progress', { progress: 0, complete: false, success: true, version: TARGET, timestamp: Date.now(), ...body });
}

/** Publishes a message that must be refused for `reason`, and waits until it is counted. */
async function expectRefused(reason: string, send: () => Promise<unknown>): Promise<void> {
  const before = await refusedCount(reason);
  await send();
  await waitFor(`a refusal counted as ${reason}`, async () => (await refusedCount(reason)) === before + 1);
}

/** Waits until the record's timeline has `count` events. */
async function eventsReach(deviceId: string, count: number): Promise<Snapshot> {
  return waitFor(`${count} events on ${deviceId}'s record`, async () => {
    const snap = await snapshot(deviceId);
    return snap.events.length >= count ? snap : undefined;
  });
}

beforeAll(async () => {
  broker = await startBroker();
  t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url });
  device = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: 'dmsg-devices', reconnectPeriod: 0 });
  device.on('message', (topic, payload) => {
    const deviceId = topic.split('/')[2]!;
    const list = upgrades.get(deviceId) ?? [];
    list.push(JSON.parse(payload.toString('utf8')) as UpgradeMessage);
    upgrades.set(deviceId, list);
  });
  await device.subscribeAsync(`/${PRODUCT}/+/firmware/upgrade`, { qos: 1 });

  await registerDevices(t.app, t.auth, PRODUCT, [...DEVICES, 'dm-idle', 'dm-unsent'], '1.0.0');
  firmwareId = await createFirmware(t.app, t.auth, PRODUCT, TARGET, 2);
  taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 3_600 });
  const released = await t.app.inject({
    method: 'POST',
    url: `/api/tasks/${taskId}/release`,
    headers: t.auth,
    payload: { deviceIds: [...DEVICES, 'dm-unsent'] },
  });
  expect(released.statusCode, released.body).toBe(200);
  expect(released.json().added).toBe(DEVICES.length + 1);
  const pushed = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/push`, headers: t.auth, payload: { deviceIds: DEVICES } });
  expect(pushed.json()).toEqual({ queued: DEVICES.length });
  await waitFor('every device to receive its upgrade message', async () => DEVICES.every((id) => upgrades.has(id)));
}, 60_000);

afterAll(async () => {
  await device?.endAsync();
  await t?.close();
  await broker?.stop();
});

describe('the upgrade message', () => {
  it('reaches each pushed device once, with the firmware, and the record is processing', async () => {
    for (const id of DEVICES) {
      const [message, ...more] = upgrades.get(id)!;
      expect(more).toEqual([]);
      expect(message).toMatchObject({
        deviceId: id,
        firmwareId,
        version: TARGET,
        url: `https://firmware.example.com/${PRODUCT}/${TARGET}.bin`,
        sign: 'ab'.repeat(32),
        signMethod: 'sha256',
        size: 1024,
        parameters: { channel: 'test' },
      });
      expect(message!.messageId).toEqual(expect.any(String));
      expect(typeof message!.timestamp).toBe('number');
      const { row, events } = await snapshot(id);
      expect(row).toMatchObject({ state: 'processing', progress: 0, attempts: 1 });
      expect(events.map((e) => e.type)).toEqual(['released', 'queued', 'sent']);
    }
    expect(upgrades.has('dm-unsent')).toBe(false);
  });
});

describe('progress', () => {
  it('raises progress once; the same report again is an ignored event and changes nothing else', async () => {
    const id = 'dm-1';
    await progress(id, { progress: 30 });
    const first = await eventsReach(id, 4);
    expect(first.row).toMatchObject({ state: 'processing', progress: 30 });
    expect(first.events[3]).toMatchObject({ type: 'progress', attempt: 1, progress: 30 });

    const ignoredBefore = await counted({ result: 'ignored', type: 'UPGRADE_FIRMWARE_PROGRESS' });
    await progress(id, { progress: 30 });
    const second = await eventsReach(id, 5);
    expect(second.events[4]).toMatchObject({ type: 'ignored', attempt: 1, progress: 30 });
    expect(second.events[4]!.message).toContain('not above 30');
    expect(second.row).toMatchObject({ state: 'processing', progress: 30, attempts: 1, error_reason: null });
    expect(await counted({ result: 'ignored', type: 'UPGRADE_FIRMWARE_PROGRESS' })).toBe(ignoredBefore + 1);
  });

  it('never lowers progress: 60 then 30 stays at 60', async () => {
    const id = 'dm-2';
    await progress(id, { progress: 60 });
    await eventsReach(id, 4);
    await progress(id, { progress: 30 });
    const after = await eventsReach(id, 5);
    expect(after.row).toMatchObject({ state: 'processing', progress: 60 });
    expect(after.events.slice(3).map((e) => [e.type, e.progress])).toEqual([
      ['progress', 60],
      ['ignored', 30],
    ]);
  });

  it('refuses progress for another version (version_mismatch) and changes nothing', async () => {
    const id = 'dm-3';
    const before = await snapshot(id);
    await expectRefused('version_mismatch', () => progress(id, { progress: 50, version: '9.9.9' }));
    await expectRefused('version_mismatch', () => progress(id, { progress: 100, complete: true, version: '1.0.0' }));
    expect(await snapshot(id)).toEqual(before);
    const detail = (await t.app.inject({ method: 'GET', url: `/api/devices/${id}`, headers: t.auth })).json();
    expect(detail.firmwareVersion).toBe('1.0.0');
  });

  it('logs a report after success on the timeline as ignored and leaves the record as it was', async () => {
    const id = 'dm-4';
    await progress(id, { progress: 100, complete: true });
    const done = await waitFor('dm-4 to succeed', async () => {
      const snap = await snapshot(id);
      return snap.row.state === 'success' ? snap : undefined;
    });
    expect(done.row).toMatchObject({ state: 'success', progress: 100, attempts: 1, error_reason: null });
    expect(done.events.map((e) => e.type)).toEqual(['released', 'queued', 'sent', 'success']);
    const device4 = (await t.app.inject({ method: 'GET', url: `/api/devices/${id}`, headers: t.auth })).json();
    expect(device4).toMatchObject({ firmwareVersion: TARGET, activeRecord: null });

    await progress(id, { progress: 40 });
    const late = await eventsReach(id, 5);
    expect(late.events[4]).toMatchObject({ type: 'ignored', attempt: 1, message: 'progress 40 after the record was success' });
    await progress(id, { progress: 0, success: false, errorReason: 'flash write error' });
    await eventsReach(id, 6);
    await publish(id, 'upgrade/reply', { messageId: upgrades.get(id)![0]!.messageId, success: false, message: 'too late' });
    const later = await eventsReach(id, 7);
    expect(later.events.slice(5).map((e) => [e.type, e.message])).toEqual([
      ['ignored', 'failure report after the record was success'],
      ['ignored', 'rejection after the record was success'],
    ]);
    // the row itself is untouched: same revision, same times
    expect(later.row).toEqual(done.row);
  });
});

describe('refused messages', () => {
  it('refuses malformed JSON (bad_json)', async () => {
    const id = 'dm-5';
    const before = await snapshot(id);
    await expectRefused('bad_json', () => publish(id, 'upgrade/progress', '{"progress": 40, "complete": fal'));
    await expectRefused('bad_json', () => publish(id, 'upgrade/reply', 'not json at all'));
    expect(await counted({ result: 'refused', reason: 'bad_json', type: 'UPGRADE_FIRMWARE_PROGRESS' })).toBe(1);
    expect(await counted({ result: 'refused', reason: 'bad_json', type: 'UPGRADE_FIRMWARE_REPLY' })).toBe(1);
    expect(await snapshot(id)).toEqual(before);
  });

  it('refuses missing or mistyped fields (invalid_message)', async () => {
    const id = 'dm-5';
    const before = await snapshot(id);
    const bad: unknown[] = [
      { progress: '40%', complete: false, success: true, version: TARGET },
      { progress: 40, complete: 'no', success: true, version: TARGET },
      { progress: 140, complete: false, success: true, version: TARGET },
      { progress: -1, complete: false, success: true, version: TARGET },
      { progress: 40, complete: false, success: true },
      { progress: 40, complete: false, success: true, version: ['2'] },
      { progress: 40, complete: false, success: true, version: TARGET, timestamp: 'yesterday' },
      [{ progress: 40, complete: false, success: true, version: TARGET }],
      42,
    ];
    for (const body of bad) {
      await expectRefused('invalid_message', () => publish(id, 'upgrade/progress', body));
    }
    await expectRefused('invalid_message', () => publish(id, 'upgrade/reply', { success: true }));
    await expectRefused('invalid_message', () => publish(id, 'report', { properties: {} }));
    expect(await snapshot(id)).toEqual(before);
  });

  it('the topic decides: a payload deviceId or productId that differs is ignored, as JetLinks ignores it', async () => {
    const id = 'dm-8';
    const other = await snapshot('dm-6');
    await progress(id, { progress: 70, deviceId: 'dm-6', productId: 'another-product' });
    const after = await eventsReach(id, 4);
    expect(after.row).toMatchObject({ state: 'processing', progress: 70 });
    expect(after.events[3]).toMatchObject({ type: 'progress', progress: 70 });
    // dm-6's rejection of its own push, sent on dm-8's topic, is about dm-8: not its message id
    await publish(id, 'upgrade/reply', { deviceId: 'dm-6', messageId: upgrades.get('dm-6')![0]!.messageId, success: false, message: 'no' });
    const ignored = await eventsReach(id, 5);
    expect(ignored.events[4]).toMatchObject({ type: 'ignored' });
    expect(ignored.row).toMatchObject({ state: 'processing', progress: 70, error_reason: null });
    expect(await snapshot('dm-6')).toEqual(other);
  });

  it('refuses progress from an unregistered device (unknown_device) and registers nothing', async () => {
    await expectRefused('unknown_device', () => progress('dm-ghost', { progress: 10 }));
    await expectRefused('unknown_device', () => publish('dm-ghost', 'upgrade/reply', { messageId: 'm-1', success: true }));
    const ghost = await t.app.inject({ method: 'GET', url: '/api/devices/dm-ghost', headers: t.auth });
    expect(ghost.statusCode).toBe(404);
    const rows = await t.database.db.selectFrom('upgrade_records').select('id').where('device_id', '=', 'dm-ghost').execute();
    expect(rows).toEqual([]);
  });

  it('refuses progress from a device with no upgrade, or whose upgrade was not sent yet', async () => {
    await expectRefused('no_active_upgrade', () => progress('dm-idle', { progress: 10 }));
    const unsent = await snapshot('dm-unsent');
    expect(unsent.row.state).toBe('waiting');
    await expectRefused('not_started', () => progress('dm-unsent', { progress: 10 }));
    await expectRefused('not_started', () => progress('dm-unsent', { progress: 100, complete: true }));
    expect(await snapshot('dm-unsent')).toEqual(unsent);
  });

  it('refuses a message on an unknown topic under /{product}/{device}/firmware/ (unknown_topic)', async () => {
    const id = 'dm-5';
    const before = await snapshot(id);
    await expectRefused('unknown_topic', () => publish(id, 'upgrade/status', { progress: 90, complete: false, success: true, version: TARGET }));
    await expectRefused('unknown_topic', () => publish(id, 'upgrade/progress/extra', { progress: 90, complete: false, success: true, version: TARGET }));
    expect(await snapshot(id)).toEqual(before);
  });

  it('logs an acknowledgement for another message id as ignored, without changing the record', async () => {
    const id = 'dm-7';
    const before = await snapshot(id);
    await publish(id, 'upgrade/reply', { messageId: 'not-the-current-one', success: false, message: 'battery low' });
    const after = await eventsReach(id, before.events.length + 1);
    expect(after.events.at(-1)).toMatchObject({ type: 'ignored', attempt: 1 });
    expect(after.events.at(-1)!.message).toContain('not-the-current-one');
    expect(after.row).toMatchObject({ state: 'processing', progress: 0, attempts: 1, error_reason: null });
  });
});

describe('after all that', () => {
  it('still applies good messages: dm-5 reaches success through progress and a final report', async () => {
    const id = 'dm-5';
    const before = await snapshot(id);
    expect(before.row).toMatchObject({ state: 'processing', progress: 0 });
    expect(before.events.map((e) => e.type)).toEqual(['released', 'queued', 'sent']);

    await publish(id, 'upgrade/reply', { messageId: upgrades.get(id)![0]!.messageId, success: true });
    await eventsReach(id, 4);
    await progress(id, { progress: 50, timestampe: String(Date.now()) });
    await eventsReach(id, 5);
    await progress(id, { progress: 100, complete: true });
    const done = await waitFor('dm-5 to succeed', async () => {
      const snap = await snapshot(id);
      return snap.row.state === 'success' ? snap : undefined;
    });
    expect(done.events.map((e) => [e.type, e.progress])).toEqual([
      ['released', null],
      ['queued', null],
      ['sent', null],
      ['acknowledged', null],
      ['progress', 50],
      ['success', 100],
    ]);
    const health = await t.app.inject({ method: 'GET', url: '/health/ready' });
    expect(health.statusCode, health.body).toBe(200);
  });

  it('counted exactly the refusals it was sent, and no internal errors', async () => {
    const expected: Record<string, number> = {
      version_mismatch: 2,
      bad_json: 2,
      invalid_message: 11,
      unknown_device: 2,
      no_active_upgrade: 1,
      not_started: 2,
      unknown_topic: 2,
    };
    for (const [reason, n] of Object.entries(expected)) expect(await refusedCount(reason), reason).toBe(n);
    expect(await counted({ result: 'refused' })).toBe(Object.values(expected).reduce((a, b) => a + b, 0));
    expect(await counted({ result: 'error' })).toBe(0);
    const text = await t.otter.metrics.registry.getSingleMetricAsString('otter_device_messages_total');
    expect(text).toContain('otter_device_messages_total{type="UPGRADE_FIRMWARE_PROGRESS",result="refused",reason="version_mismatch"} 2');

    // the other records are where the test left them
    expect((await snapshot('dm-1')).row).toMatchObject({ state: 'processing', progress: 30 });
    expect((await snapshot('dm-2')).row).toMatchObject({ state: 'processing', progress: 60 });
    expect((await snapshot('dm-3')).row).toMatchObject({ state: 'processing', progress: 0 });
    const task = (await t.app.inject({ method: 'GET', url: `/api/tasks/${taskId}`, headers: t.auth })).json();
    expect(task).toMatchObject({ state: 'running', stats: { total: 11, waiting: 1, processing: 8, success: 2, failed: 0, canceled: 0 } });
  });
});
