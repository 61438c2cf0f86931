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

/**
 * The key as the audit log names it: the first 12 hex digits of its plain SHA-256, so an operator
 * can tell which key did what (`printf %s "$KEY" | sha256sum | cut -c1-12`) without it being stored.
 */
export function auditKeyFingerprint(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 12);
}

/** What a key may do. Every key is an admin today; a viewer role reads but may not change or audit. */
export type ApiRole = 'admin' | 'viewer';

/** The role of an accepted key: the one place a per-key role plugs in. */
export function roleOfKey(_key: string): ApiRole {
  return 'admin';
}
