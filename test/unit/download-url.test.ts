// Signed firmware download URLs: what a signature binds (secret, firmware, expiry) and when it lapses.
import { describe, expect, it } from 'vitest';
import { checkDownloadSignature, firmwareFilePath, signDownloadUrl } from '../../core/download-url.ts';

const SECRET = 'unit-secret';
const FIRMWARE = '0b0e1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d';
const NOW = Date.UTC(2026, 0, 1, 12, 0, 0);

function parts(url: string): { path: string; expires: string; signature: string } {
  const parsed = new URL(url);
  return {
    path: parsed.pathname,
    expires: parsed.searchParams.get('expires') ?? '',
    signature: parsed.searchParams.get('signature') ?? '',
  };
}

describe('download URLs', () => {
  it('puts the file path, the expiry and a signature on the base URL', () => {
    const url = signDownloadUrl('https://ota.example.com', SECRET, FIRMWARE, 600, NOW);
    expect(url.startsWith(`https://ota.example.com/files/firmware/${FIRMWARE}?`)).toBe(true);
    const { path, expires, signature } = parts(url);
    expect(path).toBe(firmwareFilePath(FIRMWARE));
    expect(Number(expires)).toBe(NOW / 1000 + 600);
    expect(signature).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('accepts its own signature until the expiry and reports it expired after', () => {
    const { expires, signature } = parts(signDownloadUrl('http://h', SECRET, FIRMWARE, 600, NOW));
    expect(checkDownloadSignature(SECRET, FIRMWARE, expires, signature, NOW)).toBe('valid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, expires, signature, NOW + 600_000)).toBe('valid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, expires, signature, NOW + 601_000)).toBe('expired');
    expect(checkDownloadSignature(SECRET, FIRMWARE, Number(expires), signature, NOW)).toBe('valid');
  });

  it('reports a URL signed with a ttl in the past as expired', () => {
    const { expires, signature } = parts(signDownloadUrl('http://h', SECRET, FIRMWARE, 60, NOW - 3_600_000));
    expect(checkDownloadSignature(SECRET, FIRMWARE, expires, signature, NOW)).toBe('expired');
  });

  it('binds the signature to the secret, the firmware and the expiry', () => {
    const { expires, signature } = parts(signDownloadUrl('http://h', SECRET, FIRMWARE, 600, NOW));
    expect(checkDownloadSignature('other-secret', FIRMWARE, expires, signature, NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, FIRMWARE.replace('0b0e', '0b0f'), expires, signature, NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, String(Number(expires) + 1), signature, NOW)).toBe('invalid');
    const flipped = (signature[0] === 'A' ? 'B' : 'A') + signature.slice(1);
    expect(checkDownloadSignature(SECRET, FIRMWARE, expires, flipped, NOW)).toBe('invalid');
  });

  it('refuses missing, truncated and malformed parts', () => {
    const { expires, signature } = parts(signDownloadUrl('http://h', SECRET, FIRMWARE, 600, NOW));
    expect(checkDownloadSignature(SECRET, FIRMWARE, undefined, signature, NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, expires, undefined, NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, expires, signature.slice(1), NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, expires, '', NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, 'soon', signature, NOW)).toBe('invalid');
    expect(checkDownloadSignature(SECRET, FIRMWARE, '1e30', signature, NOW)).toBe('invalid');
  });
});
