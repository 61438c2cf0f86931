// Device identity at the broker, with the repository's mosquitto.conf (tools/broker.ts) and Otter as
// the devices' CA: no certificate, no connection; devices with credentials from Otter (issued, or for
// their own CSR) upgrade end to end over TLS; a device publishing on another's topics changes nothing
// (the broker refuses it); a revoked device is refused once the broker has re-read the CRL (SIGHUP).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCertificateAuthority, generateDeviceKey, issueCertificate, loadDeviceCa, newSerial } from '../../core/device-certificates.ts';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { createFirmware, createTask, registerDevices, waitForTask } from '../helpers/rollout.ts';

const PRODUCT = 'meter';
const A = 'meter-a';
const B = 'meter-b';
const C = 'meter-c'; // keeps its own key: a CSR
const GATEWAY = 'meter-gw';
const TARGET = '2.0.0';

interface Credentials {
  cert: string;
  key: string;
}

let broker: TestBroker;
let t: TestApp;
let dir: string;
const credentials = new Map<string, Credentials>();
const open: MqttClient[] = [];

/** A TLS connection to the device listener; rejects when the broker refuses it (TLS or CONNACK). */
function connectDevice(identity: Credentials | undefined, clientId?: string): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(broker.devices.url, {
      protocolVersion: 5,
      ...(clientId ? { clientId } : {}),
      ca: readFileSync(broker.devices.caFile),
      ...identity,
      reconnectPeriod: 0,
      connectTimeout: 5_000,
    });
    const refuse = (error: Error) => {
      client.end(true);
      reject(error);
    };
    client.once('error', refuse);
    client.once('close', () => refuse(new Error('connection closed before CONNACK')));
    client.once('connect', () => {
      client.removeAllListeners('error');
      client.removeAllListeners('close');
      client.on('error', () => {});
      open.push(client);
      resolve(client);
    });
  });
}

/** Whether the broker lets `identity` in, after trying for up to `ms` until the answer is `expected`. */
async function admitted(identity: Credentials | undefined, expected: boolean, ms = 5_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    const result = await connectDevice(identity).then(async (client) => {
      await client.endAsync();
      return true;
    }, () => false);
    if (result === expected || Date.now() > deadline) return result;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Answers every upgrade pushed to the device with a final success (unless `hold`). */
function answerUpgrades(client: MqttClient, deviceId: string, options: { hold?: boolean } = {}): { received: string[] } {
  const seen = { received: [] as string[] };
  client.on('message', (topic, payload) => {
    seen.received.push(topic);
    if (options.hold || topic !== `/${PRODUCT}/${deviceId}/firmware/upgrade`) return;
    const upgrade = JSON.parse(payload.toString()) as { version: string };
    client.publish(`/${PRODUCT}/${deviceId}/firmware/upgrade/progress`, JSON.stringify({ progress: 100, complete: true, success: true, version: upgrade.version, timestamp: Date.now() }), { qos: 1 });
  });
  return seen;
}

async function record(deviceId: string) {
  return t.database.db.selectFrom('upgrade_records').select(['state', 'progress']).where('device_id', '=', deviceId).executeTakeFirstOrThrow();
}

beforeAll(async () => {
  broker = await startBroker();
  t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url, ...broker.serviceEnv, ...broker.deviceCaEnv });
  dir = await mkdtemp(path.join(os.tmpdir(), 'otter-broker-identity-'));
  await registerDevices(t.app, t.auth, PRODUCT, [A, B, C, GATEWAY]);

  const issued = await t.app.inject({ method: 'POST', url: '/api/devices/credentials', headers: t.auth, payload: { deviceIds: [A, B, GATEWAY] } });
  expect(issued.statusCode, issued.body).toBe(200);
  for (const item of issued.json().items as Array<{ deviceId: string; certificate: string; privateKey: string }>) {
    credentials.set(item.deviceId, { cert: item.certificate, key: item.privateKey });
  }
  const keyFile = path.join(dir, 'c.key');
  execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-subj', `/CN=${C}`, '-out', path.join(dir, 'c.csr')], { stdio: 'ignore' });
  const signed = await t.app.inject({ method: 'POST', url: '/api/devices/credentials', headers: t.auth, payload: { deviceId: C, csr: await readFile(path.join(dir, 'c.csr'), 'utf8') } });
  expect(signed.statusCode, signed.body).toBe(200);
  credentials.set(C, { cert: signed.json().certificate, key: await readFile(keyFile, 'utf8') });
});

afterAll(async () => {
  for (const client of open) client.end(true);
  await t?.close();
  await broker?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('the device listener', () => {
  it('refuses a client without a certificate, and one whose certificate another CA signed', async () => {
    expect(await admitted(undefined, false)).toBe(false);
    const stranger = await createCertificateAuthority('not the device CA', 1);
    const ca = loadDeviceCa(stranger.certificatePem, stranger.privateKeyPem);
    const key = await generateDeviceKey();
    const cert = await issueCertificate(ca, { commonName: A, publicKeyDer: key.publicKeyDer, serialHex: newSerial(), notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 86_400_000), profile: { kind: 'device' } });
    expect(await admitted({ cert, key: key.privateKeyPem }, false)).toBe(false);
    // the platform listener takes no anonymous client either
    await expect(mqtt.connectAsync(broker.plainUrl, { reconnectPeriod: 0, connectTimeout: 5_000 })).rejects.toThrow(/Not authorized/i);
  });

  it('gives each device its id as client id, so no device can take over another\'s session', async () => {
    // as JetLinks devices do, A uses its device id as client id
    const a = await connectDevice(credentials.get(A), A);
    const closed = new Promise<void>((resolve) => a.once('close', () => resolve()));
    // B asks for A's client id; the broker uses B's own instead
    const b = await new Promise<MqttClient>((resolve, reject) => {
      const client = mqtt.connect(broker.devices.url, { protocolVersion: 5, clientId: A, ca: readFileSync(broker.devices.caFile), ...credentials.get(B), reconnectPeriod: 0 });
      open.push(client);
      client.once('connect', () => resolve(client));
      client.once('error', reject);
    });
    const tookOver = await Promise.race([closed.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 1_000))]);
    expect(tookOver).toBe(false);
    expect(a.connected).toBe(true);
    await Promise.all([a.endAsync(), b.endAsync()]);
  });
});

describe('devices with credentials from Otter', () => {
  it('upgrade end to end; a device publishing on another\'s topic changes nothing of it', async () => {
    const a = await connectDevice(credentials.get(A));
    const b = await connectDevice(credentials.get(B));
    const c = await connectDevice(credentials.get(C));
    // A asks for every device's topics: the broker grants the subscription but delivers only its own
    await a.subscribeAsync('/+/+/firmware/#', { qos: 1 });
    await b.subscribeAsync(`/${PRODUCT}/${B}/firmware/upgrade`, { qos: 1 });
    await c.subscribeAsync(`/${PRODUCT}/${C}/firmware/upgrade`, { qos: 1 });
    const seenByA = answerUpgrades(a, A);
    const seenByB = answerUpgrades(b, B, { hold: true });
    answerUpgrades(c, C);

    const taskId = await createTask(t.app, t.auth, { firmwareId: await createFirmware(t.app, t.auth, PRODUCT, TARGET), timeoutSeconds: 600 });
    const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { deviceIds: [A, B, C], push: true } });
    expect(release.statusCode, release.body).toBe(200);
    await waitForTask(t.app, t.auth, taskId, (task) => task.stats.success === 2 && task.stats.processing === 1, 20_000);
    expect(seenByB.received).toEqual([`/${PRODUCT}/${B}/firmware/upgrade`]);

    // A claims B's upgrade finished and reports a version for B: the broker answers "not authorized"
    // (PUBACK reason 0x87) and forwards nothing; then A reports on its own topic, which the service applies
    await expect(a.publishAsync(`/${PRODUCT}/${B}/firmware/upgrade/progress`, JSON.stringify({ progress: 100, complete: true, success: true, version: TARGET, timestamp: Date.now() }), { qos: 1 }))
      .rejects.toThrow(/Not authorized/);
    await expect(a.publishAsync(`/${PRODUCT}/${B}/firmware/report`, JSON.stringify({ version: '6.6.6', timestamp: Date.now() }), { qos: 1 }))
      .rejects.toThrow(/Not authorized/);
    // at QoS 0 there is no answer at all: dropped silently
    await a.publishAsync(`/${PRODUCT}/${B}/firmware/upgrade/progress`, JSON.stringify({ progress: 100, complete: true, success: true, version: TARGET, timestamp: Date.now() }), { qos: 0 });
    await a.publishAsync(`/${PRODUCT}/${A}/firmware/report`, JSON.stringify({ version: TARGET, properties: { marker: 'after-the-spoof' }, timestamp: Date.now() }), { qos: 1 });
    const deadline = Date.now() + 10_000;
    for (;;) {
      const device = (await t.app.inject({ url: `/api/devices/${A}`, headers: t.auth })).json() as { firmwareProperties: Record<string, unknown> | null };
      if (device.firmwareProperties?.marker === 'after-the-spoof') break;
      expect(Date.now(), 'A\'s own report was not applied').toBeLessThan(deadline);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(await record(B)).toEqual({ state: 'processing', progress: 0 });
    const deviceB = (await t.app.inject({ url: `/api/devices/${B}`, headers: t.auth })).json() as { firmwareVersion: string };
    expect(deviceB.firmwareVersion).toBe('1.0.0');
    // A heard nothing of B's and C's topics, only its own (its upgrade, and its own messages)
    expect(seenByA.received.every((topic) => topic.startsWith(`/${PRODUCT}/${A}/`))).toBe(true);
    expect(seenByA.received).toContain(`/${PRODUCT}/${A}/firmware/upgrade`);

    // B answers for itself
    await b.publishAsync(`/${PRODUCT}/${B}/firmware/upgrade/progress`, JSON.stringify({ progress: 100, complete: true, success: true, version: TARGET, timestamp: Date.now() }), { qos: 1 });
    const done = await waitForTask(t.app, t.auth, taskId, (task) => task.state === 'completed', 20_000);
    expect(done.stats).toMatchObject({ total: 3, success: 3, failed: 0 });
    await Promise.all([a, b, c].map((client) => client.endAsync()));
  });

  it('a gateway reaches its child devices\' topics; another device does not', async () => {
    const spy = await mqtt.connectAsync(broker.url, { protocolVersion: 5, reconnectPeriod: 0 });
    open.push(spy);
    const heard: string[] = [];
    spy.on('message', (topic) => heard.push(topic));
    await spy.subscribeAsync(['/+/+/child/+/firmware/#', '/+/+/child-reply/+/firmware/#'], { qos: 1 });
    const b = await connectDevice(credentials.get(B));
    const gateway = await connectDevice(credentials.get(GATEWAY));
    const body = JSON.stringify({ version: '1.0.0', timestamp: Date.now() });
    await expect(b.publishAsync(`/${PRODUCT}/${GATEWAY}/child/kid-1/firmware/report`, body, { qos: 1 })).rejects.toThrow(/Not authorized/);
    await gateway.publishAsync(`/${PRODUCT}/${GATEWAY}/child/kid-1/firmware/report`, body, { qos: 1 });
    await gateway.publishAsync(`/${PRODUCT}/${GATEWAY}/child-reply/kid-1/firmware/report`, body, { qos: 1 });
    const deadline = Date.now() + 5_000;
    while (heard.length < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(heard).toEqual([`/${PRODUCT}/${GATEWAY}/child/kid-1/firmware/report`, `/${PRODUCT}/${GATEWAY}/child-reply/kid-1/firmware/report`]);
    await Promise.all([b, gateway, spy].map((client) => client.endAsync()));
  });
});

describe('revocation', () => {
  it('refuses a revoked device once the broker has re-read the CRL (SIGHUP); the others still connect', async () => {
    const revoked = await t.app.inject({ method: 'POST', url: `/api/devices/${A}/credentials/revoke`, headers: t.auth });
    expect(revoked.statusCode, revoked.body).toBe(200);
    expect(revoked.json()).toEqual({ deviceId: A, revoked: 1 });

    // the broker reads the CRL file at start and on SIGHUP only: until then A still gets in
    const before = await connectDevice(credentials.get(A));
    await broker.reload();
    // a connection opened before stays until it closes (the CRL is checked at the TLS handshake)
    expect(before.connected).toBe(true);
    await before.publishAsync(`/${PRODUCT}/${A}/firmware/report`, JSON.stringify({ version: TARGET, timestamp: Date.now() }), { qos: 1 });
    await before.endAsync();
    expect(await admitted(credentials.get(A), false)).toBe(false);
    expect(await admitted(credentials.get(B), true)).toBe(true);
    expect(await admitted(credentials.get(C), true)).toBe(true);
  });

  it('refuses a deleted device after the reload', async () => {
    expect(await admitted(credentials.get(C), true)).toBe(true);
    const deleted = await t.app.inject({ method: 'DELETE', url: `/api/devices/${C}`, headers: t.auth });
    expect(deleted.statusCode).toBe(204);
    await broker.reload();
    expect(await admitted(credentials.get(C), false)).toBe(false);
  });
});
