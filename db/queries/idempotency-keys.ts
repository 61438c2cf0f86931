// Idempotency keys: claim a key for a request, find what an earlier request with it left, store
// the answer to replay, give the key back when the request failed, and sweep expired keys.
import { sql } from 'kysely';
import type { Db } from '../connection.ts';
import type { IdempotencyKeyRow } from '../database.ts';

/** Which request a key belongs to: the API key's hash, method, path and the key itself. */
export interface IdempotencyScope {
  apiKeyHash: string;
  method: string;
  path: string;
  key: string;
}

/** The row of a scope, as a kysely `and` of column equalities. */
function inScope(scope: IdempotencyScope) {
  return { api_key_hash: scope.apiKeyHash, method: scope.method, path: scope.path, idempotency_key: scope.key };
}

export interface IdempotencyClaim extends IdempotencyScope {
  requestHash: string;
  ttlSeconds: number;
  /** An in-progress key older than this is taken to belong to a request that died with its process. */
  staleAfterSeconds: number;
}

/**
 * Inserts the key in state `in_progress`; true when this request won it. A key that expired, or
 * whose request has been in progress far longer than any request runs, is taken over.
 */
export async function claimIdempotencyKey(db: Db, claim: IdempotencyClaim): Promise<boolean> {
  const won = await db
    .insertInto('idempotency_keys')
    .values({
      api_key_hash: claim.apiKeyHash,
      method: claim.method,
      path: claim.path,
      idempotency_key: claim.key,
      request_hash: claim.requestHash,
      expires_at: sql<Date>`now() + make_interval(secs => ${claim.ttlSeconds})`,
    })
    .onConflict((conflict) =>
      conflict
        .columns(['api_key_hash', 'method', 'path', 'idempotency_key'])
        .doUpdateSet({
          request_hash: (eb) => eb.ref('excluded.request_hash'),
          state: 'in_progress',
          response_status: null,
          response_body: null,
          created_at: sql<Date>`now()`,
          expires_at: (eb) => eb.ref('excluded.expires_at'),
        })
        .where((eb) =>
          eb.or([
            eb('idempotency_keys.expires_at', '<=', sql<Date>`now()`),
            eb.and([
              eb('idempotency_keys.state', '=', 'in_progress'),
              eb('idempotency_keys.created_at', '<', sql<Date>`now() - make_interval(secs => ${claim.staleAfterSeconds})`),
            ]),
          ]),
        ),
    )
    .returning('state')
    .executeTakeFirst();
  return won !== undefined;
}

export async function findIdempotencyKey(db: Db, scope: IdempotencyScope): Promise<IdempotencyKeyRow | undefined> {
  return db
    .selectFrom('idempotency_keys')
    .selectAll()
    .where((eb) => eb.and(inScope(scope)))
    .where('expires_at', '>', sql<Date>`now()`)
    .executeTakeFirst();
}

/** Stores the final answer of the request that holds the key. */
export async function completeIdempotencyKey(db: Db, scope: IdempotencyScope, requestHash: string, status: number, body: string): Promise<boolean> {
  const result = await db
    .updateTable('idempotency_keys')
    .set({ state: 'done', response_status: status, response_body: body })
    .where((eb) => eb.and(inScope(scope)))
    .where('state', '=', 'in_progress')
    .where('request_hash', '=', requestHash)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/** Gives the key back (the request failed on the server's side), so a retry runs anew. */
export async function releaseIdempotencyKey(db: Db, scope: IdempotencyScope, requestHash: string): Promise<void> {
  await db
    .deleteFrom('idempotency_keys')
    .where((eb) => eb.and(inScope(scope)))
    .where('state', '=', 'in_progress')
    .where('request_hash', '=', requestHash)
    .execute();
}

/** Deletes up to `limit` expired keys; returns how many. */
export async function deleteExpiredIdempotencyKeys(db: Db, limit = 1000): Promise<number> {
  const result = await sql`
    DELETE FROM idempotency_keys
    WHERE ctid IN (SELECT ctid FROM idempotency_keys WHERE expires_at <= now() LIMIT ${limit})`.execute(db);
  return Number(result.numAffectedRows ?? 0n);
}
