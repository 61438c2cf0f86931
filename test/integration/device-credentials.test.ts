// Otter as the devices' CA: certificates with fresh keys for a batch of registered devices, or for a
// device's own CSR (CN forced to the device id); revocation into the CRL file, checked with
// openssl; deleting a device revokes too; 10,000 certificates in seconds; without a CA, 409.
import { execFileSync, spawnSync } from 'node:child_process';
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCertificateAuthority } from '../../core/device-certificates.ts';
import { DeviceCredentials } from '../../services/device-credentials.ts';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { registerDevices } from '../helpers/rollout.ts';

const PRODUCT = 'lamp';

let dir: string;
let caFile: string;
let crlFile: string;
let t: TestApp;

interface Issued {
  deviceId: string;
  certificate: string;
  privateKey: string;
}

async function issue(deviceIds: string[], app = t) {
  return app.app.inject({ method: 'POST', url: '/api/devices/credentials', headers: app.auth, payload: { deviceIds } });
}

async function revoke(deviceId: string, app = t) {
  return app.app.inject({ method: 'POST', url: `/api/devices/${deviceId}/credentials/revoke`, headers: app.auth });
}

function openssl(args: string[], input?: string): { status: number | null; output: string } {
  const result = spawnSync('openssl', args, { input, encoding: 'utf8' });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

/** The serials in the CRL file (upper-case hex without leading zeros, as serialOf gives them), and its CRL number. */
async function crlContents(): Promise<{ serials: string[]; number: number; verified: boolean }> {
  const text = openssl(['crl', '-in', crlFile, '-CAfile', caFile, '-noout', '-text']).output;
  // openssl prints a serial in whole bytes: one whose first byte is below 0x10 starts with a 0
  const serials = [...text.matchAll(/Serial Number: ([0-9A-F]+)/g)].map((match) => match[1]!.replace(/^0+/, ''));
  const number = Number(/CRL Number:\s*\n?\s*(\d+)/.exec(text)?.[1] ?? Number.NaN);
  return { serials, number, verified: /verify OK/.test(text) };
}

/** openssl's verdict on a certificate, against the CA and the current CRL. */
async function verifyWithCrl(certificate: string): Promise<string> {
  const file = path.join(dir, `check-${Date.now()}-${Math.random().toString(36).slice(2)}.pem`);
  await writeFile(file, certificate);
  return openssl(['verify', '-crl_check', '-CAfile', caFile, '-CRLfile', crlFile, file]).output;
}

function serialOf(certificate: string): string {
  return new X509Certificate(certificate).serialNumber.toUpperCase().replace(/^0+/, '');
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'otter-device-ca-'));
  const ca = await createCertificateAuthority('Otter test device CA', 3650);
  caFile = path.join(dir, 'ca.crt');
  await writeFile(caFile, ca.certificatePem);
  await writeFile(path.join(dir, 'ca.key'), ca.privateKeyPem);
  // a directory that does not exist yet: Otter makes it
  crlFile = path.join(dir, 'crl', 'devices.crl.pem');
  t = await buildTestApp({ DEVICE_CA_CERT_FILE: caFile, DEVICE_CA_KEY_FILE: path.join(dir, 'ca.key'), DEVICE_CRL_FILE: crlFile });
  await registerDevices(t.app, t.auth, PRODUCT, ['lamp-1', 'lamp-2', 'lamp-3', 'lamp-csr', 'lamp-gone']);
});

afterAll(async () => {
  await t?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('issuing', () => {
  it('publishes a CRL signed by the CA at start', async () => {
    const crl = await crlContents();
    expect(crl.verified).toBe(true);
    expect(crl.serials).toEqual([]);
  });

  it('issues a key pair and a client certificate per device, CN = the device id', async () => {
    const response = await issue(['lamp-1', 'lamp-2']);
    expect(response.statusCode, response.body).toBe(200);
    expect(response.headers['cache-control']).toBe('no-store');
    const items = (response.json() as { items: Issued[] }).items;
    expect(items.map((item) => item.deviceId)).toEqual(['lamp-1', 'lamp-2']);
    const ca = new X509Certificate(await readFile(caFile));
    for (const item of items) {
      const certificate = new X509Certificate(item.certificate);
      expect(certificate.subject).toBe(`CN=${item.deviceId}`);
      expect(certificate.checkIssued(ca)).toBe(true);
      expect(certificate.verify(ca.publicKey)).toBe(true);
      expect(certificate.ca).toBe(false);
      expect(certificate.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']); // TLS client authentication
      const key = createPrivateKey(item.privateKey);
      expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
      expect(certificate.checkPrivateKey(key)).toBe(true);
      const days = (Date.parse(certificate.validTo) - Date.now()) / 86_400_000;
      expect(days).toBeGreaterThan(824);
      expect(days).toBeLessThan(826);
      expect(await verifyWithCrl(item.certificate)).toMatch(/: OK/);
    }
    expect(serialOf(items[0]!.certificate)).not.toBe(serialOf(items[1]!.certificate));
    const rows = await t.database.db.selectFrom('device_certificates').selectAll().where('device_id', 'in', ['lamp-1', 'lamp-2']).execute();
    expect(rows.map((row) => [row.device_id, row.origin, row.revoked_at]).sort()).toEqual([['lamp-1', 'generated', null], ['lamp-2', 'generated', null]]);
  });

  it('issues nothing when one device is not registered, and names it', async () => {
    const before = await t.database.db.selectFrom('device_certificates').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    const response = await issue(['lamp-3', 'nobody', 'lamp-1']);
    expect(response.statusCode).toBe(422);
    expect(response.json()).toMatchObject({ code: 'unknown_device', details: [{ path: '/deviceIds/1', message: 'device nobody is not registered' }] });
    const after = await t.database.db.selectFrom('device_certificates').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    expect(Number(after.n)).toBe(Number(before.n));
  });

  it('refuses malformed bodies', async () => {
    const bodies: Array<Record<string, unknown>> = [
      { deviceIds: [] },
      { deviceIds: ['lamp-1', 'lamp-1'] },
      { deviceIds: Array.from({ length: 1_001 }, (_, i) => `lamp-${i}`) },
      { deviceIds: ['bad/id'] },
      { deviceIds: ['lamp-1'], csr: 'x' },
      { deviceId: 'lamp-1' },
      {},
    ];
    for (const payload of bodies) {
      const response = await t.app.inject({ method: 'POST', url: '/api/devices/credentials', headers: t.auth, payload });
      expect(response.statusCode, JSON.stringify(payload).slice(0, 80)).toBe(400);
      expect(response.json().code).toBe('validation_error');
    }
  });
});

describe('a device that keeps its own key', () => {
  let keyFile: string;
  let csr: string;

  beforeAll(async () => {
    keyFile = path.join(dir, 'own.key');
    execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-subj', '/CN=somebody-else/O=Evil', '-out', path.join(dir, 'own.csr')], { stdio: 'ignore' });
    csr = await readFile(path.join(dir, 'own.csr'), 'utf8');
  });

  it('gets a certificate for its key, with its device id as CN whatever the CSR asked for', async () => {
    const response = await t.app.inject({ method: 'POST', url: '/api/devices/credentials', headers: t.auth, payload: { deviceId: 'lamp-csr', csr } });
    expect(response.statusCode, response.body).toBe(200);
    const body = response.json() as { deviceId: string; certificate: string; privateKey?: string };
    expect(body.deviceId).toBe('lamp-csr');
    expect(body.privateKey).toBeUndefined();
    const certificate = new X509Certificate(body.certificate);
    expect(certificate.subject).toBe('CN=lamp-csr');
    const ownPublicKey = createPublicKey(await readFile(keyFile, 'utf8'));
    expect(certificate.publicKey.export({ type: 'spki', format: 'der' })).toEqual(ownPublicKey.export({ type: 'spki', format: 'der' }));
    expect(await verifyWithCrl(body.certificate)).toMatch(/: OK/);
    const row = await t.database.db.selectFrom('device_certificates').select('origin').where('device_id', '=', 'lamp-csr').executeTakeFirstOrThrow();
    expect(row.origin).toBe('csr');
  });

  it('refuses a CSR whose signature does not verify, and one that is not a CSR', async () => {
    // change one letter of the requested subject: the signature no longer covers what is sent
    const der = Buffer.from(csr.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
    const at = der.indexOf(Buffer.from('somebody-else'));
    der[at] = 'S'.charCodeAt(0);
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    for (const [payload, message] of [
      [tampered, /does not verify/],
      ['hello', /PEM/],
      [`-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----`, /cannot be parsed/],
    ] as const) {
      const response = await t.app.inject({ method: 'POST', url: '/api/devices/credentials', headers: t.auth, payload: { deviceId: 'lamp-csr', csr: payload } });
      expect(response.statusCode, response.body).toBe(400);
      expect(response.json().code).toBe('invalid_csr');
      expect(response.json().message).toMatch(message);
    }
  });

  it('refuses a CSR for a device that is not registered', async () => {
    const response = await t.app.inject({ method: 'POST', url: '/api/devices/credentials', headers: t.auth, payload: { deviceId: 'nobody', csr } });
    expect(response.statusCode).toBe(422);
    expect(response.json().code).toBe('unknown_device');
  });
});

describe('revocation', () => {
  it('puts every certificate of the device into the CRL; the others stay valid', async () => {
    const first = ((await issue(['lamp-3'])).json() as { items: Issued[] }).items[0]!;
    const second = ((await issue(['lamp-3'])).json() as { items: Issued[] }).items[0]!;
    const bystander = ((await issue(['lamp-2'])).json() as { items: Issued[] }).items[0]!;
    const before = await crlContents();

    const response = await revoke('lamp-3');
    expect(response.statusCode, response.body).toBe(200);
    expect(response.json()).toEqual({ deviceId: 'lamp-3', revoked: 2 });

    const crl = await crlContents();
    expect(crl.verified).toBe(true);
    expect(crl.number).toBeGreaterThan(before.number);
    expect(crl.serials.sort()).toEqual([serialOf(first.certificate), serialOf(second.certificate)].sort());
    expect(await verifyWithCrl(first.certificate)).toMatch(/certificate revoked/);
    expect(await verifyWithCrl(second.certificate)).toMatch(/certificate revoked/);
    expect(await verifyWithCrl(bystander.certificate)).toMatch(/: OK/);

    // nothing left to revoke; the CRL keeps what it had
    expect((await revoke('lamp-3')).json()).toEqual({ deviceId: 'lamp-3', revoked: 0 });
    expect((await crlContents()).serials).toHaveLength(2);
  });

  it('answers 404 for a device it never heard of', async () => {
    const response = await revoke('nobody');
    expect(response.statusCode).toBe(404);
    expect(response.json().code).toBe('not_found');
  });

  it('revokes when the device is deleted', async () => {
    const issued = ((await issue(['lamp-gone'])).json() as { items: Issued[] }).items[0]!;
    const deleted = await t.app.inject({ method: 'DELETE', url: '/api/devices/lamp-gone', headers: t.auth });
    expect(deleted.statusCode).toBe(204);
    expect((await crlContents()).serials).toContain(serialOf(issued.certificate));
    expect(await verifyWithCrl(issued.certificate)).toMatch(/certificate revoked/);
    // the device is gone, its certificates are known: revoking again is not an error
    expect((await revoke('lamp-gone')).json()).toEqual({ deviceId: 'lamp-gone', revoked: 0 });
  });
});

describe('at fleet size', () => {
  it('issues certificates for 10,000 devices in seconds', async () => {
    const ids = Array.from({ length: 10_000 }, (_, i) => `fleet-${String(i).padStart(5, '0')}`);
    await registerDevices(t.app, t.auth, PRODUCT, ids);
    const started = performance.now();
    let issued = 0;
    for (let i = 0; i < ids.length; i += 1_000) {
      const response = await issue(ids.slice(i, i + 1_000));
      expect(response.statusCode).toBe(200);
      issued += (response.json() as { items: Issued[] }).items.length;
    }
    const seconds = (performance.now() - started) / 1000;
    console.log(`issued ${issued} device certificates (EC P-256 keys) through the API in ${seconds.toFixed(1)} s (${Math.round(issued / seconds)}/s)`);
    expect(issued).toBe(10_000);
    // a generous bound: the figure is printed above; minutes would mean something is wrong
    expect(seconds).toBeLessThan(60);
    const rows = await t.database.db.selectFrom('device_certificates').select((eb) => eb.fn.count<number>('serial').distinct().as('n')).where('device_id', 'like', 'fleet-%').executeTakeFirstOrThrow();
    expect(Number(rows.n)).toBe(10_000);
  }, 120_000);
});

describe('without a device CA', () => {
  let bare: TestApp;

  beforeAll(async () => {
    bare = await buildTestApp();
    await registerDevices(bare.app, bare.auth, PRODUCT, ['lamp-1']);
  });

  afterAll(async () => {
    await bare?.close();
  });

  it('answers 409 device_ca_not_configured, and deleting devices still works', async () => {
    for (const response of [
      await issue(['lamp-1'], bare),
      await bare.app.inject({ method: 'POST', url: '/api/devices/credentials', headers: bare.auth, payload: { deviceId: 'lamp-1', csr: 'x' } }),
      await revoke('lamp-1', bare),
    ]) {
      expect(response.statusCode, response.body).toBe(409);
      expect(response.json().code).toBe('device_ca_not_configured');
    }
    expect((await bare.app.inject({ method: 'DELETE', url: '/api/devices/lamp-1', headers: bare.auth })).statusCode).toBe(204);
  });

  it('refuses to start with a CA certificate that is not a CA, a key that is not its own, or a file it cannot read', async () => {
    const other = await createCertificateAuthority('another CA', 30);
    await writeFile(path.join(dir, 'other.key'), other.privateKeyPem);
    const device = ((await issue(['lamp-1'])).json() as { items: Issued[] }).items[0]!;
    await writeFile(path.join(dir, 'device.crt'), device.certificate);
    await writeFile(path.join(dir, 'device.key'), device.privateKey);
    const open = (cert: string, key: string) => DeviceCredentials.open({
      config: { ...t.config, deviceCaCertFile: path.join(dir, cert), deviceCaKeyFile: path.join(dir, key), deviceCrlFile: crlFile },
      db: t.database.db,
      logger: t.otter.logger,
    });
    await expect(open('ca.crt', 'other.key')).rejects.toMatchObject({ code: 'device_ca_invalid', message: /does not belong/ });
    await expect(open('device.crt', 'device.key')).rejects.toMatchObject({ code: 'device_ca_invalid', message: /not a CA/ });
    await expect(open('missing.crt', 'ca.key')).rejects.toMatchObject({ code: 'device_ca_invalid', message: /DEVICE_CA_CERT_FILE/ });
  });
});
