// The service's own connection to the broker over TLS: a Mosquitto TLS listener whose certificate a
// CA made here with openssl signed. With that CA (MQTT_CA_FILE) and a client certificate the service
// connects over mqtts:// and works; a broker whose certificate another CA signed is refused, and the
// service does not start, with one line naming the broker.
import { execFileSync, spawn } from 'node:child_process';
import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../core/config.ts';
import { DependencyError } from '../../core/errors.ts';
import { createMqttConnector } from '../../protocols/mqtt-connector.ts';
import { createLogger } from '../../service/logger.ts';
import { spawnMosquitto, type MosquittoProcess } from '../../tools/broker.ts';
import { freePort } from '../../tools/ports.ts';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { TEST_API_KEY, TEST_REDIS_URL } from '../helpers/env.ts';
import { registerDevices } from '../helpers/rollout.ts';

let dir: string;
let mosquitto: MosquittoProcess;
/** The listener whose certificate the test CA signed, and one whose certificate another CA signed. */
let trusted: number;
let foreign: number;
const file = (name: string) => path.join(dir, name);

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { stdio: 'ignore' });
}

/** A CA, or a certificate with an EC P-256 key signed by `ca` (names with `extensions`). */
function makeCa(name: string): void {
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', file(`${name}.key`), '-out', file(`${name}.crt`),
    '-subj', `/CN=${name}`, '-days', '2', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
}

async function makeCertificate(name: string, ca: string, commonName: string, extensions: string): Promise<void> {
  await writeFile(file(`${name}.ext`), `${extensions}\n`);
  openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), '-subj', `/CN=${commonName}`);
  openssl('x509', '-req', '-in', file(`${name}.csr`), '-CA', file(`${ca}.crt`), '-CAkey', file(`${ca}.key`), '-CAcreateserial', '-days', '2', '-out', file(`${name}.crt`), '-extfile', file(`${name}.ext`));
}

function listener(port: number, server: string): string {
  return [
    `listener ${port} 127.0.0.1`,
    `cafile ${file('test-ca.crt')}`,
    `certfile ${file(`${server}.crt`)}`,
    `keyfile ${file(`${server}.key`)}`,
    // the platform signs in with its own certificate, as devices do
    'require_certificate true',
    'use_identity_as_username true',
    'allow_anonymous false',
  ].join('\n');
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'otter-mqtt-tls-'));
  makeCa('test-ca');
  makeCa('other-ca');
  const serverNames = 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth';
  await makeCertificate('broker', 'test-ca', 'localhost', serverNames);
  await makeCertificate('impostor', 'other-ca', 'localhost', serverNames);
  await makeCertificate('otter', 'test-ca', 'otter', 'extendedKeyUsage=clientAuth');
  // Mosquitto started as root reads its TLS files as its own user
  await chmod(dir, 0o755);
  for (const name of await readdir(dir)) await chmod(file(name), 0o644);

  trusted = await freePort();
  foreign = await freePort();
  await writeFile(file('mosquitto.conf'), [
    'per_listener_settings true',
    'persistence false',
    'log_dest stderr',
    'log_type error',
    listener(trusted, 'broker'),
    listener(foreign, 'impostor'),
  ].join('\n'));
  mosquitto = await spawnMosquitto(file('mosquitto.conf'), [trusted, foreign]);
});

afterAll(async () => {
  await mosquitto?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const tlsEnv = () => ({ MQTT_CA_FILE: file('test-ca.crt'), MQTT_CERT_FILE: file('otter.crt'), MQTT_KEY_FILE: file('otter.key') });

describe('TLS to the broker', () => {
  let t: TestApp;

  afterAll(async () => {
    await t?.close();
  });

  it('connects over mqtts:// with the CA that signed the broker, is ready, and takes device messages', async () => {
    t = await buildTestApp({ ROLE: 'all', MQTT_URL: `mqtts://127.0.0.1:${trusted}`, ...tlsEnv() });
    const ready = await t.app.inject({ url: '/health/ready' });
    expect(ready.statusCode, ready.body).toBe(200);

    await registerDevices(t.app, t.auth, 'tls-product', ['tls-1']);
    const device = await mqtt.connectAsync(`mqtts://localhost:${trusted}`, {
      protocolVersion: 5,
      ca: await readFile(file('test-ca.crt')),
      cert: await readFile(file('otter.crt')),
      key: await readFile(file('otter.key')),
      reconnectPeriod: 0,
    });
    try {
      await device.publishAsync('/tls-product/tls-1/firmware/report', JSON.stringify({ version: '3.1.4', timestamp: Date.now() }), { qos: 1 });
      const deadline = Date.now() + 10_000;
      let version: string | null = null;
      while (version !== '3.1.4' && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        version = ((await t.app.inject({ url: '/api/devices/tls-1', headers: t.auth })).json() as { firmwareVersion: string | null }).firmwareVersion;
      }
      expect(version).toBe('3.1.4');
    } finally {
      await device.endAsync();
    }
  });

  it('refuses a broker whose certificate the CA did not sign, and one it cannot check without the CA', async () => {
    const logger = createLogger('silent');
    for (const env of [
      { MQTT_URL: `mqtts://127.0.0.1:${foreign}`, ...tlsEnv() },
      // without MQTT_CA_FILE only the system's CAs count: the test CA is not one of them
      { MQTT_URL: `mqtts://127.0.0.1:${trusted}`, MQTT_CERT_FILE: file('otter.crt'), MQTT_KEY_FILE: file('otter.key') },
    ]) {
      const connector = createMqttConnector({ config: loadConfig(env), logger, receive: false });
      const refusal = await connector.start(async () => ({ accepted: true })).then(() => undefined, (error: unknown) => error);
      await connector.stop();
      expect(refusal).toBeInstanceOf(DependencyError);
      expect(refusal).toMatchObject({ dependency: 'MQTT broker', url: expect.stringMatching(new RegExp(`^mqtts://127\\.0\\.0\\.1:${env.MQTT_URL.split(':').pop()} \\(its TLS certificate does not verify`)) });
    }
  });

  it('does not start against that broker: exit 1 and one line naming it', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'service/main.ts'], {
      env: {
        ...process.env,
        ROLE: 'worker',
        PORT: '0',
        HOST: '127.0.0.1',
        DATABASE_URL: t.config.databaseUrl,
        REDIS_URL: TEST_REDIS_URL,
        API_KEYS: TEST_API_KEY,
        QUEUE_PREFIX: t.config.queuePrefix,
        LOG_LEVEL: 'silent',
        MQTT_URL: `mqtts://127.0.0.1:${foreign}`,
        ...tlsEnv(),
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(1);
    const lines = stderr.split('\n').filter((line) => line.trim() !== '');
    expect(lines, stderr).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^otter: cannot start: MQTT broker is not reachable at mqtts://127\\.0\\.0\\.1:${foreign} \\(its TLS certificate does not verify: .+\\) — MQTT_CA_FILE must be`));
  }, 60_000);
});
