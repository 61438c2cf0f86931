-- Migration 0010: one write path for upgrade records (docs/states-and-rules.md#one-write-path).
--
-- Every change of a record — a device message, a send, a deadline, a cancel, an operator's push or
-- retry, the dispatcher's claim — is computed by the state machine (core/record-machine.ts) and
-- written by otter_write_records: one guarded UPDATE of named fields, the timeline's events, the
-- device's version after a success. A task's state counters follow its records through one
-- trigger, whatever statement moves them (a release's INSERT included), so they cannot drift.
--
-- Lock order, everywhere: records by id, then tasks by id, then devices by id.

-- A record's fields as the state machine writes them; times are epoch milliseconds.
CREATE TYPE otter_record_change AS (
  id bigint,
  revision int,
  device_id text,
  target_version text,
  from_state text,
  state text,
  attempts int,
  progress smallint,
  error_reason text,
  message_id text,
  started_at float8,
  attempt_started_at float8,
  deadline_at float8,
  response_deadline_at float8,
  retry_at float8,
  last_message_at float8,
  completed_at float8,
  queued_at float8,
  push_requested boolean,
  dispatches int
);

-- A timeline event. `always`: written even when no change of its record applies (a note).
CREATE TYPE otter_record_event AS (
  record_id bigint,
  type text,
  attempt int,
  progress smallint,
  message text,
  always boolean
);

CREATE FUNCTION otter_time(ms float8) RETURNS timestamptz
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN to_timestamp(ms / 1000.0);

-- Writes `changes` (otter_record_change objects) where each record is still at the revision the
-- change was computed from, and `events` (otter_record_event objects) for the records that changed
-- and the notes. Returns the ids of the records changed; the others moved on meanwhile.
CREATE FUNCTION otter_write_records(changes jsonb, events jsonb) RETURNS bigint[]
LANGUAGE plpgsql AS $fn$
DECLARE
  c otter_record_change[] := ARRAY(SELECT x FROM jsonb_populate_recordset(NULL::otter_record_change, changes) x);
  e otter_record_event[] := ARRAY(SELECT x FROM jsonb_populate_recordset(NULL::otter_record_event, events) x);
  applied bigint[];
  ignored_ids bigint[];
BEGIN
  -- records that get an ignored event have their counter raised: locked with the changed ones
  SELECT coalesce(array_agg(DISTINCT x.record_id), '{}') INTO ignored_ids FROM unnest(e) x WHERE x.type = 'ignored';
  PERFORM 1 FROM upgrade_records
  WHERE id = ANY(ARRAY(SELECT x.id FROM unnest(c) x) || ignored_ids)
  ORDER BY id FOR UPDATE;

  WITH done AS (
    UPDATE upgrade_records r SET
      state = u.state,
      attempts = u.attempts,
      progress = u.progress,
      error_reason = u.error_reason,
      message_id = u.message_id,
      started_at = otter_time(u.started_at),
      attempt_started_at = otter_time(u.attempt_started_at),
      deadline_at = otter_time(u.deadline_at),
      response_deadline_at = otter_time(u.response_deadline_at),
      retry_at = otter_time(u.retry_at),
      last_message_at = otter_time(u.last_message_at),
      completed_at = otter_time(u.completed_at),
      queued_at = otter_time(u.queued_at),
      push_requested = u.push_requested,
      dispatches = u.dispatches,
      revision = r.revision + 1,
      updated_at = now()
    FROM unnest(c) u
    WHERE r.id = u.id AND r.revision = u.revision
    RETURNING r.id)
  SELECT coalesce(array_agg(id), '{}') INTO applied FROM done;

  -- every ignored event is counted on its record; only the first 20 of a record join its timeline
  -- (IGNORED_EVENTS_KEPT in db/migrations/0006_device_edge.ts)
  WITH ev AS (
    SELECT x.*
    FROM unnest(e) WITH ORDINALITY AS x(record_id, type, attempt, progress, message, always, ord)
    WHERE x.always OR x.record_id = ANY(applied)),
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
  FROM ranked x LEFT JOIN counted k ON k.id = x.record_id
  WHERE x.type <> 'ignored' OR k.before + x.k <= 20
  ORDER BY x.ord;

  -- a successful upgrade means the device now runs the target version
  WITH upgraded AS (
    SELECT u.device_id, u.target_version
    FROM unnest(c) u
    WHERE u.state = 'success' AND u.from_state <> 'success' AND u.id = ANY(applied)),
  locked AS (
    SELECT id FROM devices WHERE id IN (SELECT device_id FROM upgraded) ORDER BY id FOR UPDATE)
  UPDATE devices d SET firmware_version = u.target_version, firmware_reported_at = now(), updated_at = now()
  FROM upgraded u
  WHERE d.id = u.device_id AND d.id IN (SELECT id FROM locked);

  RETURN applied;
END
$fn$;

-- The task counters (total, and one per record state) follow every statement that inserts records
-- or changes their state: one mechanism, nothing can bypass it.
CREATE FUNCTION otter_count_record_states() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  IF TG_OP = 'INSERT' THEN
    WITH moved AS (
      SELECT task_id, state, 1 AS n FROM new_rows),
    deltas AS (
      SELECT task_id, sum(n)::int AS total,
        coalesce(sum(n) FILTER (WHERE state = 'waiting'), 0)::int AS waiting,
        coalesce(sum(n) FILTER (WHERE state = 'processing'), 0)::int AS processing,
        coalesce(sum(n) FILTER (WHERE state = 'success'), 0)::int AS success,
        coalesce(sum(n) FILTER (WHERE state = 'failed'), 0)::int AS failed,
        coalesce(sum(n) FILTER (WHERE state = 'canceled'), 0)::int AS canceled
      FROM moved GROUP BY task_id),
    locked AS (
      SELECT id FROM upgrade_tasks WHERE id IN (SELECT task_id FROM deltas) ORDER BY id FOR UPDATE)
    UPDATE upgrade_tasks t SET
      total = t.total + d.total,
      waiting = t.waiting + d.waiting, processing = t.processing + d.processing,
      success = t.success + d.success, failed = t.failed + d.failed, canceled = t.canceled + d.canceled,
      updated_at = now()
    FROM deltas d
    WHERE t.id = d.task_id AND t.id IN (SELECT id FROM locked);
  ELSE
    WITH moved AS (
      SELECT n.task_id, o.state AS from_state, n.state AS to_state
      FROM new_rows n JOIN old_rows o ON o.id = n.id
      WHERE o.state <> n.state),
    deltas AS (
      SELECT task_id,
        (count(*) FILTER (WHERE to_state = 'waiting') - count(*) FILTER (WHERE from_state = 'waiting'))::int AS waiting,
        (count(*) FILTER (WHERE to_state = 'processing') - count(*) FILTER (WHERE from_state = 'processing'))::int AS processing,
        (count(*) FILTER (WHERE to_state = 'success') - count(*) FILTER (WHERE from_state = 'success'))::int AS success,
        (count(*) FILTER (WHERE to_state = 'failed') - count(*) FILTER (WHERE from_state = 'failed'))::int AS failed,
        (count(*) FILTER (WHERE to_state = 'canceled') - count(*) FILTER (WHERE from_state = 'canceled'))::int AS canceled
      FROM moved GROUP BY task_id),
    locked AS (
      SELECT id FROM upgrade_tasks WHERE id IN (SELECT task_id FROM deltas) ORDER BY id FOR UPDATE)
    UPDATE upgrade_tasks t SET
      waiting = t.waiting + d.waiting, processing = t.processing + d.processing,
      success = t.success + d.success, failed = t.failed + d.failed, canceled = t.canceled + d.canceled,
      updated_at = now()
    FROM deltas d
    WHERE t.id = d.task_id AND t.id IN (SELECT id FROM locked);
  END IF;
  RETURN NULL;
END
$fn$;

CREATE TRIGGER upgrade_records_counted_on_insert
  AFTER INSERT ON upgrade_records REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION otter_count_record_states();

CREATE TRIGGER upgrade_records_counted_on_update
  AFTER UPDATE ON upgrade_records REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION otter_count_record_states();

-- The abort rule (docs/states-and-rules.md#abort), its one home: enough records final, and the
-- failure rate among those that succeeded or failed at or past the threshold. Both the dispatcher
-- (which sends nothing more) and the supervisor (which aborts the task) ask it.
CREATE FUNCTION otter_past_abort_threshold(abort jsonb, success int, failed int, canceled int) RETURNS boolean
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN abort IS NOT NULL
    AND success + failed + canceled >= (abort->>'minFinished')::int
    AND success + failed > 0
    AND failed::float8 / (success + failed) >= (abort->>'failureRate')::float8;

DROP FUNCTION otter_apply_record_changes;
