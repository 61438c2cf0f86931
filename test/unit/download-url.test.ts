// Signed firmware download URLs: what a signature binds (secret, firmware, device, expiry), when it
// lapses, and how long a URL handed out for an attempt lives.
import { describe, expect, it } from 'vitest';
import { checkDownloadSignature, downloadUrlTtlSeconds, firmwareFilePath, signDownloadUrl } from '../../core/download-url.ts';

const SECRET = 'unit-secret';
const FIRMWARE = '0b0e1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d';
const DEVICE = 'meter-001';
const NOW = Date.UTC(2026, 0, 1, 12, 0, 0);

function parts(url: string): { path: string; device: string; expires: string; signature: string } {
  const parsed = new URL(url);
  return {
    path: parsed.pathname,
    device: parsed.searchParams.get('device') ?? '',
    expires: parsed.searchParams.get('expires') ?? '',
    signature: parsed.searchParams.get('signature') ?? '',
  };
}

describe('download URLs', () => {
  it('puts the file path, the device, the expiry and a signature on the base URL', () => {
    const url = signDownloadUrl('https://ota.example.com', SECRET, FIRMWARE, DEVICE, 600, NOW);
    expect(url.startsWith(`https://ota.example.com/files/firmware/${FIRMWARE}?device=${DEVICE}&`)).toBe(true);
    const { path, device, expires, signature } = parts(url);
    expect(path).toBe(firmwareFilePath(FIRMWARE));
    expect(device).toBe(DEVICE);
    expect(Number(expires)).toBe(NOW / 1000 + 600);
    expect(signature).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('accepts its own signature until the expiry and reports it expired after', () => {
    const { expires, signature } = parts(signDownloadUrl('http://h', SECRET, FIRMWARE, DEVICE, 600, NOW));
    expect(checkDownloadSignature(SECRET, FIRMWARE, DEVICE, expires, signature, NOW)).toBe('valid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, DEVICE, expires, signature, NOW + 600_000)).toBe('valid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, DEVICE, expires, signature, NOW + 601_000)).toBe('expired');
    expect(checkDownloadSignature(SECRET, FIRMWARE, DEVICE, Number(expires), signature, NOW)).toBe('valid');
  });

  it('reports a URL signed with a ttl in the past as expired', () => {
    const { expires, signature } = parts(signDownloadUrl('http://h', SECRET, FIRMWARE, DEVICE, 60, NOW - 3_600_000));
    expect(checkDownloadSignature(SECRET, FIRMWARE, DEVICE, expires, signature, NOW)).toBe('expired');
  });

  it('binds the signature to the secret, the firmware, the device and the expiry', () => {
    const { expires, signature } = parts(signDownloadUrl('http://h', SECRET, FIRMWARE, DEVICE, 600, NOW));
    expect(checkDownloadSignature('other-secret', FIRMWARE, DEVICE, expires, signature, NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, FIRMWARE.replace('0b0e', '0b0f'), DEVICE, expires, signature, NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, 'meter-002', expires, signature, NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, `${DEVICE} `, expires, signature, NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, DEVICE, String(Number(expires) + 1), signature, NOW)).toBe('invalid');
    const flipped = (signature[0] === 'A' ? 'B' : 'A') + signature.slice(1);
    expect(checkDownloadSignature(SECRET, FIRMWARE, DEVICE, expires, flipped, NOW)).toBe('invalid');
  });

  it('gives two devices different URLs for the same firmware and moment', () => {
    const first = signDownloadUrl('http://h', SECRET, FIRMWARE, 'a', 600, NOW);
    const second = signDownloadUrl('http://h', SECRET, FIRMWARE, 'b', 600, NOW);
    expect(parts(first).signature).not.toBe(parts(second).signature);
  });

  it('keeps the parts apart: a device id cannot absorb the firmware id or the expiry', () => {
    // ids with the characters a naive joined string would use as separators
    const { expires, signature } = parts(signDownloadUrl('http://h', SECRET, FIRMWARE, 'a:b', 600, NOW));
    expect(checkDownloadSignature(SECRET, FIRMWARE, 'a:b', expires, signature, NOW)).toBe('valid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, 'a', expires, signature, NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, `${FIRMWARE}:a`, 'b', expires, signature, NOW)).toBe('invalid');
  });

  it('escapes the device id in the URL', () => {
    const url = signDownloadUrl('http://h', SECRET, FIRMWARE, 'a&expires=1', 600, NOW);
    const { device, expires, signature } = parts(url);
    expect(device).toBe('a&expires=1');
    expect(checkDownloadSignature(SECRET, FIRMWARE, device, expires, signature, NOW)).toBe('valid');
  });

  it('refuses missing, truncated and malformed parts', () => {
    const { expires, signature } = parts(signDownloadUrl('http://h', SECRET, FIRMWARE, DEVICE, 600, NOW));
    expect(checkDownloadSignature(SECRET, FIRMWARE, undefined, expires, signature, NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, DEVICE, undefined, signature, NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, DEVICE, expires, undefined, NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, DEVICE, expires, signature.slice(1), NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, DEVICE, expires, '', NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, DEVICE, 'soon', signature, NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, DEVICE, '1e30', signature, NOW)).toBe('invalid');
  });

  it('lets a URL live for the attempt timeout plus an hour, at most the configured ceiling', () => {
    expect(downloadUrlTtlSeconds(600, 86_400)).toBe(4200);
    expect(downloadUrlTtlSeconds(86_400, 86_400)).toBe(86_400);
    expect(downloadUrlTtlSeconds(600, 1800)).toBe(1800);
  });
});
