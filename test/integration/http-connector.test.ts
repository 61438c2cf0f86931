// The push rollout with the `http` connector (docs/device-protocol.md#the-http-connector): every UpgradeFirmwareMessage is POSTed
// to a platform receiver that checks its X-Otter-Signature, and the platform brings the devices'
// acknowledgements and progress back through POST /api/device-messages over real HTTP. A receiver
// answering 500 makes the attempt a send_error: sent again when the task retries send errors,
// failed with `send_error: …` once the attempts run out.
import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { allFinal, createFirmware, createTask, registerDevices, waitForTask } from '../helpers/rollout.ts';

const SECRET = 'secret';
const TARGET = '2.0.0';
const UPGRADE_FIELDS = ['messageType', 'productId', 'deviceId', 'messageId', 'firmwareId', 'version', 'url', 'sign', 'signMethod', 'size', 'parameters', 'timestamp'];

interface UpgradeRequest {
  messageType: string;
  productId: string;
  deviceId: string;
  messageId: string;
  firmwareId: string;
  version: string;
  url: string;
  sign: string | null;
  signMethod: string | null;
  size: number | null;
  parameters: Record<string, string>;
  timestamp: number;
}

/** How the platform answers a device's upgrade requests: `fail` is how many to answer 500 first. */
type Behaviour = { fail: number };

interface DeviceResult {
  index: number;
  accepted: boolean;
  code?: string;
  message?: string;
}

/** A platform that terminates the device protocol itself: checks signatures, plays the devices. */
class PlatformReceiver {
  readonly requests: UpgradeRequest[] = [];
  /** Requests whose signature did not verify (answered 401). */
  badSignatures = 0;
  /** Requests whose JSON lacked a contract field (answered 400). */
  readonly malformed: string[] = [];
  /** Device messages the app did not accept, with the reason it gave. */
  readonly refusals: Array<{ deviceId: string; result: DeviceResult }> = [];
  readonly behaviour = new Map<string, Behaviour>();
  private readonly server = http.createServer((request, response) => void this.handle(request, response));
  private readonly inFlight = new Set<Promise<void>>();
  url = '';
  /** Where the platform posts device messages back (the app's own HTTP address). */
  otterUrl = '';
  authorization = '';

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/otter`;
  }

  requestsFor(deviceId: string): UpgradeRequest[] {
    return this.requests.filter((r) => r.deviceId === deviceId);
  }

  private async handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks);
    const expected = Buffer.from(`sha256=${createHmac('sha256', SECRET).update(raw).digest('hex')}`);
    const given = Buffer.from(String(request.headers['x-otter-signature'] ?? ''));
    if (request.method !== 'POST' || given.length !== expected.length || !timingSafeEqual(given, expected)) {
      this.badSignatures += 1;
      response.writeHead(401).end();
      return;
    }
    const body = JSON.parse(raw.toString('utf8')) as UpgradeRequest;
    const missing = UPGRADE_FIELDS.filter((field) => !(field in body));
    if (body.messageType !== 'UPGRADE_FIRMWARE' || missing.length > 0 || !String(request.headers['content-type']).startsWith('application/json')) {
      this.malformed.push(`${body.messageType} ${body.deviceId}: missing ${missing.join(', ')}`);
      response.writeHead(400).end();
      return;
    }
    this.requests.push(body);
    const behaviour = this.behaviour.get(body.deviceId);
    if (behaviour && behaviour.fail > 0) {
      behaviour.fail -= 1;
      response.writeHead(500).end('device gateway down');
      return;
    }
    response.writeHead(202).end();
    // the device upgrades after the platform took the message, as a real one would
    const work = this.playDevice(body).finally(() => this.inFlight.delete(work));
    this.inFlight.add(work);
  }

  /** The device acknowledges, reports 50 %, then completes: two POSTs of device messages. */
  private async playDevice(upgrade: UpgradeRequest): Promise<void> {
    const { deviceId, messageId, version } = upgrade;
    await this.post(deviceId, [
      { messageType: 'UPGRADE_FIRMWARE_REPLY', deviceId, messageId, success: true },
      { messageType: 'UPGRADE_FIRMWARE_PROGRESS', deviceId, progress: 50, complete: false, success: true, version, timestamp: Date.now() },
    ]);
    await this.post(deviceId, [
      { messageType: 'UPGRADE_FIRMWARE_PROGRESS', deviceId, progress: 100, complete: true, success: true, version, timestamp: Date.now() },
    ]);
  }

  private async post(deviceId: string, messages: object[]): Promise<void> {
    const response = await fetch(`${this.otterUrl}/api/device-messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: this.authorization },
      body: JSON.stringify(messages),
    });
    const body = (await response.json()) as { results?: DeviceResult[] };
    if (response.status !== 200 || !body.results || body.results.length !== messages.length) {
      this.refusals.push({ deviceId, result: { index: -1, accepted: false, code: `http_${response.status}`, message: JSON.stringify(body) } });
      return;
    }
    for (const result of body.results) {
      if (!result.accepted || result.code !== undefined) this.refusals.push({ deviceId, result });
    }
  }

  async stop(): Promise<void> {
    await Promise.allSettled([...this.inFlight]);
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

interface RecordJson {
  id: number;
  deviceId: string;
  state: string;
  progress: number;
  attempts: number;
  errorReason: string | null;
}

describe('push rollout with the http connector', () => {
  let receiver: PlatformReceiver;
  let t: TestApp;

  beforeAll(async () => {
    receiver = new PlatformReceiver();
    await receiver.start();
    t = await buildTestApp(
      { ROLE: 'all', CONNECTOR: 'http', HTTP_CONNECTOR_URL: receiver.url, HTTP_CONNECTOR_SECRET: SECRET, PORT: '0', HOST: '127.0.0.1' },
      { listen: true },
    );
    receiver.otterUrl = `http://127.0.0.1:${(t.app.server.address() as AddressInfo).port}`;
    receiver.authorization = t.auth.authorization;
  });

  afterAll(async () => {
    await receiver?.stop();
    await t?.close();
  });

  async function records(taskId: string): Promise<RecordJson[]> {
    const response = await t.app.inject({ method: 'GET', url: `/api/tasks/${taskId}/records?pageSize=500`, headers: t.auth });
    expect(response.statusCode, response.body).toBe(200);
    return response.json().items as RecordJson[];
  }

  async function events(recordId: number): Promise<Array<{ type: string; attempt: number; progress?: number; message?: string }>> {
    return (await t.app.inject({ method: 'GET', url: `/api/records/${recordId}`, headers: t.auth })).json().events;
  }

  it('the receiver refuses a request whose signature does not verify', async () => {
    const body = JSON.stringify({ messageType: 'UPGRADE_FIRMWARE', deviceId: 'nobody' });
    const forged = await fetch(receiver.url, { method: 'POST', headers: { 'x-otter-signature': `sha256=${'0'.repeat(64)}` }, body });
    const unsigned = await fetch(receiver.url, { method: 'POST', body });
    const otherKey = await fetch(receiver.url, {
      method: 'POST',
      headers: { 'x-otter-signature': `sha256=${createHmac('sha256', 'not-the-secret').update(body).digest('hex')}` },
      body,
    });
    expect([forged.status, unsigned.status, otherKey.status]).toEqual([401, 401, 401]);
    expect(receiver.badSignatures).toBe(3);
    receiver.badSignatures = 0;
    expect(receiver.requests).toHaveLength(0);
  });

  it('50 devices: every request signed, progress back through POST /api/device-messages, all succeed', async () => {
    const product = 'http-p';
    const devices = Array.from({ length: 50 }, (_, i) => `http-${String(i + 1).padStart(2, '0')}`);
    await registerDevices(t.app, t.auth, product, devices, '1.0.0');
    const firmwareId = await createFirmware(t.app, t.auth, product, TARGET, 2);
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 30, retry: { maxAttempts: 1, backoffSeconds: 0, on: [] } });
    const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: true } });
    expect(release.statusCode, release.body).toBe(200);
    expect(release.json().added).toBe(50);

    const task = await waitForTask(t.app, t.auth, taskId, (x) => allFinal(x) && x.state === 'completed', 30_000);
    expect(task.stats).toEqual({ total: 50, waiting: 0, processing: 0, success: 50, failed: 0, canceled: 0 });

    expect(receiver.badSignatures).toBe(0);
    expect(receiver.malformed).toEqual([]);
    expect(receiver.refusals).toEqual([]);
    const ours = receiver.requests.filter((r) => r.productId === product);
    expect(ours).toHaveLength(50);
    expect(new Set(ours.map((r) => r.deviceId))).toEqual(new Set(devices));
    for (const request of ours) {
      expect(request).toMatchObject({
        messageType: 'UPGRADE_FIRMWARE',
        productId: product,
        firmwareId,
        version: TARGET,
        url: `https://firmware.example.com/${product}/${TARGET}.bin`,
        sign: 'ab'.repeat(32),
        signMethod: 'sha256',
        size: 1024,
        parameters: { channel: 'test' },
      });
      expect(request.messageId).toEqual(expect.any(String));
      expect(request.timestamp).toEqual(expect.any(Number));
    }

    const rows = await records(taskId);
    expect(rows).toHaveLength(50);
    for (const row of rows) expect(row).toMatchObject({ state: 'success', progress: 100, attempts: 1, errorReason: null });
    expect((await events(rows[0]!.id)).map((e) => e.type)).toEqual(['released', 'queued', 'sent', 'acknowledged', 'progress', 'success']);
    const device = (await t.app.inject({ method: 'GET', url: `/api/devices/${devices[7]}`, headers: t.auth })).json();
    expect(device).toMatchObject({ firmwareVersion: TARGET, activeRecord: null });

    // the device messages were counted as accepted: one ack and two progress reports per device
    const counts = new Map<string, number>();
    for (const value of (await t.otter.metrics.deviceMessages.get()).values) {
      if (value.labels.result === 'accepted') counts.set(String(value.labels.type), value.value);
    }
    expect(counts.get('UPGRADE_FIRMWARE_REPLY')).toBe(50);
    expect(counts.get('UPGRADE_FIRMWARE_PROGRESS')).toBe(100);
    const sent = (await t.otter.metrics.messagesSent.get()).values.find((v) => v.labels.type === 'UPGRADE_FIRMWARE' && v.labels.result === 'ok');
    expect(sent?.value).toBe(50);
  });

  it('a 500 from the receiver is a send_error: sent again once, or failed when it keeps answering 500', async () => {
    const product = 'http-q';
    const flaky = 'http-flaky';
    const broken = 'http-broken';
    const fine = 'http-fine';
    receiver.behaviour.set(flaky, { fail: 1 });
    receiver.behaviour.set(broken, { fail: Number.POSITIVE_INFINITY });
    await registerDevices(t.app, t.auth, product, [flaky, broken, fine], '1.0.0');
    const firmwareId = await createFirmware(t.app, t.auth, product, TARGET, 2);
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 30, retry: { maxAttempts: 2, backoffSeconds: 0.2, on: ['send_error'] } });
    const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: true } });
    expect(release.json().added).toBe(3);

    const task = await waitForTask(t.app, t.auth, taskId, (x) => allFinal(x) && x.state === 'completed', 20_000);
    expect(task.stats).toMatchObject({ total: 3, success: 2, failed: 1 });
    expect(receiver.badSignatures).toBe(0);
    expect(receiver.refusals).toEqual([]);

    const byDevice = new Map((await records(taskId)).map((r) => [r.deviceId, r]));
    expect(byDevice.get(fine)).toMatchObject({ state: 'success', attempts: 1, errorReason: null });
    expect(byDevice.get(flaky)).toMatchObject({ state: 'success', attempts: 2, progress: 100, errorReason: null });
    expect(byDevice.get(broken)).toMatchObject({ state: 'failed', attempts: 2, errorReason: 'send_error: HTTP connector answered 500' });
    expect(byDevice.get(broken)!.errorReason!.startsWith('send_error:')).toBe(true);

    // each attempt was a signed request: one for the fine device, two for each of the others
    expect(receiver.requestsFor(fine)).toHaveLength(1);
    expect(receiver.requestsFor(flaky)).toHaveLength(2);
    expect(receiver.requestsFor(broken)).toHaveLength(2);
    const [first, second] = receiver.requestsFor(flaky);
    expect(second!.messageId).not.toBe(first!.messageId);

    const flakyEvents = await events(byDevice.get(flaky)!.id);
    expect(flakyEvents.map((e) => e.type)).toEqual(['released', 'queued', 'sent', 'retry', 'sent', 'acknowledged', 'progress', 'success']);
    expect(flakyEvents[3]!.message).toMatch(/^send_error: HTTP connector answered 500; attempt 2 at /);
    const brokenEvents = await events(byDevice.get(broken)!.id);
    expect(brokenEvents.map((e) => e.type)).toEqual(['released', 'queued', 'sent', 'retry', 'sent', 'failed']);
    expect(brokenEvents.at(-1)).toMatchObject({ attempt: 2, message: 'send_error: HTTP connector answered 500' });

    const errors = (await t.otter.metrics.messagesSent.get()).values.find((v) => v.labels.type === 'UPGRADE_FIRMWARE' && v.labels.result === 'error');
    expect(errors?.value).toBe(3);
  });
});
