// API_KEYS entries with roles (docs/operations.md#roles): `key` is an admin, `key:role` that role; a
// misspelt role stops the start without echoing what may be part of a key; lookups by key and by hash.
import { describe, expect, it } from 'vitest';
import { apiKeyFingerprint, auditKeyFingerprint, createKeyRing, parseApiKeys, roleOfKey } from '../../core/api-keys.ts';
import { ConfigError, loadConfig } from '../../core/config.ts';

describe('parseApiKeys', () => {
  it('reads key and key:role entries, admin by default, blanks and spaces ignored', () => {
    expect(parseApiKeys(' a , b:viewer,,c:operator, d:admin ')).toEqual([
      { key: 'a', role: 'admin' },
      { key: 'b', role: 'viewer' },
      { key: 'c', role: 'operator' },
      { key: 'd', role: 'admin' },
    ]);
  });

  it('splits at the last colon, so a key may hold colons', () => {
    expect(parseApiKeys('x:y:z:viewer')).toEqual([{ key: 'x:y:z', role: 'viewer' }]);
  });

  it('refuses an unknown role without echoing the text, and a role without a key', () => {
    expect(() => parseApiKeys('good,secret-part:supersecret')).toThrow(/entry 2: the text after its last ":" is not a role/);
    try {
      parseApiKeys('secret-part:supersecret');
    } catch (error) {
      expect((error as Error).message).not.toContain('supersecret');
      expect((error as Error).message).not.toContain('secret-part');
    }
    expect(() => parseApiKeys(':viewer')).toThrow(/has a role but no key/);
    expect(() => parseApiKeys('k:Viewer')).toThrow();
  });

  it('keeps the first role of a key listed twice', () => {
    expect(parseApiKeys('k:viewer,k:admin')).toEqual([{ key: 'k', role: 'viewer' }]);
  });

  it('roleOfKey: the role an entry gives', () => {
    expect(roleOfKey('plain-key')).toBe('admin');
    expect(roleOfKey('k:operator')).toBe('operator');
    expect(roleOfKey('k:viewer')).toBe('viewer');
  });
});

describe('createKeyRing', () => {
  const ring = createKeyRing(parseApiKeys('alpha,beta:viewer,gamma:operator'));

  it('matches each key to its role and fingerprints, and nothing else', () => {
    expect(ring.match('beta')).toEqual({ role: 'viewer', hash: apiKeyFingerprint('beta'), auditFingerprint: auditKeyFingerprint('beta') });
    expect(ring.match('gamma')?.role).toBe('operator');
    expect(ring.match('alpha')?.role).toBe('admin');
    for (const wrong of ['', 'beta:viewer', 'Beta', 'alph', 'alpha ']) expect(ring.match(wrong)).toBeNull();
  });

  it('finds a key by its hash (console sessions), and only a configured one', () => {
    expect(ring.byHash(apiKeyFingerprint('gamma'))?.role).toBe('operator');
    expect(ring.keyOf(apiKeyFingerprint('gamma'))).toBe('gamma');
    expect(ring.byHash(apiKeyFingerprint('delta'))).toBeNull();
    expect(ring.keyOf('0'.repeat(64))).toBeNull();
  });
});

describe('API_KEYS in the configuration', () => {
  it('gives the keys without their roles, and each entry with its role', () => {
    const config = loadConfig({ API_KEYS: 'a,b:viewer' });
    expect(config.apiKeys).toEqual(['a', 'b']);
    expect(config.apiKeyEntries).toEqual([{ key: 'a', role: 'admin' }, { key: 'b', role: 'viewer' }]);
  });

  it('stops on a bad role with a ConfigError', () => {
    expect(() => loadConfig({ API_KEYS: 'a:root' })).toThrow(ConfigError);
  });

  it('derives the console session secret from the keys unless CONSOLE_SESSION_SECRET is set', () => {
    const one = loadConfig({ API_KEYS: 'a,b:viewer' }).consoleSessionSecret;
    expect(loadConfig({ API_KEYS: 'a,b:viewer' }).consoleSessionSecret).toBe(one);
    expect(loadConfig({ API_KEYS: 'a,b:operator' }).consoleSessionSecret).not.toBe(one);
    expect(one).toMatch(/^[0-9a-f]{64}$/);
    expect(loadConfig({ API_KEYS: 'a', CONSOLE_SESSION_SECRET: 'shared' }).consoleSessionSecret).toBe('shared');
    expect(loadConfig({ API_KEYS: 'a' }).consoleSessionSeconds).toBe(12 * 3600);
    expect(loadConfig({ API_KEYS: 'a', CONSOLE_SESSION_HOURS: '1' }).consoleSessionSeconds).toBe(3600);
  });
});
