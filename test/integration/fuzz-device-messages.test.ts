// 10,000 fuzzed device messages through the running service — half over REST, half over MQTT:
// nothing crashes, no 5xx, every broken message is refused and changes nothing, and the service
// still applies a good message afterwards.
import fc from 'fast-check';
import mqtt from 'mqtt';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { createFirmware, createTask, registerDevices, waitForTask } from '../helpers/rollout.ts';

const PRODUCT = 'fuzz';
const DEVICES = ['fz-1', 'fz-2', 'fz-3', 'fz-4'];
const TYPES = ['REPORT_FIRMWARE', 'REQUEST_FIRMWARE', 'UPGRADE_FIRMWARE_REPLY', 'UPGRADE_FIRMWARE_PROGRESS', 'READ_FIRMWARE_REPLY'];
const SUFFIXES = ['firmware/report', 'firmware/pull', 'firmware/upgrade/reply', 'firmware/upgrade/progress', 'firmware/read/reply'];

/** A message that must be refused: a valid shape with one field broken. */
const brokenMessage = fc.record({
  messageType: fc.constantFrom(...TYPES),
  deviceId: fc.oneof(fc.constantFrom(...DEVICES), fc.constant('unknown-device'), fc.string({ maxLength: 70 })),
  version: fc.oneof(fc.constant(undefined), fc.integer(), fc.constant(''), fc.string({ minLength: 65, maxLength: 80 })),
  progress: fc.oneof(fc.integer({ min: 101, max: 10_000 }), fc.integer({ min: -1000, max: -1 }), fc.string()),
  success: fc.oneof(fc.string(), fc.integer(), fc.constant(null)),
  complete: fc.oneof(fc.string(), fc.integer()),
  messageId: fc.oneof(fc.integer(), fc.constant(''), fc.constant(undefined)),
  timestamp: fc.oneof(fc.constant(-5), fc.constant('soon'), fc.constant(2 ** 70)),
}).map((m) => Object.fromEntries(Object.entries(m).filter(([, v]) => v !== undefined)));

/** Anything at all. */
const anyMessage = fc.oneof(
  fc.jsonValue(),
  fc.record({ messageType: fc.oneof(fc.constantFrom(...TYPES), fc.string()), deviceId: fc.oneof(fc.constantFrom(...DEVICES), fc.string()) }, { requiredKeys: [] }),
);

describe('fuzzed device messages', () => {
  let broker: TestBroker;
  let t: TestApp;
  let taskId: string;

  async function fingerprint(): Promise<string> {
    const { rows } = await sql<Record<string, unknown>>`
      SELECT (SELECT count(*) FROM devices) AS devices,
             (SELECT string_agg(id || ':' || coalesce(firmware_version, '') || ':' || coalesce(report_timestamp::text, ''), ',' ORDER BY id) FROM devices) AS versions,
             (SELECT string_agg(id || ':' || state || ':' || progress || ':' || attempts || ':' || revision, ',' ORDER BY id) FROM upgrade_records) AS records,
             (SELECT count(*) FROM record_events WHERE type <> 'ignored') AS events,
             (SELECT waiting || '/' || processing || '/' || success || '/' || failed FROM upgrade_tasks WHERE id = ${taskId}) AS stats`.execute(t.database.db);
    return JSON.stringify(rows[0]);
  }

  function refusedCount(text: string): number {
    return text.split('\n').filter((l) => l.startsWith('otter_device_messages_total{') && l.includes('result="refused"')).reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  }

  beforeAll(async () => {
    broker = await startBroker();
    t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url });
    await registerDevices(t.app, t.auth, PRODUCT, DEVICES);
    const firmwareId = await createFirmware(t.app, t.auth, PRODUCT);
    taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 600 });
    await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: true } });
    await waitForTask(t.app, t.auth, taskId, (x) => x.stats.processing === DEVICES.length, 20_000);
  });

  afterAll(async () => {
    await t?.close();
    await broker?.stop();
  });

  it('5,000 over REST: broken ones are all refused and change nothing; random ones never 5xx', async () => {
    const before = await fingerprint();
    const broken = fc.sample(brokenMessage, { seed: 7, numRuns: 3_000 });
    for (let i = 0; i < broken.length; i += 1_000) {
      const response = await t.app.inject({ method: 'POST', url: '/api/device-messages', headers: t.auth, payload: broken.slice(i, i + 1_000) });
      expect(response.statusCode).toBe(200);
      const results = response.json().results as Array<{ accepted: boolean; code?: string }>;
      const accepted = results.filter((r) => r.accepted);
      expect(accepted, JSON.stringify(broken[i + results.findIndex((r) => r.accepted)])).toEqual([]);
    }
    expect(await fingerprint()).toBe(before);

    const random = fc.sample(anyMessage, { seed: 8, numRuns: 2_000 });
    for (let i = 0; i < random.length; i += 500) {
      const response = await t.app.inject({ method: 'POST', url: '/api/device-messages', headers: t.auth, payload: random.slice(i, i + 500) });
      expect(response.statusCode, response.body.slice(0, 300)).toBeLessThan(500);
    }
  });

  it('5,000 over MQTT: refused and counted, nothing changes, and a good message still works', async () => {
    const client = await mqtt.connectAsync(broker.url, { protocolVersion: 5 });
    try {
      const before = await fingerprint();
      const refusedBefore = refusedCount((await t.app.inject({ url: '/metrics', headers: t.auth })).body);
      const payloads = fc.sample(
        fc.tuple(
          // unknown topics the platform subscribes to (two or more levels under firmware/)
          fc.constantFrom(...SUFFIXES, 'firmware/upgrade/status', 'firmware/x/y/z'),
          fc.oneof(fc.constantFrom(...DEVICES), fc.constant('ghost')),
          fc.oneof(brokenMessage.map((m) => JSON.stringify(m)), fc.string(), fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b))),
        ),
        { seed: 9, numRuns: 5_000 },
      );
      await Promise.all(payloads.map(([suffix, device, payload]) => client.publishAsync(`/${PRODUCT}/${device}/${suffix}`, payload, { qos: 1 })));
      const deadline = Date.now() + 30_000;
      let refused = refusedBefore;
      while (refused - refusedBefore < payloads.length && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        refused = refusedCount((await t.app.inject({ url: '/metrics', headers: t.auth })).body);
      }
      expect(refused - refusedBefore).toBe(payloads.length);
      expect(await fingerprint()).toBe(before);

      // still alive: a good final report completes an upgrade
      await client.publishAsync(`/${PRODUCT}/fz-1/firmware/upgrade/progress`, JSON.stringify({ progress: 100, complete: true, success: true, version: '2.0.0', timestamp: Date.now() }), { qos: 1 });
      const task = await waitForTask(t.app, t.auth, taskId, (x) => x.stats.success === 1, 10_000);
      expect(task.stats.processing).toBe(DEVICES.length - 1);
    } finally {
      await client.endAsync();
    }
  });
});
