// Attempts, timeouts and retries over a real broker (docs/states-and-rules.md#attempts-timeouts-and-retries): a device that never answers is
// sent the upgrade again after timeout + backoff × 2^(n−1), up to maxAttempts, then fails with
// `timeout`; one that rejects the push fails as `rejected: …` unless the task retries rejections;
// responseTimeoutSeconds ends a silent attempt early; a device failure is retried when asked.
// The devices are a raw MQTT client whose every answer the test scripts.
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { createFirmware, createTask, registerDevices, waitForTask } from '../helpers/rollout.ts';

const PRODUCT = 'retry-p';
const TARGET = '2.0.0';
/** How early a send may arrive against the computed schedule (clock reads, broker hops). */
const EARLY_MS = 100;
/** How late it may arrive (job wake-up, a loaded machine). */
const LATE_MS = 2_500;
/**
 * Between one scripted device message and the next: two messages of one device that arrive
 * milliseconds apart may land in concurrent batches and be applied out of order, and these tests
 * are about attempts, not ordering.
 */
const STEP_MS = 200;

interface UpgradeMessage {
  messageId: string;
  deviceId: string;
  version: string;
}

interface Arrival {
  at: number;
  message: UpgradeMessage;
}

interface RecordJson {
  id: number;
  deviceId: string;
  state: string;
  progress: number;
  attempts: number;
  errorReason: string | null;
  startedAt: string | null;
  completedAt: string | null;
  events: Array<{ at: string; type: string; attempt: number; progress?: number; message?: string }>;
}

/** What a scripted device does with the n-th (from 1) upgrade message it receives. */
type Script = (message: UpgradeMessage, n: number) => void;

let broker: TestBroker;
let t: TestApp;
let client: MqttClient;
let firmwareId: string;
const arrivals = new Map<string, Arrival[]>();
const scripts = new Map<string, Script>();
const timers = new Set<NodeJS.Timeout>();

function publish(deviceId: string, suffix: string, body: object): void {
  client.publish(`/${PRODUCT}/${deviceId}/firmware/${suffix}`, JSON.stringify(body), { qos: 1 });
}

function later(ms: number, fn: () => void): void {
  const timer = setTimeout(() => {
    timers.delete(timer);
    fn();
  }, ms);
  timers.add(timer);
}

const reply = (deviceId: string, message: UpgradeMessage, success: boolean, text?: string) =>
  publish(deviceId, 'upgrade/reply', { messageId: message.messageId, success, ...(text ? { message: text } : {}) });

const report = (deviceId: string, body: { progress: number; complete: boolean; success: boolean; errorReason?: string }) =>
  publish(deviceId, 'upgrade/progress', { version: TARGET, timestamp: Date.now(), ...body });

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function recordOf(taskId: string, deviceId: string): Promise<RecordJson> {
  const list = await t.app.inject({ method: 'GET', url: `/api/tasks/${taskId}/records?deviceId=${deviceId}`, headers: t.auth });
  expect(list.statusCode, list.body).toBe(200);
  const [item] = list.json().items as Array<{ id: number }>;
  expect(item, `a record of ${deviceId}`).toBeDefined();
  const detail = await t.app.inject({ method: 'GET', url: `/api/records/${item!.id}`, headers: t.auth });
  expect(detail.statusCode, detail.body).toBe(200);
  return detail.json();
}

async function finalRecord(taskId: string, deviceId: string, timeoutMs?: number): Promise<RecordJson & { finalAt: number }> {
  return waitFor(
    `${deviceId}'s record to be final`,
    async () => {
      const record = await recordOf(taskId, deviceId);
      return ['success', 'failed', 'canceled'].includes(record.state) ? { ...record, finalAt: Date.now() } : undefined;
    },
    timeoutMs,
  );
}

/** A push task of the test firmware, released and pushed to `deviceIds` with their scripts. */
async function rollOut(body: Record<string, unknown>, devices: Record<string, Script>): Promise<string> {
  for (const [deviceId, script] of Object.entries(devices)) scripts.set(deviceId, script);
  const taskId = await createTask(t.app, t.auth, { firmwareId, ...body });
  const release = await t.app.inject({
    method: 'POST',
    url: `/api/tasks/${taskId}/release`,
    headers: t.auth,
    payload: { deviceIds: Object.keys(devices), push: true },
  });
  expect(release.statusCode, release.body).toBe(200);
  expect(release.json()).toMatchObject({ added: Object.keys(devices).length, skipped: {} });
  return taskId;
}

const silent: Script = () => {};
const types = (record: RecordJson) => record.events.map((e) => e.type);
const gaps = (list: Arrival[]) => list.slice(1).map((arrival, i) => arrival.at - list[i]!.at);

beforeAll(async () => {
  broker = await startBroker();
  t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url });
  client = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: 'retry-devices', reconnectPeriod: 0 });
  client.on('message', (topic, payload) => {
    const deviceId = topic.split('/')[2]!;
    const message = JSON.parse(payload.toString('utf8')) as UpgradeMessage;
    const list = arrivals.get(deviceId) ?? [];
    list.push({ at: Date.now(), message });
    arrivals.set(deviceId, list);
    scripts.get(deviceId)?.(message, list.length);
  });
  await client.subscribeAsync(`/${PRODUCT}/+/firmware/upgrade`, { qos: 1 });
  await registerDevices(t.app, t.auth, PRODUCT, [
    'silent-1',
    'reject-1',
    'reject-2',
    'reject-3',
    'noanswer-1',
    'slow-1',
    'flaky-1',
    'broken-1',
  ]);
  firmwareId = await createFirmware(t.app, t.auth, PRODUCT, TARGET, 2);
});

afterAll(async () => {
  for (const timer of timers) clearTimeout(timer);
  await client?.endAsync();
  await t?.close();
  await broker?.stop();
});

describe('a device that never answers', () => {
  it('is sent the upgrade maxAttempts times, after timeout + backoff × 2^(n−1), then fails with timeout', async () => {
    const timeoutMs = 1_000;
    const backoffMs = 1_000;
    const taskId = await rollOut(
      { timeoutSeconds: timeoutMs / 1000, retry: { maxAttempts: 3, backoffSeconds: backoffMs / 1000, on: ['timeout'] } },
      { 'silent-1': silent },
    );
    const record = await finalRecord(taskId, 'silent-1');
    const sends = arrivals.get('silent-1')!;
    expect(sends).toHaveLength(3);

    // attempt n+1 goes out timeout + backoff × 2^(n−1) after attempt n
    const expected = [timeoutMs + backoffMs, timeoutMs + 2 * backoffMs];
    const measured = gaps(sends);
    measured.forEach((gap, i) => {
      expect(gap, `gap ${i + 1}: ${measured.join(', ')} ms`).toBeGreaterThanOrEqual(expected[i]! - EARLY_MS);
      expect(gap, `gap ${i + 1}: ${measured.join(', ')} ms`).toBeLessThanOrEqual(expected[i]! + LATE_MS);
    });
    // the last attempt times out too, and then the record fails
    expect(record.finalAt - sends[2]!.at).toBeGreaterThanOrEqual(timeoutMs - EARLY_MS);

    // a fresh message id each attempt
    expect(new Set(sends.map((s) => s.message.messageId)).size).toBe(3);
    for (const send of sends) expect(send.message).toMatchObject({ deviceId: 'silent-1', version: TARGET });

    expect(record).toMatchObject({ state: 'failed', attempts: 3, errorReason: 'timeout', progress: 0 });
    expect(types(record)).toEqual([
      'released', 'queued',
      'sent', 'timeout', 'retry',
      'sent', 'timeout', 'retry',
      'sent', 'timeout', 'failed',
    ]);
    expect(record.events.filter((e) => e.type === 'sent').map((e) => e.attempt)).toEqual([1, 2, 3]);
    expect(record.events.filter((e) => e.type === 'timeout').map((e) => e.attempt)).toEqual([1, 2, 3]);
    const retries = record.events.filter((e) => e.type === 'retry');
    expect(retries.map((e) => e.attempt)).toEqual([1, 2]);
    expect(retries[0]!.message).toMatch(/^timeout; attempt 2 at /);
    expect(retries[1]!.message).toMatch(/^timeout; attempt 3 at /);
    expect(record.events.at(-1)).toMatchObject({ type: 'failed', attempt: 3, message: 'timeout' });

    // its only record final, the task completes (reviewed asynchronously)
    const task = await waitForTask(t.app, t.auth, taskId, (x) => x.state === 'completed', 5_000);
    expect(task.stats).toEqual({ total: 1, waiting: 0, processing: 0, success: 0, failed: 1, canceled: 0 });

    // nothing more is sent once the record failed
    await new Promise((resolve) => setTimeout(resolve, timeoutMs + backoffMs));
    expect(arrivals.get('silent-1')).toHaveLength(3);
  });
});

describe('a device that rejects the push', () => {
  it('fails as rejected with its message when the task does not retry rejections', async () => {
    const taskId = await rollOut(
      { timeoutSeconds: 30, retry: { maxAttempts: 3, backoffSeconds: 1, on: ['timeout', 'send_error', 'device_failure'] } },
      { 'reject-1': (message) => reply('reject-1', message, false, 'battery low') },
    );
    const record = await finalRecord(taskId, 'reject-1');
    expect(record).toMatchObject({ state: 'failed', attempts: 1, errorReason: 'rejected: battery low', progress: 0 });
    expect(types(record)).toEqual(['released', 'queued', 'sent', 'failed']);
    expect(record.events.at(-1)).toMatchObject({ attempt: 1, message: 'rejected: battery low' });
    expect(arrivals.get('reject-1')).toHaveLength(1);
  });

  it('is sent again when retry.on has rejected, and may then succeed', async () => {
    const taskId = await rollOut(
      { timeoutSeconds: 30, retry: { maxAttempts: 3, backoffSeconds: 1, on: ['rejected'] } },
      {
        'reject-2': (message, n) => {
          if (n === 1) return reply('reject-2', message, false, 'battery low');
          reply('reject-2', message, true);
          later(STEP_MS, () => report('reject-2', { progress: 50, complete: false, success: true }));
          later(2 * STEP_MS, () => report('reject-2', { progress: 100, complete: true, success: true }));
        },
      },
    );
    const record = await finalRecord(taskId, 'reject-2');
    expect(record).toMatchObject({ state: 'success', attempts: 2, errorReason: null, progress: 100 });
    expect(types(record)).toEqual(['released', 'queued', 'sent', 'retry', 'sent', 'acknowledged', 'progress', 'success']);
    expect(record.events[3]).toMatchObject({ type: 'retry', attempt: 1 });
    expect(record.events[3]!.message).toMatch(/^rejected: battery low; attempt 2 at /);
    const sends = arrivals.get('reject-2')!;
    expect(sends).toHaveLength(2);
    // a rejection is immediate: attempt 2 waits only the backoff
    expect(gaps(sends)[0]).toBeGreaterThanOrEqual(1_000 - EARLY_MS);
    expect(gaps(sends)[0]).toBeLessThanOrEqual(1_000 + LATE_MS);
  });

  it('fails as rejected after maxAttempts rejections', async () => {
    const taskId = await rollOut(
      { timeoutSeconds: 30, retry: { maxAttempts: 2, backoffSeconds: 1, on: ['rejected'] } },
      { 'reject-3': (message) => reply('reject-3', message, false, 'user declined') },
    );
    const record = await finalRecord(taskId, 'reject-3');
    expect(record).toMatchObject({ state: 'failed', attempts: 2, errorReason: 'rejected: user declined' });
    expect(types(record)).toEqual(['released', 'queued', 'sent', 'retry', 'sent', 'failed']);
    expect(arrivals.get('reject-3')).toHaveLength(2);
  });
});

describe('responseTimeoutSeconds', () => {
  it('ends an attempt with no answer at all after the response timeout, long before timeoutSeconds', async () => {
    const taskId = await rollOut(
      { timeoutSeconds: 30, responseTimeoutSeconds: 1, retry: { maxAttempts: 3, backoffSeconds: 1, on: ['send_error'] } },
      { 'noanswer-1': silent },
    );
    const record = await finalRecord(taskId, 'noanswer-1', 10_000);
    const sentAt = arrivals.get('noanswer-1')![0]!.at;
    expect(record.finalAt - sentAt).toBeGreaterThanOrEqual(1_000 - EARLY_MS);
    expect(record.finalAt - sentAt).toBeLessThan(1_000 + LATE_MS + 1_000);
    expect(record).toMatchObject({ state: 'failed', attempts: 1, errorReason: 'timeout: no response' });
    expect(types(record)).toEqual(['released', 'queued', 'sent', 'timeout', 'failed']);
    expect(record.events[3]).toMatchObject({ type: 'timeout', attempt: 1, message: 'no response' });
    expect(record.events[4]).toMatchObject({ type: 'failed', attempt: 1, message: 'timeout: no response' });
    expect(Date.parse(record.events[3]!.at) - Date.parse(record.events[2]!.at)).toBeGreaterThanOrEqual(1_000 - EARLY_MS);
  });

  it('does not end an attempt once the device has answered', async () => {
    const taskId = await rollOut(
      { timeoutSeconds: 30, responseTimeoutSeconds: 1, retry: { maxAttempts: 1, backoffSeconds: 1, on: [] } },
      {
        'slow-1': (message) => {
          reply('slow-1', message, true);
          later(2_500, () => report('slow-1', { progress: 100, complete: true, success: true }));
        },
      },
    );
    const record = await finalRecord(taskId, 'slow-1', 10_000);
    expect(record).toMatchObject({ state: 'success', attempts: 1, errorReason: null });
    expect(types(record)).toEqual(['released', 'queued', 'sent', 'acknowledged', 'success']);
  });
});

describe('a device that reports a failure', () => {
  it('is sent again when retry.on has device_failure, and succeeds on the second attempt', async () => {
    const taskId = await rollOut(
      { timeoutSeconds: 30, retry: { maxAttempts: 3, backoffSeconds: 1, on: ['device_failure'] } },
      {
        'flaky-1': (message, n) => {
          reply('flaky-1', message, true);
          if (n === 1) {
            later(STEP_MS, () => report('flaky-1', { progress: 20, complete: false, success: true }));
            later(2 * STEP_MS, () => report('flaky-1', { progress: 20, complete: false, success: false, errorReason: 'flash write error' }));
          } else {
            later(STEP_MS, () => report('flaky-1', { progress: 100, complete: true, success: true }));
          }
        },
      },
    );
    const record = await finalRecord(taskId, 'flaky-1');
    expect(record).toMatchObject({ state: 'success', attempts: 2, errorReason: null, progress: 100 });
    expect(types(record)).toEqual([
      'released', 'queued',
      'sent', 'acknowledged', 'progress', 'retry',
      'sent', 'acknowledged', 'success',
    ]);
    expect(record.events[5]).toMatchObject({ type: 'retry', attempt: 1 });
    expect(record.events[5]!.message).toMatch(/^flash write error; attempt 2 at /);
    expect(record.events.filter((e) => e.type === 'sent').map((e) => e.attempt)).toEqual([1, 2]);
    const sends = arrivals.get('flaky-1')!;
    expect(sends).toHaveLength(2);
    expect(sends[0]!.message.messageId).not.toBe(sends[1]!.message.messageId);
    const device = (await t.app.inject({ method: 'GET', url: '/api/devices/flaky-1', headers: t.auth })).json();
    expect(device.firmwareVersion).toBe(TARGET);
  });

  it('fails with the device reason when retry.on lacks device_failure', async () => {
    const taskId = await rollOut(
      { timeoutSeconds: 30, retry: { maxAttempts: 3, backoffSeconds: 1, on: ['timeout', 'rejected'] } },
      { 'broken-1': () => report('broken-1', { progress: 0, complete: false, success: false, errorReason: 'low storage' }) },
    );
    const record = await finalRecord(taskId, 'broken-1');
    expect(record).toMatchObject({ state: 'failed', attempts: 1, errorReason: 'low storage' });
    expect(types(record)).toEqual(['released', 'queued', 'sent', 'failed']);
    expect(arrivals.get('broken-1')).toHaveLength(1);
    const device = (await t.app.inject({ method: 'GET', url: '/api/devices/broken-1', headers: t.auth })).json();
    expect(device.firmwareVersion).toBe('1.0.0');
  });
});
