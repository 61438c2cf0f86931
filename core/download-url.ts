// Signed firmware download URLs: an HMAC of the firmware id and the expiry, so a URL handed to a
// device works for that file only, and only until it expires.
import { createHmac, timingSafeEqual } from 'node:crypto';

export type SignatureCheck = 'valid' | 'expired' | 'invalid';

function hmac(secret: string, firmwareId: string, expires: number): string {
  return createHmac('sha256', secret).update(`firmware:${firmwareId}:${expires}`).digest('base64url');
}

export function firmwareFilePath(firmwareId: string): string {
  return `/files/firmware/${firmwareId}`;
}

export function signDownloadUrl(
  baseUrl: string,
  secret: string,
  firmwareId: string,
  ttlSeconds: number,
  nowMs = Date.now(),
): string {
  const expires = Math.floor(nowMs / 1000) + ttlSeconds;
  return `${baseUrl}${firmwareFilePath(firmwareId)}?expires=${expires}&signature=${hmac(secret, firmwareId, expires)}`;
}

export function checkDownloadSignature(
  secret: string,
  firmwareId: string,
  expires: string | number | undefined,
  signature: string | undefined,
  nowMs = Date.now(),
): SignatureCheck {
  if (expires === undefined || signature === undefined) return 'invalid';
  const expiresAt = Number(expires);
  if (!Number.isSafeInteger(expiresAt)) return 'invalid';
  const expected = Buffer.from(hmac(secret, firmwareId, expiresAt));
  const given = Buffer.from(String(signature));
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) return 'invalid';
  return expiresAt * 1000 < nowMs ? 'expired' : 'valid';
}
