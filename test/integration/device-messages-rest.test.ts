// POST /api/device-messages (docs/rest-api.md#device-messages): device messages from a platform that terminates
// device protocols itself. Each message stands alone: in a batch mixing good and bad messages
// exactly the good ones change the database, every refused one answers its reason and is counted
// in otter_device_messages_total; REQUEST_FIRMWARE is answered in the response; reports are
// ordered by the device's own timestamp. (The same refusals over MQTT: device-messages.test.ts.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { PlatformSink } from '../helpers/platform-sink.ts';
import { createFirmware, createTask, registerDevices, taskStats } from '../helpers/rollout.ts';

const PRODUCT = 'rest-p';
const TARGET = '2.0.0';
const PUSHED = ['rest-1', 'rest-2', 'rest-3', 'rest-4'];
const IDLE = ['rest-5', 'rest-6', 'rest-7'];
const PULLER = 'rest-pull';
const WAIT_MS = 15_000;

interface Result {
  index: number;
  accepted: boolean;
  code?: string;
  message?: string;
  reply?: Record<string, unknown>;
}

interface SentMessage {
  messageType: string;
  deviceId: string;
  messageId: string;
}


let sink: PlatformSink<SentMessage>;
let t: TestApp;
let pushTaskId: string;
let firmwareId: string;

async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function post(payload: unknown): Promise<Result[]> {
  const response = await t.app.inject({ method: 'POST', url: '/api/device-messages', headers: t.auth, payload: payload as object });
  expect(response.statusCode, response.body).toBe(200);
  return response.json().results as Result[];
}

/** Every row the messages could touch, in a stable order. */
async function databaseState() {
  const db = t.database.db;
  const [devices, records, events] = await Promise.all([
    db.selectFrom('devices').selectAll().orderBy('id').execute(),
    db.selectFrom('upgrade_records').selectAll().orderBy('id').execute(),
    db.selectFrom('record_events').selectAll().orderBy('id').execute(),
  ]);
  return { devices, records, events };
}

type Counts = Map<string, number>;

/** otter_device_messages_total as `result/reason` → value, and `result/type` → value. */
async function messageCounts(): Promise<Counts> {
  const metrics = await t.otter.metrics.registry.getMetricsAsJSON();
  const metric = metrics.find((m) => m.name === 'otter_device_messages_total');
  const counts: Counts = new Map();
  for (const value of (metric?.values ?? []) as Array<{ value: number; labels: Record<string, string | number> }>) {
    const byReason = `${value.labels.result}/${value.labels.reason}`;
    const byType = `${value.labels.result}/${value.labels.type}`;
    counts.set(byReason, (counts.get(byReason) ?? 0) + value.value);
    counts.set(byType, (counts.get(byType) ?? 0) + value.value);
  }
  return counts;
}

/** What changed between two counts (keys that did not change are left out). */
function countsDelta(before: Counts, after: Counts): Record<string, number> {
  const delta: Record<string, number> = {};
  for (const [key, value] of after) {
    const change = value - (before.get(key) ?? 0);
    if (change !== 0) delta[key] = change;
  }
  return delta;
}

function progress(deviceId: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { messageType: 'UPGRADE_FIRMWARE_PROGRESS', deviceId, progress: 40, complete: false, success: true, version: TARGET, timestamp: Date.now(), ...extra };
}

beforeAll(async () => {
  sink = new PlatformSink<SentMessage>();
  await sink.start();
  t = await buildTestApp({ ROLE: 'all', CONNECTOR: 'http', HTTP_CONNECTOR_URL: sink.url, HTTP_CONNECTOR_SECRET: 'secret' });
  await registerDevices(t.app, t.auth, PRODUCT, [...PUSHED, ...IDLE, PULLER], '1.0.0');
  firmwareId = await createFirmware(t.app, t.auth, PRODUCT, TARGET, 2);
  pushTaskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 3_600 });
  const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${pushTaskId}/release`, headers: t.auth, payload: { deviceIds: PUSHED, push: true } });
  expect(release.json().added).toBe(PUSHED.length);
  await waitFor('every pushed record processing', async () => {
    const { stats } = await taskStats(t.app, t.auth, pushTaskId);
    return stats.processing === PUSHED.length && PUSHED.every((id) => sink.upgradeFor(id));
  });
});

afterAll(async () => {
  await t?.close();
  await sink?.stop();
});

describe('a batch mixing good and bad messages', () => {
  it('applies exactly the good ones; each bad one is refused with its reason and counted', async () => {
    // rest-5 has a stored report; an older one must be refused as stale
    const reportedAt = Date.now() - 10_000;
    expect(await post({ messageType: 'REPORT_FIRMWARE', deviceId: 'rest-5', version: '1.0.5', timestamp: reportedAt })).toEqual([{ index: 0, accepted: true }]);

    const before = await databaseState();
    const countsBefore = await messageCounts();
    const now = Date.now();
    const batch: unknown[] = [
      /* 0 */ { messageType: 'REPORT_FIRMWARE', deviceId: 'rest-new', productId: PRODUCT, version: '1.1.0', properties: { hw: 'rev-b' }, timestamp: now },
      /* 1 */ { messageType: 'UPGRADE_FIRMWARE_REPLY', deviceId: 'rest-1', messageId: sink.upgradeFor('rest-1')!.messageId, success: true },
      /* 2 */ progress('rest-2', { progress: 40 }),
      /* 3 */ { deviceId: 'rest-3', progress: 50, complete: false, success: true, version: TARGET },
      /* 4 */ { messageType: 'UPGRADE_FIRMWARE', deviceId: 'rest-3', messageId: 'm-4' },
      /* 5 */ progress('rest-3', { progress: 'fifty' }),
      /* 6 */ progress('rest-3', { progress: 60, version: '9.9.9' }),
      /* 7 */ progress('rest-ghost', { progress: 10 }),
      /* 8 */ { messageType: 'REPORT_FIRMWARE', deviceId: 'rest-5', version: '0.9.0', timestamp: reportedAt - 1_000 },
      /* 9 */ 42,
      /* 10 */ { messageType: 'REPORT_FIRMWARE', deviceId: 123, productId: PRODUCT, version: '1.0.0' },
      /* 11 */ { messageType: 'REPORT_FIRMWARE', deviceId: 'rest-ghost-2', version: '1.0.0', timestamp: now },
      /* 12 */ { messageType: 'UPGRADE_FIRMWARE_REPLY', deviceId: 'rest-4', success: true },
      /* 13 */ { messageType: 'REPORT_FIRMWARE', version: '1.0.0', productId: PRODUCT },
      /* 14 */ progress('rest-4', { complete: 'yes' }),
    ];
    const results = await post(batch);

    expect(results.map((r) => r.index)).toEqual(batch.map((_, i) => i));
    expect(results.map((r) => [r.accepted, r.code])).toEqual([
      [true, undefined],
      [true, undefined],
      [true, undefined],
      [false, 'unknown_message_type'],
      [false, 'unknown_message_type'],
      [false, 'invalid_message'],
      [false, 'version_mismatch'],
      [false, 'unknown_device'],
      [false, 'stale_report'],
      [false, 'invalid_message'],
      [false, 'invalid_message'],
      [false, 'unknown_device'],
      [false, 'invalid_message'],
      [false, 'invalid_message'],
      [false, 'invalid_message'],
    ]);
    // the reasons say what was wrong
    expect(results[3]!.message).toBe('unknown messageType null');
    expect(results[4]!.message).toBe('unknown messageType "UPGRADE_FIRMWARE"');
    expect(results[5]!.message).toBe('progress: must be number');
    expect(results[6]!.message).toBe(`progress for version 9.9.9, but device rest-3 is upgrading to ${TARGET}`);
    expect(results[7]!.message).toBe('device rest-ghost is not registered');
    expect(results[12]!.message).toBe('messageId: required');
    expect(results[13]!.message).toBe('deviceId: required');
    expect(results[14]!.message).toBe('complete: must be boolean');

    // the database: the new device, rest-1 acknowledged, rest-2 at 40 % — and nothing else
    const after = await databaseState();
    const newDevice = after.devices.find((d) => d.id === 'rest-new');
    expect(newDevice).toMatchObject({ product_id: PRODUCT, firmware_version: '1.1.0', firmware_properties: { hw: 'rev-b' } });
    expect(Number(newDevice!.report_timestamp)).toBe(now);
    expect(after.devices.filter((d) => d.id !== 'rest-new')).toEqual(before.devices);
    expect(after.devices.map((d) => d.id)).not.toContain('rest-ghost');
    expect(after.devices.map((d) => d.id)).not.toContain('rest-ghost-2');

    const recordOf = (state: typeof before, deviceId: string) => state.records.find((r) => r.device_id === deviceId)!;
    for (const id of ['rest-3', 'rest-4']) expect(recordOf(after, id)).toEqual(recordOf(before, id));
    expect(recordOf(after, 'rest-1')).toMatchObject({ state: 'processing', progress: 0, revision: recordOf(before, 'rest-1').revision + 1 });
    expect(recordOf(after, 'rest-1').last_message_at).not.toBeNull();
    expect(recordOf(after, 'rest-2')).toMatchObject({ state: 'processing', progress: 40, revision: recordOf(before, 'rest-2').revision + 1 });

    const newEvents = after.events.slice(before.events.length).map((e) => ({ record: e.record_id, type: e.type, progress: e.progress }));
    expect(after.events.slice(0, before.events.length)).toEqual(before.events);
    expect(newEvents).toHaveLength(2);
    expect(newEvents).toEqual(expect.arrayContaining([
      { record: recordOf(after, 'rest-1').id, type: 'acknowledged', progress: null },
      { record: recordOf(after, 'rest-2').id, type: 'progress', progress: 40 },
    ]));

    // every refusal counted by its reason, every good message by its type
    expect(countsDelta(countsBefore, await messageCounts())).toEqual({
      'accepted/': 3,
      'accepted/REPORT_FIRMWARE': 1,
      'accepted/UPGRADE_FIRMWARE_REPLY': 1,
      'accepted/UPGRADE_FIRMWARE_PROGRESS': 1,
      'refused/unknown_message_type': 2,
      'refused/invalid_message': 6,
      'refused/version_mismatch': 1,
      'refused/unknown_device': 2,
      'refused/stale_report': 1,
      'refused/unknown': 3,
      'refused/UPGRADE_FIRMWARE_PROGRESS': 4,
      'refused/REPORT_FIRMWARE': 4,
      'refused/UPGRADE_FIRMWARE_REPLY': 1,
    });
  });

  it('a messageType that is not ours never becomes a metric label of its own', async () => {
    const invented = `X_${Date.now()}`;
    const results = await post([{ messageType: invented, deviceId: 'rest-1' }, { messageType: 7, deviceId: 'rest-1' }]);
    expect(results.map((r) => r.code)).toEqual(['unknown_message_type', 'unknown_message_type']);
    const series = (await t.otter.metrics.deviceMessages.get()).values.map((v) => String(v.labels.type));
    expect(series).not.toContain(invented);
    expect(new Set(series)).toEqual(new Set(['unknown', 'REPORT_FIRMWARE', 'UPGRADE_FIRMWARE_REPLY', 'UPGRADE_FIRMWARE_PROGRESS']));
  });

  it('one message alone (not an array) is answered the same way', async () => {
    expect(await post(progress('rest-2', { progress: 45 }))).toEqual([{ index: 0, accepted: true }]);
    expect(await post(progress('rest-2', { progress: 46, version: '1.0.0' }))).toMatchObject([{ index: 0, accepted: false, code: 'version_mismatch' }]);
    const record = await t.database.db.selectFrom('upgrade_records').select(['progress']).where('device_id', '=', 'rest-2').executeTakeFirstOrThrow();
    expect(record.progress).toBe(45);
  });
});

describe('REPORT_FIRMWARE', () => {
  it('of the target version while the record is processing completes it as success', async () => {
    const before = await taskStats(t.app, t.auth, pushTaskId);
    expect(await post({ messageType: 'REPORT_FIRMWARE', deviceId: 'rest-3', version: TARGET, properties: { slot: 'B' }, timestamp: Date.now() })).toEqual([{ index: 0, accepted: true }]);

    const record = await t.database.db.selectFrom('upgrade_records').selectAll().where('device_id', '=', 'rest-3').executeTakeFirstOrThrow();
    expect(record).toMatchObject({ state: 'success', progress: 100, error_reason: null });
    expect(record.completed_at).not.toBeNull();
    const detail = (await t.app.inject({ method: 'GET', url: `/api/records/${record.id}`, headers: t.auth })).json();
    expect(detail.events.at(-1)).toMatchObject({ type: 'success', progress: 100, message: `device reported version ${TARGET}` });
    const device = (await t.app.inject({ method: 'GET', url: '/api/devices/rest-3', headers: t.auth })).json();
    expect(device).toMatchObject({ firmwareVersion: TARGET, firmwareProperties: { slot: 'B' }, activeRecord: null });
    const after = await taskStats(t.app, t.auth, pushTaskId);
    expect(after.stats).toEqual({ ...before.stats, processing: before.stats.processing - 1, success: before.stats.success + 1 });
  });

  it('of another version while processing is stored on the device but does not end the upgrade', async () => {
    expect(await post({ messageType: 'REPORT_FIRMWARE', deviceId: 'rest-4', version: '1.0.1', timestamp: Date.now() })).toEqual([{ index: 0, accepted: true }]);
    const device = (await t.app.inject({ method: 'GET', url: '/api/devices/rest-4', headers: t.auth })).json();
    expect(device.firmwareVersion).toBe('1.0.1');
    expect(device.activeRecord).toMatchObject({ state: 'processing', progress: 0 });
  });

  it('an older report never overwrites a newer one, alone or in one batch', async () => {
    const base = Date.now();
    const version = async () => (await t.database.db.selectFrom('devices').select(['firmware_version', 'report_timestamp']).where('id', '=', 'rest-6').executeTakeFirstOrThrow());
    const report = (v: string, timestamp: number) => ({ messageType: 'REPORT_FIRMWARE', deviceId: 'rest-6', version: v, timestamp });

    expect((await post(report('1.5.0', base)))[0]).toEqual({ index: 0, accepted: true });
    expect((await post(report('1.4.0', base - 1)))[0]).toMatchObject({ accepted: false, code: 'stale_report' });
    expect(await version()).toMatchObject({ firmware_version: '1.5.0' });
    expect(Number((await version()).report_timestamp)).toBe(base);

    // the newer first in the batch: the older one behind it is stale
    const results = await post([report('1.7.0', base + 20), report('1.6.0', base + 10)]);
    expect(results.map((r) => [r.accepted, r.code])).toEqual([[true, undefined], [false, 'stale_report']]);
    expect(await version()).toMatchObject({ firmware_version: '1.7.0' });

    // JetLinks' `timestampe` spelling, as a numeric string, orders the same way
    expect((await post({ messageType: 'REPORT_FIRMWARE', deviceId: 'rest-6', version: '1.8.0', timestampe: String(base + 30) }))[0]).toEqual({ index: 0, accepted: true });
    expect((await post(report('1.0.0', base + 25)))[0]).toMatchObject({ accepted: false, code: 'stale_report' });
    expect(await version()).toMatchObject({ firmware_version: '1.8.0' });
    expect(Number((await version()).report_timestamp)).toBe(base + 30);
  });
});

describe('REQUEST_FIRMWARE', () => {
  let pullTaskId: string;

  beforeAll(async () => {
    pullTaskId = await createTask(t.app, t.auth, { firmwareId, mode: 'pull', timeoutSeconds: 3_600, name: 'pull over rest' });
    const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${pullTaskId}/release`, headers: t.auth, payload: { deviceIds: [PULLER] } });
    expect(release.json().added).toBe(1);
  });

  async function pullRecord() {
    return t.database.db.selectFrom('upgrade_records').selectAll().where('task_id', '=', pullTaskId).where('device_id', '=', PULLER).executeTakeFirstOrThrow();
  }

  it('for another version than the active one: not_found, and the record still waits', async () => {
    const [result] = await post({ messageType: 'REQUEST_FIRMWARE', deviceId: PULLER, messageId: 'ask-0', requestVersion: '3.0.0', timestamp: Date.now() });
    expect(result).toMatchObject({ index: 0, accepted: true, reply: { messageId: 'ask-0', deviceId: PULLER, success: false, code: 'not_found' } });
    expect(await pullRecord()).toMatchObject({ state: 'waiting', attempts: 0 });
  });

  it('with an active pull record: the firmware in results[0].reply, and the record becomes processing', async () => {
    const sentBefore = sink.received.length;
    const [result] = await post([{ messageType: 'REQUEST_FIRMWARE', deviceId: PULLER, messageId: 'ask-1', currentVersion: '1.0.0', timestamp: Date.now() }]);
    expect(result).toMatchObject({ index: 0, accepted: true });
    expect(result!.reply).toEqual({
      messageType: 'REQUEST_FIRMWARE_REPLY',
      messageId: 'ask-1',
      deviceId: PULLER,
      success: true,
      firmwareId,
      version: TARGET,
      url: `https://firmware.example.com/${PRODUCT}/${TARGET}.bin`,
      sign: 'ab'.repeat(32),
      signMethod: 'sha256',
      size: 1024,
      parameters: { channel: 'test' },
      timestamp: expect.any(Number),
      headers: { async: true },
    });
    expect(await pullRecord()).toMatchObject({ state: 'processing', attempts: 1, progress: 0 });
    const detail = (await t.app.inject({ method: 'GET', url: `/api/records/${(await pullRecord()).id}`, headers: t.auth })).json();
    expect(detail.events.map((e: { type: string }) => e.type)).toEqual(['released', 'pulled']);
    // the reply went to the caller, not through the connector
    expect(sink.received.length).toBe(sentBefore);

    // and the device's progress and report finish it
    expect(await post(progress(PULLER, { progress: 70 }))).toEqual([{ index: 0, accepted: true }]);
    expect(await post({ messageType: 'REPORT_FIRMWARE', deviceId: PULLER, version: TARGET, timestamp: Date.now() })).toEqual([{ index: 0, accepted: true }]);
    expect(await pullRecord()).toMatchObject({ state: 'success', progress: 100 });
    expect((await taskStats(t.app, t.auth, pullTaskId)).stats).toMatchObject({ total: 1, success: 1 });
  });

  it('without an active record: reply success false, code not_found; an unknown device is refused', async () => {
    const results = await post([
      { messageType: 'REQUEST_FIRMWARE', deviceId: 'rest-7', messageId: 'ask-2', timestamp: Date.now() },
      { messageType: 'REQUEST_FIRMWARE', deviceId: 'rest-nobody', messageId: 'ask-3', timestamp: Date.now() },
      { messageType: 'REQUEST_FIRMWARE', deviceId: 'rest-7' },
    ]);
    expect(results[0]).toMatchObject({ index: 0, accepted: true, reply: { messageId: 'ask-2', deviceId: 'rest-7', success: false, code: 'not_found' } });
    expect(results[0]!.reply).not.toHaveProperty('url');
    expect(results[1]).toEqual({ index: 1, accepted: false, code: 'unknown_device', message: 'device rest-nobody is not registered' });
    // without a messageId (JetLinks' RequestFirmwareMessage may leave it out), the reply carries one made for it
    expect(results[2]).toMatchObject({ index: 2, accepted: true, reply: { messageId: expect.any(String), deviceId: 'rest-7', success: false, code: 'not_found' } });
    expect(results[2]!.reply!.messageId).not.toBe('');
  });
});

describe('request limits', () => {
  it('more than 1,000 messages: 400 validation_error, nothing applied or counted', async () => {
    const countsBefore = await messageCounts();
    const messages = Array.from({ length: 1_001 }, (_, i) => ({ messageType: 'REPORT_FIRMWARE', deviceId: `bulk-${i}`, productId: PRODUCT, version: '1.0.0' }));
    const response = await t.app.inject({ method: 'POST', url: '/api/device-messages', headers: t.auth, payload: messages });
    expect(response.statusCode, response.body).toBe(400);
    expect(response.json()).toMatchObject({ statusCode: 400, code: 'validation_error' });
    const created = await t.database.db.selectFrom('devices').select('id').where('id', 'like', 'bulk-%').execute();
    expect(created).toHaveLength(0);
    expect(countsDelta(countsBefore, await messageCounts())).toEqual({});

    // exactly 1,000 is fine, and every one of them is applied
    const results = await post(messages.slice(0, 1_000));
    expect(results).toHaveLength(1_000);
    expect(results.filter((r) => r.accepted && r.code === undefined)).toHaveLength(1_000);
    const registered = await t.database.db.selectFrom('devices').select('id').where('id', 'like', 'bulk-%').execute();
    expect(registered).toHaveLength(1_000);
  });

  it('a body that is not JSON, an empty array or an empty body: 400 validation_error', async () => {
    const countsBefore = await messageCounts();
    const cases = [
      { payload: '{"messageType": "REPORT_FIRMWARE", ', type: 'application/json' },
      { payload: 'not json at all', type: 'application/json' },
      { payload: '[]', type: 'application/json' },
      { payload: '"REPORT_FIRMWARE"', type: 'application/json' },
    ];
    for (const { payload, type } of cases) {
      const response = await t.app.inject({ method: 'POST', url: '/api/device-messages', headers: { ...t.auth, 'content-type': type }, payload });
      expect(response.statusCode, `${payload}: ${response.body}`).toBe(400);
      expect(response.json().code, payload).toBe('validation_error');
    }
    const empty = await t.app.inject({ method: 'POST', url: '/api/device-messages', headers: { ...t.auth, 'content-type': 'application/json' } });
    expect(empty.statusCode, empty.body).toBe(400);
    expect(empty.json().code).toBe('validation_error');
    expect(countsDelta(countsBefore, await messageCounts())).toEqual({});
  });

  it('without an API key: 401, nothing applied', async () => {
    const response = await t.app.inject({
      method: 'POST',
      url: '/api/device-messages',
      payload: [{ messageType: 'REPORT_FIRMWARE', deviceId: 'rest-sneaky', productId: PRODUCT, version: '6.6.6' }],
    });
    expect(response.statusCode).toBe(401);
    expect(await t.database.db.selectFrom('devices').select('id').where('id', '=', 'rest-sneaky').executeTakeFirst()).toBeUndefined();
  });
});
