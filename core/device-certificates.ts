// X.509 for the device CA: device key pairs, device and broker certificates, CSRs and CRLs. Keys and
// signatures come from node:crypto (on the libuv pool, so a batch uses every core and never blocks
// the event loop); the certificate bytes are written by core/der.ts; CSRs are parsed with pkijs.
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPair,
  randomBytes,
  sign,
  verify,
  X509Certificate,
  type KeyObject,
} from 'node:crypto';
import * as asn1js from 'asn1js';
import { CertificationRequest, Certificate as PkiCertificate } from 'pkijs';
import { OtterError } from './errors.ts';
import * as der from './der.ts';

const OID = {
  commonName: '2.5.4.3',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  crlNumber: '2.5.29.20',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  ecdsaWithSha384: '1.2.840.10045.4.3.3',
  ecdsaWithSha512: '1.2.840.10045.4.3.4',
  sha256WithRsa: '1.2.840.113549.1.1.11',
  sha384WithRsa: '1.2.840.113549.1.1.12',
  sha512WithRsa: '1.2.840.113549.1.1.13',
  ed25519: '1.3.101.112',
} as const;

/** How a key signs: the AlgorithmIdentifier written into certificates and the digest to use. */
interface SignatureScheme {
  algorithmIdentifier: Buffer;
  hash: string | null;
}

/** A loaded device CA: what issuing needs, parsed once. */
export interface DeviceCa {
  certificatePem: string;
  certificate: X509Certificate;
  privateKey: KeyObject;
  /** The CA's subject as DER, copied byte for byte into every issued certificate's issuer. */
  subject: Buffer;
  /** The CA's subject key identifier, named in issued certificates so chains are built by key. */
  keyIdentifier?: Buffer;
  notAfter: Date;
  scheme: SignatureScheme;
}

export interface CertificateRequest {
  publicKeyDer: Buffer;
  /** The CN the request asked for (informational: issuing sets the device id). */
  commonName?: string;
}

export interface RevokedCertificate {
  serialHex: string;
  revokedAt: Date;
}

function invalidCa(message: string): OtterError {
  return new OtterError('device_ca_invalid', `device CA: ${message}`, 500);
}

function invalidCsr(message: string): OtterError {
  return new OtterError('invalid_csr', message, 400);
}

export function toPem(label: string, body: Uint8Array): string {
  const base64 = Buffer.from(body).toString('base64');
  return `-----BEGIN ${label}-----\n${base64.match(/.{1,64}/g)!.join('\n')}\n-----END ${label}-----\n`;
}

/** The body of the first PEM block with `label` (any label of `labels`), or undefined. */
export function fromPem(text: string, labels: readonly string[]): Buffer | undefined {
  for (const label of labels) {
    const match = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`).exec(text);
    if (match) return Buffer.from(match[1]!.replace(/\s+/g, ''), 'base64');
  }
  return undefined;
}

function signatureScheme(key: KeyObject): SignatureScheme {
  const ecdsa = (oid: string, hash: string) => ({ algorithmIdentifier: der.sequence(der.objectIdentifier(oid)), hash });
  switch (key.asymmetricKeyType) {
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      if (curve === 'prime256v1') return ecdsa(OID.ecdsaWithSha256, 'sha256');
      if (curve === 'secp384r1') return ecdsa(OID.ecdsaWithSha384, 'sha384');
      if (curve === 'secp521r1') return ecdsa(OID.ecdsaWithSha512, 'sha512');
      throw invalidCa(`unsupported EC curve ${curve ?? 'unknown'} (use P-256, P-384 or P-521)`);
    }
    case 'rsa':
      return { algorithmIdentifier: der.sequence(der.objectIdentifier(OID.sha256WithRsa), der.nullValue()), hash: 'sha256' };
    case 'ed25519':
      return { algorithmIdentifier: der.sequence(der.objectIdentifier(OID.ed25519)), hash: null };
    default:
      throw invalidCa(`unsupported key type ${key.asymmetricKeyType ?? 'unknown'} (use EC, RSA or Ed25519)`);
  }
}

function signAsync(scheme: SignatureScheme, data: Buffer, key: KeyObject): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    sign(scheme.hash, data, key, (error, signature) => (error ? reject(error) : resolve(signature)));
  });
}

/** The raw DER of the `index`-th field of a TBS structure that may start with an explicit version. */
function tbsField(certificateDer: Buffer, indexAfterVersion: number): Buffer {
  const parsed = asn1js.fromBER(certificateDer);
  if (parsed.offset === -1 || !(parsed.result instanceof asn1js.Sequence)) throw invalidCa('the certificate is not DER');
  const tbs = parsed.result.valueBlock.value[0];
  if (!(tbs instanceof asn1js.Sequence)) throw invalidCa('the certificate has no TBSCertificate');
  const fields = tbs.valueBlock.value;
  const hasVersion = fields[0]?.idBlock.tagClass === 3 && fields[0].idBlock.tagNumber === 0;
  const field = fields[indexAfterVersion + (hasVersion ? 1 : 0)];
  if (!field) throw invalidCa('the certificate is truncated');
  return Buffer.from(field.valueBeforeDecodeView);
}

function subjectKeyIdentifier(certificateDer: Buffer): Buffer | undefined {
  const certificate = PkiCertificate.fromBER(certificateDer);
  const extension = certificate.extensions?.find((candidate) => candidate.extnID === OID.subjectKeyIdentifier);
  const value = extension?.parsedValue as unknown;
  return value instanceof asn1js.OctetString ? Buffer.from(value.valueBlock.valueHexView) : undefined;
}

/** Parses and checks the CA's certificate and key (PEM): a CA certificate, and the key that matches it. */
export function loadDeviceCa(certificatePem: string, privateKeyPem: string): DeviceCa {
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(certificatePem);
  } catch (error) {
    throw invalidCa(`the certificate cannot be read (${(error as Error).message})`);
  }
  if (!certificate.ca) throw invalidCa('the certificate is not a CA certificate (basicConstraints CA:TRUE)');
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(privateKeyPem);
  } catch (error) {
    throw invalidCa(`the private key cannot be read (${(error as Error).message})`);
  }
  if (!certificate.checkPrivateKey(privateKey)) throw invalidCa('the private key does not belong to the certificate');
  const raw = certificate.raw;
  return {
    certificatePem: toPem('CERTIFICATE', raw),
    certificate,
    privateKey,
    subject: tbsField(raw, 4),
    keyIdentifier: subjectKeyIdentifier(raw),
    notAfter: new Date(certificate.validTo),
    scheme: signatureScheme(privateKey),
  };
}

/** A fresh EC P-256 key pair: the private key as PKCS#8 PEM, the public key as SubjectPublicKeyInfo DER. */
export function generateDeviceKey(): Promise<{ privateKeyPem: string; publicKeyDer: Buffer }> {
  return new Promise((resolve, reject) => {
    generateKeyPair(
      'ec',
      { namedCurve: 'P-256', publicKeyEncoding: { type: 'spki', format: 'der' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } },
      (error, publicKeyDer, privateKeyPem) => (error ? reject(error) : resolve({ privateKeyPem, publicKeyDer })),
    );
  });
}

/** A random positive 128-bit serial as lower-case hex, the first byte non-zero (RFC 5280: ≤ 20 octets). */
export function newSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f || 0x01;
  return bytes.toString('hex');
}

function commonNameOnly(commonName: string): Buffer {
  return der.sequence(der.set(der.sequence(der.objectIdentifier(OID.commonName), der.utf8String(commonName))));
}

function extension(oid: string, critical: boolean, value: Buffer): Buffer {
  return der.sequence(der.objectIdentifier(oid), ...(critical ? [der.boolean(true)] : []), der.octetString(value));
}

function authorityKeyIdentifier(keyIdentifier: Buffer | undefined): Buffer[] {
  return keyIdentifier ? [extension(OID.authorityKeyIdentifier, false, der.sequence(der.implicitPrimitive(0, keyIdentifier)))] : [];
}

function subjectAltName(hosts: readonly string[]): Buffer {
  return der.sequence(...hosts.map((host) => {
    const ipv4 = /^\d{1,3}(\.\d{1,3}){3}$/.test(host) ? Buffer.from(host.split('.').map(Number)) : undefined;
    return ipv4 ? der.implicitPrimitive(7, ipv4) : der.implicitPrimitive(2, Buffer.from(host, 'ascii'));
  }));
}

export type CertificateProfile =
  | { kind: 'device' }
  | { kind: 'server'; hosts: readonly string[] };

export interface IssueRequest {
  commonName: string;
  publicKeyDer: Buffer;
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
  profile: CertificateProfile;
}

/**
 * A certificate signed by the CA. A device certificate is for TLS client authentication only (the
 * broker reads the device id from its CN); a server certificate names the hosts it serves.
 */
export async function issueCertificate(ca: DeviceCa, request: IssueRequest): Promise<string> {
  const extensions = [
    extension(OID.basicConstraints, true, der.sequence()),
    extension(OID.keyUsage, true, der.namedBits([0])), // digitalSignature
    extension(OID.extKeyUsage, false, der.sequence(der.objectIdentifier(request.profile.kind === 'device' ? OID.clientAuth : OID.serverAuth))),
    ...(request.profile.kind === 'server' ? [extension(OID.subjectAltName, false, subjectAltName(request.profile.hosts))] : []),
    ...authorityKeyIdentifier(ca.keyIdentifier),
  ];
  // a certificate that outlives its CA fails verification anyway: say so in the certificate
  const notAfter = request.notAfter < ca.notAfter ? request.notAfter : ca.notAfter;
  const tbs = der.sequence(
    der.explicit(0, der.smallInteger(2)),
    der.unsignedInteger(Buffer.from(request.serialHex, 'hex')),
    ca.scheme.algorithmIdentifier,
    ca.subject,
    der.sequence(der.time(request.notBefore), der.time(notAfter)),
    commonNameOnly(request.commonName),
    request.publicKeyDer,
    der.explicit(3, der.sequence(...extensions)),
  );
  const signature = await signAsync(ca.scheme, tbs, ca.privateKey);
  return toPem('CERTIFICATE', der.sequence(tbs, ca.scheme.algorithmIdentifier, der.bitString(signature)));
}

/**
 * A v2 CRL listing `revoked`, signed by the CA. OpenSSL refuses every certificate of a CA whose CRL
 * is past its nextUpdate, so whoever publishes it must rewrite it well before then.
 */
export async function buildCrl(
  ca: DeviceCa,
  options: { revoked: readonly RevokedCertificate[]; thisUpdate: Date; nextUpdate: Date; crlNumber: number },
): Promise<string> {
  const entries = options.revoked.map((entry) =>
    der.sequence(der.unsignedInteger(Buffer.from(entry.serialHex, 'hex')), der.time(entry.revokedAt)),
  );
  const tbs = der.sequence(
    der.smallInteger(1),
    ca.scheme.algorithmIdentifier,
    ca.subject,
    der.time(options.thisUpdate),
    der.time(options.nextUpdate),
    // an empty list is left out, not written as an empty SEQUENCE
    ...(entries.length > 0 ? [der.sequence(...entries)] : []),
    der.explicit(0, der.sequence(
      extension(OID.crlNumber, false, der.smallInteger(options.crlNumber)),
      ...authorityKeyIdentifier(ca.keyIdentifier),
    )),
  );
  const signature = await signAsync(ca.scheme, tbs, ca.privateKey);
  return toPem('X509 CRL', der.sequence(tbs, ca.scheme.algorithmIdentifier, der.bitString(signature)));
}

/** A self-signed CA for tools and tests: a throwaway device CA, with a new EC P-256 key or the one given. */
export async function createCertificateAuthority(commonName: string, days: number, keyPem?: string): Promise<{ certificatePem: string; privateKeyPem: string }> {
  const { privateKeyPem, publicKeyDer } = keyPem
    ? { privateKeyPem: keyPem, publicKeyDer: createPublicKey(keyPem).export({ type: 'spki', format: 'der' }) }
    : await generateDeviceKey();
  const privateKey = createPrivateKey(privateKeyPem);
  const scheme = signatureScheme(privateKey);
  const subject = commonNameOnly(commonName);
  const keyIdentifier = createHash('sha1').update(publicKeyDer).digest();
  const now = Date.now();
  const tbs = der.sequence(
    der.explicit(0, der.smallInteger(2)),
    der.unsignedInteger(Buffer.from(newSerial(), 'hex')),
    scheme.algorithmIdentifier,
    subject,
    der.sequence(der.time(new Date(now - 5 * 60_000)), der.time(new Date(now + days * 86_400_000))),
    subject,
    publicKeyDer,
    der.explicit(3, der.sequence(
      extension(OID.basicConstraints, true, der.sequence(der.boolean(true))),
      extension(OID.keyUsage, true, der.namedBits([5, 6])), // keyCertSign, cRLSign
      extension(OID.subjectKeyIdentifier, false, der.octetString(keyIdentifier)),
    )),
  );
  const signature = await signAsync(scheme, tbs, privateKey);
  return { certificatePem: toPem('CERTIFICATE', der.sequence(tbs, scheme.algorithmIdentifier, der.bitString(signature))), privateKeyPem };
}

const CSR_SIGNATURES: Record<string, { hash: string | null; keyType: string }> = {
  [OID.ecdsaWithSha256]: { hash: 'sha256', keyType: 'ec' },
  [OID.ecdsaWithSha384]: { hash: 'sha384', keyType: 'ec' },
  [OID.ecdsaWithSha512]: { hash: 'sha512', keyType: 'ec' },
  [OID.sha256WithRsa]: { hash: 'sha256', keyType: 'rsa' },
  [OID.sha384WithRsa]: { hash: 'sha384', keyType: 'rsa' },
  [OID.sha512WithRsa]: { hash: 'sha512', keyType: 'rsa' },
  [OID.ed25519]: { hash: null, keyType: 'ed25519' },
};

const CSR_CURVES = new Set(['prime256v1', 'secp384r1', 'secp521r1']);

function acceptableKey(key: KeyObject): boolean {
  if (key.asymmetricKeyType === 'ec') return CSR_CURVES.has(key.asymmetricKeyDetails?.namedCurve ?? '');
  if (key.asymmetricKeyType === 'rsa') return (key.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048;
  return key.asymmetricKeyType === 'ed25519';
}

/**
 * A PKCS#10 request (PEM) whose signature proves that the sender holds the key: its public key,
 * and the CN it asked for. Keys: EC P-256/P-384/P-521, RSA of 2048 bits or more, Ed25519.
 */
export function parseCsr(pem: string): CertificateRequest {
  const body = fromPem(pem, ['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST']);
  if (!body) throw invalidCsr('csr must be a PEM "CERTIFICATE REQUEST"');
  let request: CertificationRequest;
  try {
    request = CertificationRequest.fromBER(body);
  } catch (error) {
    throw invalidCsr(`csr cannot be parsed (${(error as Error).message})`);
  }
  const info = asn1js.fromBER(request.tbsView);
  const spki = info.result instanceof asn1js.Sequence ? info.result.valueBlock.value[2] : undefined;
  if (info.offset === -1 || !spki) throw invalidCsr('csr has no subject public key');
  const publicKeyDer = Buffer.from(spki.valueBeforeDecodeView);
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: publicKeyDer, format: 'der', type: 'spki' });
  } catch (error) {
    throw invalidCsr(`csr public key cannot be read (${(error as Error).message})`);
  }
  if (!acceptableKey(publicKey)) {
    throw invalidCsr('csr key must be EC P-256, P-384 or P-521, RSA of at least 2048 bits, or Ed25519');
  }
  const algorithm = CSR_SIGNATURES[request.signatureAlgorithm.algorithmId];
  if (!algorithm || algorithm.keyType !== publicKey.asymmetricKeyType) {
    throw invalidCsr(`csr signature algorithm ${request.signatureAlgorithm.algorithmId} is not supported for a ${publicKey.asymmetricKeyType} key`);
  }
  const signature = Buffer.from(request.signatureValue.valueBlock.valueHexView);
  if (!verify(algorithm.hash, Buffer.from(request.tbsView), publicKey, signature)) {
    throw invalidCsr('csr signature does not verify: the request was not signed by its key');
  }
  const commonName = request.subject.typesAndValues.find((entry) => entry.type === OID.commonName)?.value.valueBlock.value;
  return { publicKeyDer, commonName: typeof commonName === 'string' ? commonName : undefined };
}
