// Schemas shared by every route group: ids, paging, the error body.
import { Type, type TSchema } from 'typebox';
import { IDEMPOTENCY_KEY_PATTERN } from '../../core/idempotency.ts';

/** Device and product ids: 1–64 characters of A-Z a-z 0-9 _ - . : (docs/rest-api.md#conventions). */
export const EntityId = Type.String({ pattern: '^[A-Za-z0-9_.:-]{1,64}$', minLength: 1, maxLength: 64 });
export const Uuid = Type.String({ format: 'uuid' });
export const Timestamp = Type.String({ format: 'date-time' });
export const NullableTimestamp = Type.Union([Timestamp, Type.Null()]);

export const UuidParams = Type.Object({ id: Uuid });
export const EntityIdParams = Type.Object({ id: EntityId });

export const PagingQuery = {
  page: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, default: 1 })),
  pageSize: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 20 })),
};

export function Page<T extends TSchema>(item: T) {
  return Type.Object({
    items: Type.Array(item),
    total: Type.Integer(),
    page: Type.Integer(),
    pageSize: Type.Integer(),
  });
}

/** The Idempotency-Key header of the routes that honour it (api/plugins/idempotency.ts). */
export const IdempotencyHeaders = Type.Object({
  'idempotency-key': Type.Optional(Type.String({
    minLength: 1,
    maxLength: 255,
    pattern: IDEMPOTENCY_KEY_PATTERN,
    description: 'Makes the request safe to repeat: a repeat with the same key (within 24 h, same API key, '
      + 'same path) gets the first answer back with `Idempotency-Replayed: true` and does nothing twice; '
      + 'the same key with a different body → 422 `idempotency_key_reused`; while the first is still '
      + 'running → 409 `idempotency_key_in_progress`. 1–255 visible ASCII characters, e.g. a UUID.',
  })),
});

/** One entity tag, strong ("3") or weak (W/"3"), as RFC 9110 writes them. */
const ENTITY_TAG = '(W/)?"[\\x21\\x23-\\x7e]*"';
/** `*` or a comma-separated list of entity tags. */
export const IF_MATCH_PATTERN = `^\\s*(\\*|${ENTITY_TAG}(\\s*,\\s*${ENTITY_TAG})*)\\s*$`;

/** The If-Match header of the routes that change or delete one firmware or task. */
export const IfMatchHeaders = Type.Object({
  'if-match': Type.Optional(Type.String({
    maxLength: 1024,
    pattern: IF_MATCH_PATTERN,
    description: 'Optimistic concurrency: the ETag of the version the change is based on, e.g. `"3"` (the '
      + '`revision` in quotes). If the resource has changed since, nothing is written and the answer is 412 '
      + '`precondition_failed`; read it again and retry. `*` or no header: no check.',
  })),
});

/** The strong ETag of a firmware or task at `revision`: the revision in quotes. */
export function etagOf(revision: number): string {
  return `"${revision}"`;
}

/**
 * The revisions an If-Match header accepts, or undefined when it sets no condition (absent or `*`).
 * If-Match compares strongly: a weak tag, or one that is not a revision of ours, matches nothing.
 */
export function ifMatchRevisions(header: string | string[] | undefined): number[] | undefined {
  if (header === undefined) return undefined;
  const tags = (Array.isArray(header) ? header.join(',') : header).split(',').map((tag) => tag.trim());
  if (tags.includes('*')) return undefined;
  return tags.flatMap((tag) => {
    const revision = /^"(\d{1,10})"$/.exec(tag)?.[1];
    return revision === undefined || Number(revision) > 2 ** 31 - 1 ? [] : [Number(revision)];
  });
}

export const ErrorReply = Type.Object({
  statusCode: Type.Integer(),
  code: Type.String({ description: 'stable machine code, e.g. validation_error, not_found, conflict' }),
  error: Type.String(),
  message: Type.String(),
  details: Type.Optional(Type.Array(Type.Object({
    path: Type.String({ description: 'JSON Pointer into the part of the request that was refused, e.g. /rollout/maxPerMinut' }),
    message: Type.String({ description: 'what is wrong there, e.g. unknown property' }),
  }), { description: 'what a refused request got wrong (validation_error)' })),
}, { $id: 'Error' });

export function paging(query: { page?: number; pageSize?: number }): { page: number; pageSize: number; offset: number } {
  const page = query.page ?? 1;
  const pageSize = query.pageSize ?? 20;
  return { page, pageSize, offset: (page - 1) * pageSize };
}

/** ISO-8601 text of a time from the database (docs/rest-api.md#conventions: times are ISO strings). */
export function iso(value: Date | string | null | undefined): string | null {
  if (value === null || value === undefined) return null;
  return (value instanceof Date ? value : new Date(value)).toISOString();
}
