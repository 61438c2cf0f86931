// Signed firmware download URLs, one per device: an HMAC of the firmware id, the device id and the
// expiry, so a URL handed to a device works for that file and that device only, until it expires.
import { createHmac, timingSafeEqual } from 'node:crypto';

export type SignatureCheck = 'valid' | 'expired' | 'invalid';

/** Extra lifetime of a URL beyond its attempt's timeout: a device may start the download late. */
export const DOWNLOAD_URL_GRACE_SECONDS = 3600;

function hmac(secret: string, firmwareId: string, deviceId: string, expires: number): string {
  // a JSON array keeps the parts apart whatever a device id contains
  return createHmac('sha256', secret).update(JSON.stringify(['firmware-download', firmwareId, deviceId, expires])).digest('base64url');
}

export function firmwareFilePath(firmwareId: string): string {
  return `/files/firmware/${firmwareId}`;
}

/** How long a URL handed out for an attempt lives: its timeout plus an hour, at most `maxSeconds`. */
export function downloadUrlTtlSeconds(timeoutSeconds: number, maxSeconds: number): number {
  return Math.max(1, Math.min(timeoutSeconds + DOWNLOAD_URL_GRACE_SECONDS, maxSeconds));
}

export function signDownloadUrl(
  baseUrl: string,
  secret: string,
  firmwareId: string,
  deviceId: string,
  ttlSeconds: number,
  nowMs = Date.now(),
): string {
  const expires = Math.floor(nowMs / 1000) + ttlSeconds;
  const signature = hmac(secret, firmwareId, deviceId, expires);
  return `${baseUrl}${firmwareFilePath(firmwareId)}?device=${encodeURIComponent(deviceId)}&expires=${expires}&signature=${signature}`;
}

export function checkDownloadSignature(
  secret: string,
  firmwareId: string,
  deviceId: string | undefined,
  expires: string | number | undefined,
  signature: string | undefined,
  nowMs = Date.now(),
): SignatureCheck {
  if (deviceId === undefined || expires === undefined || signature === undefined) return 'invalid';
  const expiresAt = Number(expires);
  if (!Number.isSafeInteger(expiresAt)) return 'invalid';
  const expected = Buffer.from(hmac(secret, firmwareId, deviceId, expiresAt));
  const given = Buffer.from(String(signature));
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) return 'invalid';
  return expiresAt * 1000 < nowMs ? 'expired' : 'valid';
}
