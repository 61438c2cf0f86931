// Oversized device messages: a 10 MB and a 100 MB MQTT payload and a report with 10,000 properties
// are refused too_large (counted), the worker process that receives them stays ready with its RSS
// under 300 MB (sampled all along), and a device upgrading meanwhile succeeds. The same limits hold
// for POST /api/device-messages, and a device's long errorReason is cut, not refused.
import { readFileSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { envFor, spawnOtter, type OtterProcess } from '../helpers/processes.ts';
import { createFirmware, createTask, registerDevices, waitForTask, allFinal } from '../helpers/rollout.ts';
import { Fleet } from '../../tools/fleet.ts';

const PRODUCT = 'sizes';
const UPGRADING = 'size-upgrading';
const ATTACKER = 'size-attacker';
const RSS_LIMIT_MB = 300;

let broker: TestBroker;
let t: TestApp;
let worker: OtterProcess;
let attacker: MqttClient;
let fleet: Fleet;

/** Resident set size of a process, in MB (Linux). */
function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

async function workerMetrics(): Promise<string> {
  const response = await fetch(`${worker.baseUrl}/metrics`, { headers: t.auth });
  expect(response.status).toBe(200);
  return response.text();
}

/** otter_device_messages_total{result="refused",reason} of the worker, by message type. */
async function refusedByType(reason: string): Promise<Record<string, number>> {
  const text = await workerMetrics();
  const out: Record<string, number> = {};
  for (const match of text.matchAll(/^otter_device_messages_total\{([^}]*)\} (\d+)$/gm)) {
    const labels = Object.fromEntries([...match[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (labels.result === 'refused' && labels.reason === reason) out[labels.type!] = (out[labels.type!] ?? 0) + Number(match[2]);
  }
  return out;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

beforeAll(async () => {
  broker = await startBroker();
  t = await buildTestApp({ ROLE: 'api', MQTT_URL: broker.url });
  worker = await spawnOtter(envFor(t.config, { ROLE: 'worker' }));
  await registerDevices(t.app, t.auth, PRODUCT, [UPGRADING, ATTACKER]);
  attacker = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: 'size-attacker', reconnectPeriod: 0 });
});

afterAll(async () => {
  await fleet?.stop();
  await attacker?.endAsync();
  await worker?.stop('SIGKILL');
  await t?.close();
  await broker?.stop();
});

describe('device message size limits', () => {
  it('10 MB, 100 MB and 10,000-property messages are refused too_large; the worker stays small and ready; an upgrade succeeds meanwhile', async () => {
    const idleRss = rssMb(worker.child.pid!);
    let peakRss = idleRss;
    const sampler = setInterval(() => {
      try {
        peakRss = Math.max(peakRss, rssMb(worker.child.pid!));
      } catch {
        // the process is gone: the assertions below say so
      }
    }, 50);
    try {
      // one device upgrades while the other sends the large messages: its progress spans the attack
      fleet = new Fleet({ mqttUrl: broker.url, productId: PRODUCT, deviceIds: [UPGRADING], progressSteps: 20, stepMs: 250, reportOnStart: false });
      await fleet.start();
      const firmwareId = await createFirmware(t.app, t.auth, PRODUCT);
      const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 120 });
      const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { deviceIds: [UPGRADING], push: true } });
      expect(release.json().added, release.body).toBe(1);
      await waitFor('the upgrade to start', async () => fleet.stats.upgradesReceived > 0);

      const tenMb = Buffer.alloc(10 * 1024 * 1024, 0x20);
      const hundredMb = Buffer.alloc(100 * 1024 * 1024, 0x20);
      // a report with 10,000 properties (about 120 KB: over the payload limit on its own)
      const manyProperties = JSON.stringify({ version: '1.0.0', properties: Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`p${i}`, i])) });
      // 65 short properties fit in the payload limit: the decoder's properties limit refuses them
      const sixtyFive = JSON.stringify({ version: '1.0.0', properties: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`p${i}`, i])) });
      await attacker.publishAsync(`/${PRODUCT}/${ATTACKER}/firmware/report`, tenMb, { qos: 1 });
      await attacker.publishAsync(`/${PRODUCT}/${ATTACKER}/firmware/upgrade/progress`, hundredMb, { qos: 1 });
      await attacker.publishAsync(`/${PRODUCT}/${ATTACKER}/firmware/report`, manyProperties, { qos: 1 });
      await attacker.publishAsync(`/${PRODUCT}/${ATTACKER}/firmware/report`, sixtyFive, { qos: 1 });

      const refused = await waitFor('four too_large refusals', async () => {
        const byType = await refusedByType('too_large');
        return (byType.REPORT_FIRMWARE ?? 0) + (byType.UPGRADE_FIRMWARE_PROGRESS ?? 0) >= 4 ? byType : undefined;
      });
      // the 100 MB one did reach the service (the broker passes it) and was refused as progress
      expect(refused).toEqual({ REPORT_FIRMWARE: 3, UPGRADE_FIRMWARE_PROGRESS: 1 });
      expect((await fetch(`${worker.baseUrl}/health/ready`)).status).toBe(200);

      const task = await waitForTask(t.app, t.auth, taskId, allFinal, 60_000);
      expect(task.stats).toMatchObject({ total: 1, success: 1 });
      // nothing of the attacker's was stored: no report, its version as registered
      const device = await t.app.inject({ url: `/api/devices/${ATTACKER}`, headers: t.auth });
      expect(device.json()).toMatchObject({ firmwareVersion: '1.0.0' });
      expect((await fetch(`${worker.baseUrl}/health/ready`)).status).toBe(200);
    } finally {
      clearInterval(sampler);
    }
    console.log(`worker RSS: ${idleRss.toFixed(0)} MB before, ${peakRss.toFixed(0)} MB at most while taking the 10 MB and 100 MB payloads`);
    expect(peakRss).toBeLessThan(RSS_LIMIT_MB);
  });

  it('POST /api/device-messages: the same limits for each message', async () => {
    const manyProperties = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`p${i}`, i]));
    const response = await t.app.inject({
      method: 'POST',
      url: '/api/device-messages',
      headers: t.auth,
      payload: [
        { messageType: 'REPORT_FIRMWARE', deviceId: ATTACKER, version: '9.9.9', properties: manyProperties },
        { messageType: 'REPORT_FIRMWARE', deviceId: ATTACKER, version: '9.9.9', properties: { blob: 'x'.repeat(9_000) } },
        { messageType: 'UPGRADE_FIRMWARE_PROGRESS', deviceId: ATTACKER, progress: 10, complete: false, success: true, version: '2.0.0', errorReason: 'e'.repeat(50_000) },
      ],
    });
    expect(response.statusCode, response.body).toBe(200);
    const results = response.json().results as Array<{ accepted: boolean; code?: string }>;
    expect(results[0]).toMatchObject({ accepted: false, code: 'too_large' });
    expect(results[1]).toMatchObject({ accepted: false, code: 'too_large' });
    // a long errorReason is cut, not refused: this one fails for another reason (no upgrade)
    expect(results[2]?.code).not.toBe('too_large');
    expect(results[2]?.code).not.toBe('invalid_message');
    const device = await t.app.inject({ url: `/api/devices/${ATTACKER}`, headers: t.auth });
    expect(device.json()).toMatchObject({ firmwareVersion: '1.0.0' });
  });
});
