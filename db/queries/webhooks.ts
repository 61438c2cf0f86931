// Webhooks, their outbox and deliveries (db/migrations/0011_webhooks.ts): the hooks' CRUD, sealing
// outbox events into deliveries, claiming the deliveries that are due, and writing attempts' outcomes.
import { sql } from 'kysely';
import type { Db } from '../connection.ts';
import type { WebhookDeliveryRow, WebhookRow } from '../database.ts';
import { eventJson, type WebhookDeliveryState } from '../../core/webhooks.ts';

export interface NewWebhook {
  url: string;
  secret: string;
  events: string[];
  productId: string | null;
}

export async function insertWebhook(db: Db, hook: NewWebhook): Promise<WebhookRow> {
  return db
    .insertInto('webhooks')
    .values({ url: hook.url, secret: hook.secret, events: hook.events, product_id: hook.productId })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function countWebhooks(db: Db): Promise<number> {
  const row = await db.selectFrom('webhooks').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  return Number(row.n);
}

export async function listWebhooks(db: Db, window: { limit: number; offset: number }): Promise<{ rows: WebhookRow[]; total: number }> {
  const [rows, total] = await Promise.all([
    db.selectFrom('webhooks').selectAll().orderBy('created_at', 'desc').orderBy('id', 'desc').limit(window.limit).offset(window.offset).execute(),
    countWebhooks(db),
  ]);
  return { rows, total };
}

export async function findWebhook(db: Db, id: string): Promise<WebhookRow | undefined> {
  return db.selectFrom('webhooks').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Deletes the hook with its deliveries and outbox events; false when there was none. */
export async function deleteWebhook(db: Db, id: string): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    const found = await sql`SELECT 1 FROM webhooks WHERE id = ${id} FOR UPDATE`.execute(trx);
    if (found.rows.length === 0) return false;
    await sql`DELETE FROM webhook_outbox WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE webhook_id = ${id})`.execute(trx);
    await sql`DELETE FROM webhook_outbox WHERE webhook_id = ${id} AND delivery_id IS NULL`.execute(trx);
    await sql`DELETE FROM webhooks WHERE id = ${id}`.execute(trx);
    return true;
  });
}

export async function listDeliveries(
  db: Db,
  webhookId: string,
  filter: { state?: WebhookDeliveryState },
  window: { limit: number; offset: number },
): Promise<{ rows: WebhookDeliveryRow[]; total: number }> {
  let query = db.selectFrom('webhook_deliveries').where('webhook_id', '=', webhookId);
  if (filter.state) query = query.where('state', '=', filter.state);
  const [rows, count] = await Promise.all([
    query.selectAll().orderBy('created_at', 'desc').orderBy('first_seq', 'desc').limit(window.limit).offset(window.offset).execute(),
    query.select((eb) => eb.fn.countAll<number>().as('total')).executeTakeFirstOrThrow(),
  ]);
  return { rows, total: Number(count.total) };
}

/**
 * Seals outbox rows into deliveries: per hook and stream, in outbox order, rows are packed into
 * deliveries of at most `maxEvents` events — a row whose first event lies in the i-th stretch of
 * `maxEvents - rowEvents + 1` events of the stream's pending ones goes to the i-th delivery, so no
 * delivery exceeds `maxEvents` however the rows are cut. A delivery is sealed when a later one has
 * begun, when it is full, or once its oldest event is `windowMs` old. Each sealed row gets the
 * `first_seq` of its events (the ids receivers see) from one block of the sequence, so ids rise in
 * delivery order. One sealer at a time (an advisory lock), in one statement: one snapshot, so a
 * transaction that commits meanwhile only adds rows the next round seals. Answers how many
 * deliveries it made, or undefined when another process was sealing.
 */
export async function sealWebhookEvents(db: Db, options: { maxEvents: number; rowEvents: number; windowMs: number }): Promise<number | undefined> {
  return db.transaction().execute(async (trx) => {
    const { rows: lock } = await sql<{ locked: boolean }>`
      SELECT pg_try_advisory_xact_lock(hashtextextended('otter-webhook-seal', 0)) AS locked`.execute(trx);
    if (!lock[0]?.locked) return undefined;
    const stretch = options.maxEvents - options.rowEvents + 1;
    const { rows } = await sql<{ deliveries: number }>`
      WITH pending AS MATERIALIZED (
        SELECT id, webhook_id, stream, event_count, oldest_at, start_at, start_at / ${stretch} AS chunk
        FROM (
          SELECT o.id, o.webhook_id, o.stream, o.event_count, o.oldest_at,
                 sum(o.event_count) OVER (PARTITION BY o.webhook_id, o.stream ORDER BY o.id) - o.event_count AS start_at
          FROM webhook_outbox o
          WHERE o.delivery_id IS NULL AND EXISTS (SELECT 1 FROM webhooks w WHERE w.id = o.webhook_id)) numbered),
      chunks AS (
        SELECT webhook_id, stream, chunk, sum(event_count) AS n, min(start_at) AS chunk_start, min(oldest_at) AS oldest,
               chunk < max(chunk) OVER (PARTITION BY webhook_id, stream) AS followed
        FROM pending GROUP BY webhook_id, stream, chunk),
      sealed AS MATERIALIZED (
        SELECT webhook_id, stream, chunk, n, chunk_start, gen_random_uuid() AS delivery_id,
               sum(n) OVER (ORDER BY webhook_id, stream, chunk) - n AS run_offset
        FROM chunks
        WHERE followed OR n >= ${stretch} OR oldest <= clock_timestamp() - make_interval(secs => ${options.windowMs / 1000})),
      reserved AS MATERIALIZED (
        SELECT setval('webhook_event_seq', nextval('webhook_event_seq') + t.total - 1) - t.total + 1 AS base
        FROM (SELECT sum(n)::bigint AS total FROM sealed) t
        WHERE t.total > 0),
      deliveries AS (
        INSERT INTO webhook_deliveries (id, webhook_id, stream, first_seq, event_count)
        SELECT s.delivery_id, s.webhook_id, s.stream, r.base + s.run_offset, s.n
        FROM sealed s CROSS JOIN reserved r
        RETURNING id),
      outbox AS (
        UPDATE webhook_outbox o
        SET delivery_id = s.delivery_id, first_seq = r.base + s.run_offset + (p.start_at - s.chunk_start)
        FROM pending p
        JOIN sealed s ON s.webhook_id = p.webhook_id AND s.stream = p.stream AND s.chunk = p.chunk
        CROSS JOIN reserved r
        WHERE o.id = p.id
        RETURNING 1)
      SELECT (SELECT count(*) FROM deliveries)::int AS deliveries, (SELECT count(*) FROM outbox)::int AS rows`.execute(trx);
    return rows[0]?.deliveries ?? 0;
  });
}

export interface ClaimedDelivery {
  id: string;
  webhookId: string;
  url: string;
  secret: string;
  /** This attempt's number (1 for the first). */
  attempts: number;
  eventCount: number;
  createdAt: Date;
  /** Proves the claim when the outcome is written: a sender whose lease ran out writes nothing. */
  leaseToken: string;
}

/**
 * Claims up to `limit` deliveries that are due: only the first pending delivery of each stream
 * (so a later batch of a task never overtakes an earlier one that still fails), not leased by
 * another sender. The claim counts as an attempt and lasts `leaseMs`.
 */
export async function claimDueDeliveries(db: Db, options: { limit: number; leaseMs: number }): Promise<ClaimedDelivery[]> {
  if (options.limit <= 0) return [];
  const { rows } = await sql<{
    id: string; webhook_id: string; url: string; secret: string; attempts: number; event_count: number; created_at: Date; lease_token: string;
  }>`
    WITH heads AS (
      SELECT DISTINCT ON (webhook_id, stream) id, next_attempt_at, leased_until
      FROM webhook_deliveries
      WHERE state = 'pending'
      ORDER BY webhook_id, stream, first_seq),
    due AS (
      SELECT id FROM heads
      WHERE next_attempt_at <= now() AND (leased_until IS NULL OR leased_until < now())
      ORDER BY next_attempt_at
      LIMIT ${options.limit}),
    locked AS (
      SELECT d.id FROM webhook_deliveries d WHERE d.id IN (SELECT id FROM due) FOR UPDATE SKIP LOCKED)
    UPDATE webhook_deliveries d
    SET lease_token = gen_random_uuid(), leased_until = now() + make_interval(secs => ${options.leaseMs / 1000}),
        attempts = d.attempts + 1, last_attempt_at = now()
    FROM locked, webhooks w
    WHERE d.id = locked.id AND w.id = d.webhook_id
      AND d.state = 'pending' AND (d.leased_until IS NULL OR d.leased_until < now())
    RETURNING d.id, d.webhook_id, w.url, w.secret, d.attempts, d.event_count, d.created_at, d.lease_token`.execute(db);
  return rows.map((row) => ({
    id: row.id,
    webhookId: row.webhook_id,
    url: row.url,
    secret: row.secret,
    attempts: row.attempts,
    eventCount: row.event_count,
    createdAt: row.created_at,
    leaseToken: row.lease_token,
  }));
}

/** The events a delivery carries, in order, as JSON texts (`data` as stored, never parsed here). */
export async function deliveryEvents(db: Db, deliveryId: string): Promise<string[]> {
  const { rows } = await sql<{ seq: string; type: string; at: string; data: string }>`
    SELECT o.first_seq + e.ordinality - 1 AS seq, e.value->>'type' AS type, e.value->>'at' AS at, (e.value->'data')::text AS data
    FROM webhook_outbox o CROSS JOIN LATERAL json_array_elements(o.events) WITH ORDINALITY AS e
    WHERE o.delivery_id = ${deliveryId}
    ORDER BY o.first_seq, e.ordinality`.execute(db);
  return rows.map((row) => eventJson(Number(row.seq), row.type, row.at, row.data));
}

export async function markDelivered(db: Db, claim: Pick<ClaimedDelivery, 'id' | 'leaseToken'>, status: number): Promise<boolean> {
  const result = await db
    .updateTable('webhook_deliveries')
    .set({ state: 'delivered', last_status: status, last_error: null, completed_at: sql`now()`, lease_token: null, leased_until: null })
    .where('id', '=', claim.id)
    .where('lease_token', '=', claim.leaseToken)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** A failed attempt: tried again at `retryAt`, or `failed` for good when `retryAt` is null. */
export async function markAttemptFailed(
  db: Db,
  claim: Pick<ClaimedDelivery, 'id' | 'leaseToken'>,
  outcome: { status: number | null; error: string; retryAt: Date | null },
): Promise<boolean> {
  const final = outcome.retryAt === null;
  const result = await db
    .updateTable('webhook_deliveries')
    .set({
      state: final ? 'failed' : 'pending',
      last_status: outcome.status,
      last_error: outcome.error.slice(0, 500),
      next_attempt_at: outcome.retryAt ?? sql`now()`,
      completed_at: final ? sql`now()` : null,
      lease_token: null,
      leased_until: null,
    })
    .where('id', '=', claim.id)
    .where('lease_token', '=', claim.leaseToken)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/**
 * Deletes finished deliveries (delivered or failed) completed before `before`, with their events,
 * and outbox rows left behind by a deleted hook; at most `batch` deliveries per call.
 */
export async function pruneWebhookHistory(db: Db, before: Date, batch = 1_000): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const { rows } = await sql<{ id: string }>`
      DELETE FROM webhook_deliveries
      WHERE id IN (SELECT id FROM webhook_deliveries WHERE state <> 'pending' AND completed_at < ${before} LIMIT ${batch})
      RETURNING id`.execute(trx);
    if (rows.length > 0) {
      await sql`DELETE FROM webhook_outbox WHERE delivery_id = ANY(${rows.map((row) => row.id)}::uuid[])`.execute(trx);
    }
    await sql`
      DELETE FROM webhook_outbox e
      WHERE e.delivery_id IS NULL AND NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.id = e.webhook_id)`.execute(trx);
    return rows.length;
  });
}
