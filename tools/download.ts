// What a pulling device does with a firmware URL: download it and check its digest against the
// `sign` it was given.
import { createHash } from 'node:crypto';

export async function verifyDownload(url: string, sign: string | null, signMethod: string | null): Promise<boolean> {
  const response = await fetch(url, { signal: AbortSignal.timeout(30_000) });
  if (!response.ok || !response.body) return false;
  if (!sign) {
    await response.arrayBuffer();
    return true;
  }
  const hash = createHash(signMethod === 'md5' ? 'md5' : 'sha256');
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) hash.update(chunk);
  return hash.digest('hex') === sign.toLowerCase();
}
