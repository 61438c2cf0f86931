// The write of a batch of record transitions as one server-side function, so a batch costs one
// round trip instead of six to eight. Locks are then held only while Postgres works, not while a
// busy service gets round to sending the transaction's next statement — and the task row, which
// every batch of a task updates, stops being a queue of transactions waiting on their clients.
// Lock order, as before: records by id, then tasks by id, then devices by id.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE FUNCTION otter_apply_record_changes(
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
    BEGIN
      PERFORM 1 FROM upgrade_records WHERE id = ANY(c_id) ORDER BY id FOR UPDATE;

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

      INSERT INTO record_events (record_id, type, attempt, progress, message)
      SELECT e.record_id, e.type, e.attempt, e.progress, e.message
      FROM unnest(e_record_id, e_type, e_attempt, e_progress, e_message, e_always)
        AS e(record_id, type, attempt, progress, message, always)
      WHERE e.always OR e.record_id IN (SELECT unnest(applied));

      WITH changed AS (
        SELECT c.task_id, c.from_state, c.to_state
        FROM unnest(c_id, c_task_id, c_from_state, c_state) AS c(id, task_id, from_state, to_state)
        WHERE c.from_state <> c.to_state AND c.id IN (SELECT unnest(applied))),
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
        WHERE c.to_state = 'success' AND c.from_state <> 'success' AND c.id IN (SELECT unnest(applied))),
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
  await sql`DROP FUNCTION IF EXISTS otter_apply_record_changes`.execute(db);
}
