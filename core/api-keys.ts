// API keys and their roles (docs/rest-api.md#authentication, docs/operations.md#roles). Keys are
// compared in constant time: they are hashed first so neither their content nor their length leaks
// through timing.
import { createHash, timingSafeEqual } from 'node:crypto';
import { OtterError } from './errors.ts';

/** What a key may do: `viewer` reads only, `operator` all but bull-board's write actions, `admin` all. */
export type ApiRole = 'admin' | 'operator' | 'viewer';

export const API_ROLES: readonly ApiRole[] = ['admin', 'operator', 'viewer'];

/** One entry of API_KEYS: the key and the role it gives. */
export interface ApiKeyEntry {
  key: string;
  role: ApiRole;
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

function isRole(value: string): value is ApiRole {
  return (API_ROLES as readonly string[]).includes(value);
}

/**
 * One API_KEYS entry: `key` (an admin) or `key:role`. The text after the last `:` must be a role,
 * so a typo in a role never silently makes an admin; the error names the entry's position, never the key.
 */
export function parseApiKeyEntry(entry: string, position = 1): ApiKeyEntry {
  const colon = entry.lastIndexOf(':');
  if (colon < 0) return { key: entry, role: 'admin' };
  const key = entry.slice(0, colon).trim();
  const role = entry.slice(colon + 1).trim();
  if (!isRole(role)) {
    // the text is not echoed: it may be part of a key that holds a colon
    throw new OtterError('config_error', `API_KEYS entry ${position}: the text after its last ":" is not a role (admin, operator or viewer)`, 500);
  }
  if (key.length === 0) throw new OtterError('config_error', `API_KEYS entry ${position} has a role but no key`, 500);
  return { key, role };
}

/** API_KEYS: comma-separated entries, blanks ignored; a key listed twice keeps its first role. */
export function parseApiKeys(raw: string): ApiKeyEntry[] {
  const entries: ApiKeyEntry[] = [];
  const seen = new Set<string>();
  raw.split(',').map((entry) => entry.trim()).filter((entry) => entry.length > 0).forEach((text, index) => {
    const entry = parseApiKeyEntry(text, index + 1);
    if (seen.has(entry.key)) return;
    seen.add(entry.key);
    entries.push(entry);
  });
  return entries;
}

export function createKeyMatcher(keys: readonly string[]): (candidate: string) => boolean {
  const ring = createKeyRing(keys.map((key) => ({ key, role: 'admin' as const })));
  return (candidate) => ring.match(candidate) !== null;
}

/** An accepted key as the rest of the service sees it: never the key itself. */
export interface KeyIdentity {
  role: ApiRole;
  /** apiKeyFingerprint: scopes what a key did (idempotency keys, console sessions). */
  hash: string;
  /** auditKeyFingerprint: names the key in the audit log. */
  auditFingerprint: string;
}

export interface KeyRing {
  /** The identity of a presented key, or null; constant time over every configured key. */
  match(candidate: string): KeyIdentity | null;
  /** The identity whose hash this is (a console session names its key so), or null. */
  byHash(hash: string): KeyIdentity | null;
  /** The configured key behind a hash, for calls the console makes on its user's behalf. */
  keyOf(hash: string): string | null;
}

export function createKeyRing(entries: readonly ApiKeyEntry[]): KeyRing {
  const known = entries.map((entry) => ({
    digest: digest(entry.key),
    key: entry.key,
    identity: { role: entry.role, hash: apiKeyFingerprint(entry.key), auditFingerprint: auditKeyFingerprint(entry.key) },
  }));
  const byHash = new Map(known.map((item) => [item.identity.hash, item]));
  return {
    match(candidate) {
      const candidateDigest = digest(candidate);
      let found: KeyIdentity | null = null;
      for (const item of known) {
        if (timingSafeEqual(item.digest, candidateDigest)) found = item.identity;
      }
      return found;
    },
    byHash: (hash) => byHash.get(hash)?.identity ?? null,
    keyOf: (hash) => byHash.get(hash)?.key ?? null,
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

/** The role an API_KEYS entry gives: `key` alone is an admin, `key:role` that role. */
export function roleOfKey(entry: string): ApiRole {
  return parseApiKeyEntry(entry).role;
}
