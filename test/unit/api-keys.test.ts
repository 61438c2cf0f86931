// createKeyMatcher: exact matches only, for any number of keys, whatever their length.
import { describe, expect, it } from 'vitest';
import { createKeyMatcher } from '../../core/api-keys.ts';

describe('createKeyMatcher', () => {
  it('accepts each configured key', () => {
    const matches = createKeyMatcher(['alpha', 'beta-key', 'γάμμα']);
    expect(matches('alpha')).toBe(true);
    expect(matches('beta-key')).toBe(true);
    expect(matches('γάμμα')).toBe(true);
  });

  it.each([
    ['a different key', 'gamma'],
    ['the empty string', ''],
    ['a prefix of a key', 'alph'],
    ['a key with something appended', 'alpha1'],
    ['a key in another case', 'ALPHA'],
    ['a key with white space around it', ' alpha '],
    ['two keys joined', 'alpha,beta-key'],
  ])('refuses %s', (_name, candidate) => {
    const matches = createKeyMatcher(['alpha', 'beta-key']);
    expect(matches(candidate)).toBe(false);
  });

  it('refuses everything when no key is configured', () => {
    const matches = createKeyMatcher([]);
    expect(matches('')).toBe(false);
    expect(matches('anything')).toBe(false);
  });

  it('compares keys of any length, long ones included', () => {
    const long = 'k'.repeat(10_000);
    const matches = createKeyMatcher([long]);
    expect(matches(long)).toBe(true);
    expect(matches(long.slice(1))).toBe(false);
    expect(matches(`${long}k`)).toBe(false);
  });

  it('matches any key of the list, not only the first or last', () => {
    const keys = Array.from({ length: 50 }, (_, i) => `key-${i}`);
    const matches = createKeyMatcher(keys);
    for (const key of keys) expect(matches(key)).toBe(true);
    expect(matches('key-50')).toBe(false);
  });
});
