// API key comparison in constant time: keys are hashed first so neither their content nor their
// length leaks through timing.
import { createHash, timingSafeEqual } from 'node:crypto';

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

export function createKeyMatcher(keys: readonly string[]): (candidate: string) => boolean {
  const digests = keys.map(digest);
  return (candidate) => {
    const candidateDigest = digest(candidate);
    let match = false;
    for (const known of digests) match = timingSafeEqual(known, candidateDigest) || match;
    return match;
  };
}

/**
 * A stable, non-reversible name for an API key, for scoping what a key did (idempotency keys)
 * without storing the key. Domain-separated so it is not the digest used for comparison.
 */
export function apiKeyFingerprint(key: string): string {
  return createHash('sha256').update('otter-api-key:').update(key).digest('hex');
}
