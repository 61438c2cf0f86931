// The device CA's files for a deployment. `create` makes a new CA (for trying Otter out, or for an
// operator without a PKI) and a TLS certificate for the broker signed by it; `crl --if-missing`
// writes an empty CRL signed by the configured CA where none exists yet, since Mosquitto does not
// start without its crlfile (Otter rewrites the CRL from its database at every start).
import { access, chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { buildCrl, createCertificateAuthority, generateDeviceKey, issueCertificate, loadDeviceCa, newSerial } from '../core/device-certificates.ts';

const USAGE = `usage:
  tsx tools/device-ca.ts create [--dir secrets] [--broker-host HOST ...] [--days 3650]
      device-ca.crt, device-ca.key: the devices' CA (DEVICE_CA_CERT_FILE, DEVICE_CA_KEY_FILE)
      broker.crt, broker.key: the broker's TLS certificate for HOST (and localhost), signed by that CA
  tsx tools/device-ca.ts crl --if-missing
      an empty CRL at DEVICE_CRL_FILE, signed by DEVICE_CA_CERT_FILE / DEVICE_CA_KEY_FILE, unless one exists
`;

function fail(message: string): never {
  process.stderr.write(`device-ca: ${message}\n`);
  process.exit(1);
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(() => true, () => false);
}

async function create(dir: string, hosts: string[], days: number): Promise<void> {
  const files = ['device-ca.crt', 'device-ca.key', 'broker.crt', 'broker.key'].map((name) => path.join(dir, name));
  for (const file of files) if (await exists(file)) fail(`${file} exists; not overwriting a CA`);
  await mkdir(dir, { recursive: true });
  const ca = await createCertificateAuthority('Otter device CA', days);
  const brokerKey = await generateDeviceKey();
  const now = Date.now();
  const brokerCertificate = await issueCertificate(loadDeviceCa(ca.certificatePem, ca.privateKeyPem), {
    commonName: hosts[0]!,
    publicKeyDer: brokerKey.publicKeyDer,
    serialHex: newSerial(),
    notBefore: new Date(now - 5 * 60_000),
    notAfter: new Date(now + days * 86_400_000),
    profile: { kind: 'server', hosts: [...new Set([...hosts, 'localhost'])] },
  });
  const [caCert, caKey, brokerCert, brokerKeyFile] = files as [string, string, string, string];
  await writeFile(caCert, ca.certificatePem);
  await writeFile(caKey, ca.privateKeyPem, { mode: 0o600 });
  await writeFile(brokerCert, brokerCertificate);
  await writeFile(brokerKeyFile, brokerKey.privateKeyPem, { mode: 0o600 });
  await chmod(caKey, 0o600);
  await chmod(brokerKeyFile, 0o600);
  process.stdout.write(`device CA and broker certificate (${hosts.join(', ')}) written to ${dir}; keep device-ca.key secret\n`);
}

async function emptyCrlIfMissing(): Promise<void> {
  const { DEVICE_CA_CERT_FILE: certFile, DEVICE_CA_KEY_FILE: keyFile, DEVICE_CRL_FILE: crlFile } = process.env;
  if (!certFile || !keyFile || !crlFile) fail('set DEVICE_CA_CERT_FILE, DEVICE_CA_KEY_FILE and DEVICE_CRL_FILE');
  if (await exists(crlFile)) {
    process.stdout.write(`${crlFile} exists\n`);
    return;
  }
  const ca = loadDeviceCa(await readFile(certFile, 'utf8'), await readFile(keyFile, 'utf8'));
  const now = Date.now();
  // short-lived on purpose: Otter replaces it at start with one built from its database
  const crl = await buildCrl(ca, { revoked: [], thisUpdate: new Date(now - 5 * 60_000), nextUpdate: new Date(now + 7 * 86_400_000), crlNumber: 0 });
  await mkdir(path.dirname(crlFile), { recursive: true });
  await writeFile(crlFile, crl);
  await chmod(crlFile, 0o644);
  process.stdout.write(`wrote an empty CRL to ${crlFile}\n`);
}

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    dir: { type: 'string', default: 'secrets' },
    'broker-host': { type: 'string', multiple: true },
    days: { type: 'string', default: '3650' },
    'if-missing': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});

const command = positionals[0];
if (values.help || !command) {
  process.stdout.write(USAGE);
  process.exit(values.help ? 0 : 1);
}
try {
  if (command === 'create') {
    const days = Number(values.days);
    if (!Number.isInteger(days) || days < 1) fail('--days must be a whole number of days');
    await create(values.dir!, values['broker-host'] ?? ['localhost'], days);
  } else if (command === 'crl' && values['if-missing']) {
    await emptyCrlIfMissing();
  } else {
    fail(`unknown command ${positionals.join(' ')}\n${USAGE}`);
  }
} catch (error) {
  fail((error as Error).message);
}
