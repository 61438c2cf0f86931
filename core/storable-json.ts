// What PostgreSQL and the JSON code around it can store: no U+0000 in any text (neither text nor
// jsonb holds it) and no nesting deeper than any real message needs (JSON.stringify of a deeply
// nested value overflows the stack). Checked on what arrives from outside, before it is stored.

export const MAX_JSON_DEPTH = 32;

export interface UnstorablePart {
  /** Where in the value: `''` for the value itself, `/a/0` for a nested part. */
  path: string;
  problem: string;
}

/** The first part of a JSON-like value that cannot be stored, or undefined. Iterative: any input depth is safe. */
export function findUnstorable(value: unknown, maxDepth = MAX_JSON_DEPTH): UnstorablePart | undefined {
  const stack: Array<[unknown, string, number]> = [[value, '', 0]];
  while (stack.length > 0) {
    const [current, path, depth] = stack.pop()!;
    if (typeof current === 'string') {
      if (current.includes('\u0000')) return { path, problem: 'text must not contain NUL (\\u0000) characters' };
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
      if (key.includes('\u0000')) return { path: itemPath, problem: 'text must not contain NUL (\\u0000) characters' };
      stack.push([item, itemPath, depth + 1]);
    }
  }
  return undefined;
}
