// findUnstorable: U+0000 in text or keys and nesting beyond the limit are found, with where they are;
// anything else passes, at any depth of input, without recursion.
import { describe, expect, it } from 'vitest';
import { MAX_JSON_DEPTH, findUnstorable } from '../../core/storable-json.ts';

describe('findUnstorable', () => {
  it.each([
    ['plain values', { a: 'b', n: 1, list: [1, 'x', null, true], nested: { c: { d: 'e' } } }],
    ['null', null],
    ['a string', 'text'],
    ['a number', 5],
    ['a buffer', Buffer.from([0, 0, 0])],
    ['emoji (surrogate pairs)', { '名前': '😀 ok', list: ['🚀'] }],
    ['nesting at the limit', Array.from({ length: MAX_JSON_DEPTH - 1 }).reduce<unknown>((value) => [value], 'x')],
  ])('passes %s', (_name, value) => {
    expect(findUnstorable(value)).toBeUndefined();
  });

  it.each([
    ['a NUL string', 'a\u0000', ''],
    ['a NUL value', { a: { b: ['x', 'y\u0000'] } }, '/a/b/1'],
    ['a NUL key', { a: { 'k\u0000': 1 } }, '/a/k\\u0000'],
  ])('finds %s', (_name, value, path) => {
    expect(findUnstorable(value)).toEqual({ path, problem: expect.stringMatching(/NUL/) });
  });

  it.each([
    ['a lone low surrogate', { a: 'x\udc00' }, '/a'],
    ['a lone high surrogate at the end', ['ok', 'x\ud83d'], '/1'],
    ['a lone surrogate in a key', { 'k\udc00': 1 }, '/k\udc00'],
  ])('finds %s (PostgreSQL jsonb refuses it)', (_name, value, path) => {
    expect(findUnstorable(value)).toEqual({ path, problem: expect.stringMatching(/surrogate/) });
  });

  it('finds nesting beyond the limit, however deep the input is', () => {
    let value: unknown = 'x';
    for (let i = 0; i < 200_000; i += 1) value = { a: value };
    const found = findUnstorable(value);
    expect(found?.problem).toMatch(/nested/);
    expect(found?.path).toBe('/a'.repeat(MAX_JSON_DEPTH));
    expect(findUnstorable({ a: [[['x']]] }, 3)).toEqual({ path: '/a/0/0', problem: expect.stringMatching(/nested more than 3/) });
  });

  it('reports the first problem in document order', () => {
    expect(findUnstorable({ first: 'a\u0000', second: 'b\u0000' })?.path).toBe('/first');
    expect(findUnstorable(['ok', ['a\u0000'], 'b\u0000'])?.path).toBe('/1/0');
  });
});
