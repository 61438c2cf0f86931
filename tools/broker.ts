// A private Mosquitto: the repository's mosquitto.conf, closed as in production, on free local ports
// (or given ones), with throwaway secrets made for it: a password file (mosquitto_passwd) with
// Otter's and the fleet simulator's accounts, and a device CA whose certificate, key and CRL an Otter
// under test can use. Tests and tools share nothing with the machine's broker.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  buildCrl,
  createCertificateAuthority,
  generateDeviceKey,
  issueCertificate,
  loadDeviceCa,
  newSerial,
} from '../core/device-certificates.ts';
import { freePort, portAccepts } from './ports.ts';

export interface BrokerAccount {
  username: string;
  password: string;
}

/** What a restarted broker needs to let the same clients in again. */
export interface BrokerSecrets {
  /** Otter's own account and the fleet simulator's, both allowed on every firmware topic. */
  accounts: { otter: BrokerAccount; simulator: BrokerAccount };
  /** The throwaway device CA (PEM); it also signs the broker's TLS certificate. */
  deviceCa: { certificate: string; privateKey: string };
}

export interface Broker {
  /**
   * The platform listener with the fleet simulator's account in it (`mqtt://simulator:…@127.0.0.1:port`):
   * what fleets and test clients connect with, and what an Otter under test may use as MQTT_URL.
   */
  url: string;
  port: number;
  /**
   * Otter's own account, to spread into an Otter's environment after `MQTT_URL: url` (explicit
   * MQTT_USERNAME and MQTT_PASSWORD take the place of the URL's credentials).
   */
  serviceEnv: { MQTT_USERNAME: string; MQTT_PASSWORD: string };
  /** The simulator's account as mqtt.js options (what `url` carries too). */
  fleetOptions: { username: string; password: string };
  /** The platform listener without credentials. */
  plainUrl: string;
  /** The TLS listener for devices: a client certificate from the device CA is required. */
  devices: { url: string; port: number; caFile: string };
  /** The device CA for an Otter under test: DEVICE_CA_CERT_FILE, DEVICE_CA_KEY_FILE, DEVICE_CRL_FILE. */
  deviceCaEnv: { DEVICE_CA_CERT_FILE: string; DEVICE_CA_KEY_FILE: string; DEVICE_CRL_FILE: string };
  secrets: BrokerSecrets;
  /** Sends SIGHUP: Mosquitto re-reads its configuration, password file, ACLs and CRL. */
  reload(): Promise<void>;
  stop(): Promise<void>;
}

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CONF = path.join(ROOT, 'mosquitto.conf');
const START_TIMEOUT_MS = 10_000;
const PLATFORM_LISTENER = 1883;
const DEVICE_LISTENER = 8883;

// /usr/sbin is not on every user's PATH
const MOSQUITTO = process.env.MOSQUITTO_BIN ?? (existsSync('/usr/sbin/mosquitto') ? '/usr/sbin/mosquitto' : 'mosquitto');
const MOSQUITTO_PASSWD = process.env.MOSQUITTO_PASSWD_BIN ?? 'mosquitto_passwd';

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function run(command: string, args: string[]): Promise<void> {
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', resolve);
  });
  if (code !== 0) throw new Error(`${command} ${args[0]} failed (${code}): ${stderr.trim()}`);
}

async function waitUntilListening(child: ChildProcess, ports: number[], stderr: () => string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`mosquitto exited (${child.exitCode ?? child.signalCode}) before listening on ${ports.join(', ')}: ${stderr().trim()}`);
    }
    if ((await Promise.all(ports.map(portAccepts))).every(Boolean)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`mosquitto did not listen on ${ports.join(', ')} within ${START_TIMEOUT_MS} ms: ${stderr().trim()}`);
}

function randomSecret(): string {
  return randomBytes(18).toString('hex');
}

export async function createBrokerSecrets(): Promise<BrokerSecrets> {
  const ca = await createCertificateAuthority('Otter test device CA', 30);
  return {
    accounts: { otter: { username: 'otter', password: randomSecret() }, simulator: { username: 'simulator', password: randomSecret() } },
    deviceCa: { certificate: ca.certificatePem, privateKey: ca.privateKeyPem },
  };
}

interface Files {
  passwordFile: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  crl: string;
}

/**
 * Writes the secrets as files. Run as root, Mosquitto drops to its own user before it reads the TLS
 * files, so the (throwaway) directory and files are readable by everyone.
 */
async function writeSecrets(dir: string, secrets: BrokerSecrets): Promise<Files> {
  const files: Files = {
    passwordFile: path.join(dir, 'passwd'),
    caCert: path.join(dir, 'device-ca.crt'),
    caKey: path.join(dir, 'device-ca.key'),
    serverCert: path.join(dir, 'broker.crt'),
    serverKey: path.join(dir, 'broker.key'),
    crl: path.join(dir, 'devices.crl.pem'),
  };
  const { otter, simulator } = secrets.accounts;
  await run(MOSQUITTO_PASSWD, ['-c', '-b', files.passwordFile, otter.username, otter.password]);
  await run(MOSQUITTO_PASSWD, ['-b', files.passwordFile, simulator.username, simulator.password]);

  const ca = loadDeviceCa(secrets.deviceCa.certificate, secrets.deviceCa.privateKey);
  const serverKey = await generateDeviceKey();
  const now = Date.now();
  const serverCert = await issueCertificate(ca, {
    commonName: 'localhost',
    publicKeyDer: serverKey.publicKeyDer,
    serialHex: newSerial(),
    notBefore: new Date(now - 5 * 60_000),
    notAfter: new Date(now + 30 * 86_400_000),
    profile: { kind: 'server', hosts: ['localhost', '127.0.0.1'] },
  });
  const crl = await buildCrl(ca, { revoked: [], thisUpdate: new Date(now - 5 * 60_000), nextUpdate: new Date(now + 30 * 86_400_000), crlNumber: 0 });
  await writeFile(files.caCert, secrets.deviceCa.certificate);
  await writeFile(files.caKey, secrets.deviceCa.privateKey);
  await writeFile(files.serverCert, serverCert);
  await writeFile(files.serverKey, serverKey.privateKeyPem);
  await writeFile(files.crl, crl);
  await chmod(dir, 0o755);
  await Promise.all(Object.values(files).map((file) => chmod(file, 0o644)));
  return files;
}

/**
 * The repository's configuration with this broker's ports (local only) and files; the ACL files
 * are copied beside it, so the broker's user can read them wherever the checkout lives.
 */
async function localConfiguration(base: string, dir: string, files: Files, ports: { platform: number; devices: number }): Promise<string> {
  const listeners = new Map([[PLATFORM_LISTENER, ports.platform], [DEVICE_LISTENER, ports.devices]]);
  const fixed: Record<string, string> = {
    password_file: files.passwordFile,
    cafile: files.caCert,
    certfile: files.serverCert,
    keyfile: files.serverKey,
    crlfile: files.crl,
  };
  const lines: string[] = [];
  const seen = new Set<number>();
  for (const line of base.split('\n')) {
    const [directive, value] = line.trim().split(/\s+/, 2);
    if (directive === 'listener') {
      const port = listeners.get(Number(value));
      if (port === undefined) throw new Error(`${CONF}: unexpected listener ${value}`);
      seen.add(Number(value));
      lines.push(`listener ${port} 127.0.0.1`);
    } else if (directive === 'acl_file' && value) {
      const copy = path.join(dir, path.basename(value));
      await copyFile(path.join(ROOT, path.basename(value)), copy);
      await chmod(copy, 0o644);
      lines.push(`acl_file ${copy}`);
    } else if (directive && fixed[directive] !== undefined) {
      lines.push(`${directive} ${fixed[directive]}`);
    } else {
      lines.push(line);
    }
  }
  if (seen.size !== listeners.size) throw new Error(`${CONF} must have listeners ${PLATFORM_LISTENER} and ${DEVICE_LISTENER}`);
  return lines.join('\n');
}

export interface MosquittoProcess {
  /** Sends SIGHUP: Mosquitto re-reads its configuration, password file, ACLs and CRL. */
  reload(): Promise<void>;
  stop(): Promise<void>;
}

/** Runs Mosquitto with a configuration file until it listens on every one of `ports`. */
export async function spawnMosquitto(confPath: string, ports: number[], options: { ownSession?: boolean } = {}): Promise<MosquittoProcess> {
  const child = spawn(MOSQUITTO, ['-c', confPath], { stdio: ['ignore', 'ignore', 'pipe'], detached: options.ownSession ?? false });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4_000);
  });
  const spawnError = new Promise<never>((_resolve, reject) => child.once('error', reject));
  try {
    await Promise.race([waitUntilListening(child, ports, () => stderr), spawnError]);
  } catch (error) {
    child.kill('SIGKILL');
    await exited(child);
    throw error;
  }
  return {
    async reload() {
      child.kill('SIGHUP');
      // Mosquitto handles the signal at its next loop turn (it wakes at least every 100 ms)
      await new Promise((resolve) => setTimeout(resolve, 300));
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited(child);
        clearTimeout(timer);
      }
    },
  };
}

async function startOnce(base: string, dir: string, secrets: BrokerSecrets, files: Files, options: StartBrokerOptions): Promise<Broker> {
  const port = options.port ?? (await freePort());
  const devicePort = options.devicePort ?? (await freePort());
  const confPath = path.join(dir, `mosquitto-${port}.conf`);
  await writeFile(confPath, await localConfiguration(base, dir, files, { platform: port, devices: devicePort }));
  const mosquitto = await spawnMosquitto(confPath, [port, devicePort], { ownSession: options.ownSession });

  const { otter, simulator } = secrets.accounts;
  return {
    url: `mqtt://${simulator.username}:${simulator.password}@127.0.0.1:${port}`,
    plainUrl: `mqtt://127.0.0.1:${port}`,
    port,
    serviceEnv: { MQTT_USERNAME: otter.username, MQTT_PASSWORD: otter.password },
    fleetOptions: { username: simulator.username, password: simulator.password },
    devices: { url: `mqtts://127.0.0.1:${devicePort}`, port: devicePort, caFile: files.caCert },
    deviceCaEnv: { DEVICE_CA_CERT_FILE: files.caCert, DEVICE_CA_KEY_FILE: files.caKey, DEVICE_CRL_FILE: files.crl },
    secrets,
    reload: () => mosquitto.reload(),
    stop: () => mosquitto.stop(),
  };
}

export interface StartBrokerOptions {
  /** The platform listener's port (to restart on the same one); a free one by default. */
  port?: number;
  devicePort?: number;
  /** Run it as a separate service would: its own session, so its own scheduling group. */
  ownSession?: boolean;
  /** A restarted broker takes the secrets of the one it replaces, so its clients get in again. */
  secrets?: BrokerSecrets;
}

/** Starts Mosquitto with the repository's configuration and throwaway secrets (or given ones). */
export async function startBroker(options: StartBrokerOptions = {}): Promise<Broker> {
  const base = await readFile(CONF, 'utf8');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'otter-mosquitto-'));
  let lastError: unknown;
  try {
    const secrets = options.secrets ?? (await createBrokerSecrets());
    const files = await writeSecrets(dir, secrets);
    // the free ports may be taken between probing and binding: try a few times
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const broker = await startOnce(base, dir, secrets, files, options);
        return {
          ...broker,
          async stop() {
            await broker.stop();
            await rm(dir, { recursive: true, force: true });
          },
        };
      } catch (error) {
        lastError = error;
      }
    }
  } catch (error) {
    lastError = error;
  }
  await rm(dir, { recursive: true, force: true });
  throw lastError;
}
