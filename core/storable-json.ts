// What PostgreSQL and the JSON code around it can store: no U+0000 in any text (neither text nor
// jsonb holds it), no lone UTF-16 surrogate (valid JSON, but jsonb refuses it) and no nesting
// deeper than any real message needs (JSON.stringify of a deeply nested value overflows the stack). Checked on what arrives from outside, before it is stored.

export const MAX_JSON_DEPTH = 32;

export interface UnstorablePart {
  /** Where in the value: `''` for the value itself, `/a/0` for a nested part. */
  path: string;
  problem: string;
}

const NUL = 'text must not contain NUL (\\u0000) characters';
const LONE_SURROGATE = 'text must be valid Unicode (a lone surrogate such as \\udc00 is not)';
// with the u flag a surrogate pair is one code point; only a lone surrogate is in \p{Cs}
const LONE_SURROGATE_RE = /\p{Cs}/u;

function textProblem(text: string): string | undefined {
  if (text.includes('\u0000')) return NUL;
  if (LONE_SURROGATE_RE.test(text)) return LONE_SURROGATE;
  return undefined;
}

/** The first part of a JSON-like value that cannot be stored, or undefined. Iterative: any input depth is safe. */
export function findUnstorable(value: unknown, maxDepth = MAX_JSON_DEPTH): UnstorablePart | undefined {
  const stack: Array<[unknown, string, number]> = [[value, '', 0]];
  while (stack.length > 0) {
    const [current, path, depth] = stack.pop()!;
    if (typeof current === 'string') {
      const problem = textProblem(current);
      if (problem) return { path, problem };
      continue;
    }
    if (current === null || typeof current !== 'object') continue;
    // streams and byte buffers (upload bodies) are not JSON
    if (ArrayBuffer.isView(current) || typeof (current as { pipe?: unknown }).pipe === 'function') continue;
    if (depth >= maxDepth) return { path, problem: `must not be nested more than ${maxDepth} levels deep` };
    if (Array.isArray(current)) {
      for (let index = current.length - 1; index >= 0; index -= 1) stack.push([current[index], `${path}/${index}`, depth + 1]);
      continue;
    }
    for (const [key, item] of Object.entries(current as Record<string, unknown>).reverse()) {
      const itemPath = `${path}/${key.replaceAll('\u0000', '\\u0000')}`;
      const problem = textProblem(key);
      if (problem) return { path: itemPath, problem };
      stack.push([item, itemPath, depth + 1]);
    }
  }
  return undefined;
}
