// The device CA's X.509 without services: DER encoding details, device and server certificates and
// CRLs that Node's own X.509 parser (OpenSSL) accepts and verifies, and CSR checks.
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, X509Certificate } from 'node:crypto';
import * as asn1js from 'asn1js';
import { CertificateRevocationList } from 'pkijs';
import { beforeAll, describe, expect, it } from 'vitest';
import * as der from '../../core/der.ts';
import {
  buildCrl,
  createCertificateAuthority,
  fromPem,
  generateDeviceKey,
  issueCertificate,
  loadDeviceCa,
  newSerial,
  parseCsr,
  type DeviceCa,
} from '../../core/device-certificates.ts';

describe('DER', () => {
  it('encodes lengths in short and long form', () => {
    expect(der.octetString(Buffer.alloc(3)).subarray(0, 2)).toEqual(Buffer.from([0x04, 3]));
    expect(der.octetString(Buffer.alloc(200)).subarray(0, 3)).toEqual(Buffer.from([0x04, 0x81, 200]));
    expect(der.octetString(Buffer.alloc(70_000)).subarray(0, 5)).toEqual(Buffer.from([0x04, 0x83, 0x01, 0x11, 0x70]));
  });

  it('encodes integers as positive, without redundant leading zeros', () => {
    expect(der.unsignedInteger(Buffer.from([0x00, 0x00, 0x7f]))).toEqual(Buffer.from([0x02, 1, 0x7f]));
    expect(der.unsignedInteger(Buffer.from([0x80]))).toEqual(Buffer.from([0x02, 2, 0x00, 0x80]));
    expect(der.smallInteger(0)).toEqual(Buffer.from([0x02, 1, 0]));
    expect(der.smallInteger(256)).toEqual(Buffer.from([0x02, 2, 1, 0]));
  });

  it('encodes object identifiers, named bits and both kinds of time', () => {
    // 1.2.840.10045.4.3.2, ecdsa-with-SHA256
    expect(der.objectIdentifier('1.2.840.10045.4.3.2').toString('hex')).toBe('06082a8648ce3d040302');
    expect(der.namedBits([0])).toEqual(Buffer.from([0x03, 2, 7, 0x80]));
    expect(der.namedBits([5, 6])).toEqual(Buffer.from([0x03, 2, 1, 0x06]));
    expect(der.time(new Date('2049-12-31T23:59:59Z')).toString('latin1')).toBe('\x17\x0d491231235959Z');
    expect(der.time(new Date('2050-01-01T00:00:00Z')).toString('latin1')).toBe('\x18\x0f20500101000000Z');
  });

  it('round-trips through a general ASN.1 parser', () => {
    const encoded = der.sequence(der.smallInteger(5), der.utf8String('dev-é'), der.boolean(true), der.explicit(3, der.nullValue()));
    const parsed = asn1js.fromBER(encoded);
    expect(parsed.offset).toBe(encoded.length);
    expect(Buffer.from(parsed.result.toBER(false))).toEqual(encoded);
  });
});

describe('certificates', () => {
  let ca: DeviceCa;

  beforeAll(async () => {
    const pems = await createCertificateAuthority('Unit CA', 10);
    ca = loadDeviceCa(pems.certificatePem, pems.privateKeyPem);
  });

  const now = Date.now();
  const validity = { notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000) };

  it('makes a CA that OpenSSL takes for one', () => {
    expect(ca.certificate.ca).toBe(true);
    expect(ca.certificate.subject).toBe('CN=Unit CA');
    expect(ca.certificate.verify(ca.certificate.publicKey)).toBe(true);
    expect(ca.keyIdentifier).toHaveLength(20);
  });

  it('issues a device certificate: the CN, the serial, signed by the CA, for client authentication', async () => {
    const key = await generateDeviceKey();
    const serial = newSerial();
    const pem = await issueCertificate(ca, { commonName: 'dev:1.a_b-c', publicKeyDer: key.publicKeyDer, serialHex: serial, ...validity, profile: { kind: 'device' } });
    const certificate = new X509Certificate(pem);
    expect(certificate.subject).toBe('CN=dev:1.a_b-c');
    expect(certificate.issuer).toBe('CN=Unit CA');
    expect(certificate.serialNumber.toLowerCase()).toBe(serial);
    expect(certificate.verify(ca.certificate.publicKey)).toBe(true);
    expect(certificate.checkIssued(ca.certificate)).toBe(true);
    expect(certificate.checkPrivateKey(createPrivateKey(key.privateKeyPem))).toBe(true);
    expect(certificate.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(certificate.ca).toBe(false);
  });

  it('never lets a certificate outlive its CA', async () => {
    const key = await generateDeviceKey();
    const pem = await issueCertificate(ca, { commonName: 'd', publicKeyDer: key.publicKeyDer, serialHex: newSerial(), notBefore: validity.notBefore, notAfter: new Date(now + 1_000 * 86_400_000), profile: { kind: 'device' } });
    expect(Date.parse(new X509Certificate(pem).validTo)).toBe(Date.parse(ca.certificate.validTo));
  });

  it('issues a server certificate naming its hosts', async () => {
    const key = await generateDeviceKey();
    const certificate = new X509Certificate(await issueCertificate(ca, { commonName: 'localhost', publicKeyDer: key.publicKeyDer, serialHex: newSerial(), ...validity, profile: { kind: 'server', hosts: ['localhost', '127.0.0.1'] } }));
    expect(certificate.subjectAltName).toBe('DNS:localhost, IP Address:127.0.0.1');
    expect(certificate.checkHost('localhost')).toBe('localhost');
    expect(certificate.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(certificate.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
  });

  it('signs with RSA, P-384 and Ed25519 CAs too', async () => {
    const keys = [
      generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey,
      generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey,
      generateKeyPairSync('ed25519').privateKey,
    ];
    for (const privateKey of keys) {
      const pems = await createCertificateAuthority('Other kind of CA', 1, privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
      const other = loadDeviceCa(pems.certificatePem, pems.privateKeyPem);
      const key = await generateDeviceKey();
      const pem = await issueCertificate(other, { commonName: 'd', publicKeyDer: key.publicKeyDer, serialHex: newSerial(), ...validity, profile: { kind: 'device' } });
      expect(new X509Certificate(pem).verify(createPublicKey(privateKey)), privateKey.asymmetricKeyType).toBe(true);
      expect(new X509Certificate(pem).checkIssued(other.certificate)).toBe(true);
    }
  });

  it('builds a CRL that lists the revoked serials and verifies with the CA key', async () => {
    const revokedAt = new Date('2026-06-01T00:00:00Z');
    const pem = await buildCrl(ca, { revoked: [{ serialHex: '01ab', revokedAt }, { serialHex: '7f00ff', revokedAt }], thisUpdate: new Date(now), nextUpdate: new Date(now + 86_400_000), crlNumber: 42 });
    const crl = CertificateRevocationList.fromBER(fromPem(pem, ['X509 CRL'])!);
    expect(crl.revokedCertificates?.map((entry) => Buffer.from(entry.userCertificate.valueBlock.valueHexView).toString('hex'))).toEqual(['01ab', '7f00ff']);
    const signed = Buffer.from(crl.tbsView);
    const signature = Buffer.from(crl.signatureValue.valueBlock.valueHexView);
    expect(verify('sha256', signed, ca.certificate.publicKey, signature)).toBe(true);
    const empty = CertificateRevocationList.fromBER(fromPem(await buildCrl(ca, { revoked: [], thisUpdate: new Date(now), nextUpdate: new Date(now + 1), crlNumber: 1 }), ['X509 CRL'])!);
    expect(empty.revokedCertificates).toBeUndefined();
  });

  it('refuses a CA key that is not the certificate\'s, and a certificate that is not a CA', async () => {
    const other = await createCertificateAuthority('Other', 1);
    expect(() => loadDeviceCa(ca.certificatePem, other.privateKeyPem)).toThrow(/does not belong/);
    const key = await generateDeviceKey();
    const leaf = await issueCertificate(ca, { commonName: 'leaf', publicKeyDer: key.publicKeyDer, serialHex: newSerial(), ...validity, profile: { kind: 'device' } });
    expect(() => loadDeviceCa(leaf, key.privateKeyPem)).toThrow(/not a CA/);
  });
});

describe('CSRs', () => {
  /** A minimal PKCS#10 request signed by `signer` for `publicKey`, built with the DER writer. */
  function csr(publicKeyDer: Buffer, signer: ReturnType<typeof createPrivateKey>, commonName = 'asked-for'): string {
    const info = der.sequence(
      der.smallInteger(0),
      der.sequence(der.set(der.sequence(der.objectIdentifier('2.5.4.3'), der.utf8String(commonName)))),
      publicKeyDer,
      der.explicit(0),
    );
    const algorithm = der.sequence(der.objectIdentifier('1.2.840.10045.4.3.2'));
    const body = der.sequence(info, algorithm, der.bitString(sign('sha256', info, signer)));
    return `-----BEGIN CERTIFICATE REQUEST-----\n${body.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
  }

  it('reads the key and the requested CN of a request signed by its key', async () => {
    const key = await generateDeviceKey();
    const request = parseCsr(csr(key.publicKeyDer, createPrivateKey(key.privateKeyPem)));
    expect(request.publicKeyDer).toEqual(key.publicKeyDer);
    expect(request.commonName).toBe('asked-for');
  });

  it('refuses a request signed by another key', async () => {
    const key = await generateDeviceKey();
    const thief = await generateDeviceKey();
    expect(() => parseCsr(csr(key.publicKeyDer, createPrivateKey(thief.privateKeyPem)))).toThrow(/does not verify/);
  });

  it('refuses what is not a request', () => {
    expect(() => parseCsr('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----')).toThrow(/PEM/);
    expect(() => parseCsr('-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----')).toThrow(/invalid_csr|cannot be parsed|no subject/);
  });
});
