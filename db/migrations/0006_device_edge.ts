// The device edge: a device may sit behind a gateway (devices.gateway_id), and a record's timeline
// keeps at most 20 `ignored` events while upgrade_records.ignored_events counts every one of them.
// The cap is applied where events are written (otter_apply_record_changes, replaced here), under the
// record's row lock, so concurrent batches never store more than 20 or miscount.
import { sql, type Kysely } from 'kysely';
import { up as createApplyRecordChanges } from './0004_apply_record_changes.ts';

/** How many `ignored` events a record's timeline keeps; the rest are only counted. */
export const IGNORED_EVENTS_KEPT = 20;

export async function up(db: Kysely<unknown>): Promise<void> {
  // no foreign key: platforms register gateways and children in any order, and a child whose
  // gateway is not registered is simply unreachable (its messages are refused, sends fail)
  await sql`ALTER TABLE devices ADD COLUMN gateway_id text`.execute(db);
  await sql`ALTER TABLE devices ADD CONSTRAINT devices_gateway_not_self CHECK (gateway_id <> id)`.execute(db);
  // partial: only children are indexed, so "does any device have a gateway" is one index probe
  await sql`CREATE INDEX devices_gateway_idx ON devices (gateway_id) WHERE gateway_id IS NOT NULL`.execute(db);

  await sql`ALTER TABLE upgrade_records ADD COLUMN ignored_events integer NOT NULL DEFAULT 0`.execute(db);
  await sql`
    UPDATE upgrade_records r SET ignored_events = c.n
    FROM (SELECT record_id, count(*)::int AS n FROM record_events WHERE type = 'ignored' GROUP BY record_id) c
    WHERE r.id = c.record_id`.execute(db);

  await createApplyRecordChanges0006(db);
}

/** The record-write function as this migration left it (migration 0010 replaces it; its down() brings it back). */
export async function createApplyRecordChanges0006(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE OR REPLACE FUNCTION otter_apply_record_changes(
      c_id bigint[], c_revision int[], c_dispatched boolean[], c_task_id uuid[], c_from_state text[],
      c_device_id text[], c_target_version text[], c_state text[], c_attempts int[], c_progress smallint[],
      c_error_reason text[], c_message_id text[], c_started_at float8[], c_attempt_started_at float8[],
      c_deadline_at float8[], c_response_deadline_at float8[], c_retry_at float8[],
      c_last_message_at float8[], c_completed_at float8[],
      e_record_id bigint[], e_type text[], e_attempt int[], e_progress smallint[], e_message text[],
      e_always boolean[]
    ) RETURNS bigint[] LANGUAGE plpgsql AS $fn$
    DECLARE
      applied bigint[];
      ignored_ids bigint[];
    BEGIN
      -- records that get an ignored event have their counter updated: locked with the changed
      -- ones, all in id order, so concurrent batches never deadlock on them
      SELECT coalesce(array_agg(DISTINCT e.record_id), '{}') INTO ignored_ids
      FROM unnest(e_record_id, e_type) AS e(record_id, type) WHERE e.type = 'ignored';
      PERFORM 1 FROM upgrade_records WHERE id = ANY(c_id || ignored_ids) ORDER BY id FOR UPDATE;

      WITH done AS (
        UPDATE upgrade_records r SET
          state = u.state, attempts = u.attempts, progress = u.progress, error_reason = u.error_reason,
          message_id = u.message_id, started_at = to_timestamp(u.started_at / 1000.0),
          attempt_started_at = to_timestamp(u.attempt_started_at / 1000.0),
          deadline_at = to_timestamp(u.deadline_at / 1000.0),
          response_deadline_at = to_timestamp(u.response_deadline_at / 1000.0),
          retry_at = to_timestamp(u.retry_at / 1000.0), last_message_at = to_timestamp(u.last_message_at / 1000.0),
          completed_at = to_timestamp(u.completed_at / 1000.0),
          queued_at = CASE WHEN u.state = 'waiting' AND r.state = 'waiting' THEN r.queued_at ELSE NULL END,
          push_requested = CASE WHEN u.state = 'waiting' THEN r.push_requested ELSE false END,
          dispatches = r.dispatches + CASE WHEN u.dispatched THEN 1 ELSE 0 END,
          revision = r.revision + 1, updated_at = now()
        FROM unnest(c_id, c_revision, c_dispatched, c_state, c_attempts, c_progress, c_error_reason,
                    c_message_id, c_started_at, c_attempt_started_at, c_deadline_at, c_response_deadline_at,
                    c_retry_at, c_last_message_at, c_completed_at)
          AS u(id, revision, dispatched, state, attempts, progress, error_reason, message_id, started_at,
               attempt_started_at, deadline_at, response_deadline_at, retry_at, last_message_at, completed_at)
        WHERE r.id = u.id AND r.revision = u.revision
        RETURNING r.id)
      SELECT coalesce(array_agg(id), '{}') INTO applied FROM done;

      IF cardinality(ignored_ids) = 0 THEN
        INSERT INTO record_events (record_id, type, attempt, progress, message)
        SELECT e.record_id, e.type, e.attempt, e.progress, e.message
        FROM unnest(e_record_id, e_type, e_attempt, e_progress, e_message, e_always)
          AS e(record_id, type, attempt, progress, message, always)
        WHERE e.always OR e.record_id = ANY(applied);
      ELSE
        -- every ignored event is counted on its record; only the first ${sql.raw(String(IGNORED_EVENTS_KEPT))} join the timeline
        WITH ev AS (
          SELECT e.*
          FROM unnest(e_record_id, e_type, e_attempt, e_progress, e_message, e_always) WITH ORDINALITY
            AS e(record_id, type, attempt, progress, message, always, ord)
          WHERE e.always OR e.record_id = ANY(applied)),
        ignored AS (
          SELECT record_id, count(*)::int AS n FROM ev WHERE type = 'ignored' GROUP BY record_id),
        counted AS (
          UPDATE upgrade_records r SET ignored_events = r.ignored_events + i.n
          FROM ignored i WHERE r.id = i.record_id
          RETURNING r.id, r.ignored_events - i.n AS before),
        ranked AS (
          SELECT ev.*, row_number() OVER (PARTITION BY ev.record_id, ev.type = 'ignored' ORDER BY ev.ord) AS k FROM ev)
        INSERT INTO record_events (record_id, type, attempt, progress, message)
        SELECT x.record_id, x.type, x.attempt, x.progress, x.message
        FROM ranked x LEFT JOIN counted c ON c.id = x.record_id
        WHERE x.type <> 'ignored' OR c.before + x.k <= ${sql.raw(String(IGNORED_EVENTS_KEPT))}
        ORDER BY x.ord;
      END IF;

      WITH changed AS (
        SELECT c.task_id, c.from_state, c.to_state
        FROM unnest(c_id, c_task_id, c_from_state, c_state) AS c(id, task_id, from_state, to_state)
        WHERE c.from_state <> c.to_state AND c.id = ANY(applied)),
      locked AS (
        SELECT id FROM upgrade_tasks WHERE id IN (SELECT task_id FROM changed) ORDER BY id FOR UPDATE),
      deltas AS (
        SELECT task_id,
          count(*) FILTER (WHERE to_state = 'waiting') - count(*) FILTER (WHERE from_state = 'waiting') AS waiting,
          count(*) FILTER (WHERE to_state = 'processing') - count(*) FILTER (WHERE from_state = 'processing') AS processing,
          count(*) FILTER (WHERE to_state = 'success') - count(*) FILTER (WHERE from_state = 'success') AS success,
          count(*) FILTER (WHERE to_state = 'failed') - count(*) FILTER (WHERE from_state = 'failed') AS failed,
          count(*) FILTER (WHERE to_state = 'canceled') - count(*) FILTER (WHERE from_state = 'canceled') AS canceled
        FROM changed GROUP BY task_id)
      UPDATE upgrade_tasks t SET
        waiting = t.waiting + d.waiting, processing = t.processing + d.processing,
        success = t.success + d.success, failed = t.failed + d.failed, canceled = t.canceled + d.canceled,
        updated_at = now()
      FROM deltas d
      WHERE t.id = d.task_id AND t.id IN (SELECT id FROM locked);

      -- a successful upgrade means the device now runs the target version
      WITH upgraded AS (
        SELECT c.device_id, c.target_version
        FROM unnest(c_id, c_from_state, c_state, c_device_id, c_target_version)
          AS c(id, from_state, to_state, device_id, target_version)
        WHERE c.to_state = 'success' AND c.from_state <> 'success' AND c.id = ANY(applied)),
      locked AS (
        SELECT id FROM devices WHERE id IN (SELECT device_id FROM upgraded) ORDER BY id FOR UPDATE)
      UPDATE devices d SET firmware_version = u.target_version, firmware_reported_at = now(), updated_at = now()
      FROM upgraded u
      WHERE d.id = u.device_id AND d.id IN (SELECT id FROM locked);

      RETURN applied;
    END
    $fn$`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  // the function of migration 0004 comes back by running its up() again
  await sql`DROP FUNCTION IF EXISTS otter_apply_record_changes`.execute(db);
  await createApplyRecordChanges(db);
  await sql`ALTER TABLE upgrade_records DROP COLUMN IF EXISTS ignored_events`.execute(db);
  await sql`DROP INDEX IF EXISTS devices_gateway_idx`.execute(db);
  await sql`ALTER TABLE devices DROP CONSTRAINT IF EXISTS devices_gateway_not_self, DROP COLUMN IF EXISTS gateway_id`.execute(db);
}
