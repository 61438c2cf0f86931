-- Rollout strategies (docs/strategies.md): waves with gates, continuous tasks, maintenance
-- windows, endAt. Every new column has a constant default, so adding it rewrites nothing.

-- The task's side: its windows, whether it enrols devices that come to match later (and by which
-- selection), when it ends, why it is paused, and the highest wave the dispatcher may send to.
ALTER TABLE upgrade_tasks
  ADD COLUMN windows jsonb,
  ADD COLUMN continuous boolean NOT NULL DEFAULT false,
  ADD COLUMN selection jsonb,
  ADD COLUMN end_at timestamptz,
  ADD COLUMN paused_reason text,
  ADD COLUMN open_wave smallint;

-- A record's wave, placed at release and never changed; 0 for a task without waves.
ALTER TABLE upgrade_records ADD COLUMN wave smallint NOT NULL DEFAULT 0;

-- What the dispatcher hands to the queue next, wave by wave: (task_id, wave, id) so a claim reads
-- the open waves in order and stops at its limit, however many records later waves hold.
DROP INDEX upgrade_records_dispatchable_idx;
CREATE INDEX upgrade_records_dispatchable_idx ON upgrade_records (task_id, wave, id)
  WHERE state = 'waiting' AND push_requested AND queued_at IS NULL;

-- One row per wave of a task: its counters (kept by the trigger below, as the task's are) and
-- where its gate stands.
CREATE TABLE task_waves (
  task_id uuid NOT NULL REFERENCES upgrade_tasks (id) ON DELETE CASCADE,
  index smallint NOT NULL CHECK (index >= 1),
  total integer NOT NULL DEFAULT 0,
  waiting integer NOT NULL DEFAULT 0,
  processing integer NOT NULL DEFAULT 0,
  success integer NOT NULL DEFAULT 0,
  failed integer NOT NULL DEFAULT 0,
  canceled integer NOT NULL DEFAULT 0,
  state text NOT NULL DEFAULT 'pending'
    CHECK (state IN ('pending', 'running', 'soaking', 'awaiting_approval', 'passed', 'failed')),
  -- when the wave last met its success rate and finished share: its soak time runs from here
  gate_met_at timestamptz,
  approved boolean NOT NULL DEFAULT false,
  PRIMARY KEY (task_id, index)
);

-- The counters of migration 0010, now per wave too: a waved record moves its wave's counters in
-- the same statement that moves its task's.
CREATE OR REPLACE FUNCTION otter_count_record_states() RETURNS trigger
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

    WITH deltas AS (
      SELECT task_id, wave, count(*)::int AS total,
        count(*) FILTER (WHERE state = 'waiting')::int AS waiting,
        count(*) FILTER (WHERE state = 'processing')::int AS processing,
        count(*) FILTER (WHERE state = 'success')::int AS success,
        count(*) FILTER (WHERE state = 'failed')::int AS failed,
        count(*) FILTER (WHERE state = 'canceled')::int AS canceled
      FROM new_rows WHERE wave > 0 GROUP BY task_id, wave)
    UPDATE task_waves w SET
      total = w.total + d.total,
      waiting = w.waiting + d.waiting, processing = w.processing + d.processing,
      success = w.success + d.success, failed = w.failed + d.failed, canceled = w.canceled + d.canceled
    FROM deltas d
    WHERE w.task_id = d.task_id AND w.index = d.wave;
  ELSE
    WITH moved AS (
      SELECT n.task_id, n.wave, o.state AS from_state, n.state AS to_state
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
      SELECT id FROM upgrade_tasks WHERE id IN (SELECT task_id FROM deltas) ORDER BY id FOR UPDATE),
    tasks_moved AS (
      UPDATE upgrade_tasks t SET
        waiting = t.waiting + d.waiting, processing = t.processing + d.processing,
        success = t.success + d.success, failed = t.failed + d.failed, canceled = t.canceled + d.canceled,
        updated_at = now()
      FROM deltas d
      WHERE t.id = d.task_id AND t.id IN (SELECT id FROM locked)),
    wave_deltas AS (
      SELECT task_id, wave,
        (count(*) FILTER (WHERE to_state = 'waiting') - count(*) FILTER (WHERE from_state = 'waiting'))::int AS waiting,
        (count(*) FILTER (WHERE to_state = 'processing') - count(*) FILTER (WHERE from_state = 'processing'))::int AS processing,
        (count(*) FILTER (WHERE to_state = 'success') - count(*) FILTER (WHERE from_state = 'success'))::int AS success,
        (count(*) FILTER (WHERE to_state = 'failed') - count(*) FILTER (WHERE from_state = 'failed'))::int AS failed,
        (count(*) FILTER (WHERE to_state = 'canceled') - count(*) FILTER (WHERE from_state = 'canceled'))::int AS canceled
      FROM moved WHERE wave > 0 GROUP BY task_id, wave)
    UPDATE task_waves w SET
      waiting = w.waiting + d.waiting, processing = w.processing + d.processing,
      success = w.success + d.success, failed = w.failed + d.failed, canceled = w.canceled + d.canceled
    FROM wave_deltas d
    WHERE w.task_id = d.task_id AND w.index = d.wave AND w.task_id IN (SELECT id FROM locked);
  END IF;
  RETURN NULL;
END
$fn$;

-- wave.gate webhooks (docs/rest-api.md#webhooks): a wave's gate waits for approval, passes or
-- fails. Row-level with a WHEN clause, so the counters' updates of task_waves never call it.
CREATE FUNCTION otter_webhook_wave_gate() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM webhooks WHERE 'wave.gate' = ANY (events)) THEN
    RETURN NULL;
  END IF;
  INSERT INTO webhook_events (webhook_id, stream, type, at, data)
  SELECT w.id, 'task:' || NEW.task_id, 'wave.gate', clock_timestamp(),
         json_build_object('taskId', NEW.task_id, 'productId', t.product_id, 'wave', NEW.index,
           'state', NEW.state, 'previousState', OLD.state,
           'stats', json_build_object('total', NEW.total, 'waiting', NEW.waiting, 'processing', NEW.processing,
             'success', NEW.success, 'failed', NEW.failed, 'canceled', NEW.canceled))
  FROM upgrade_tasks t
  JOIN webhooks w ON 'wave.gate' = ANY (w.events) AND (w.product_id IS NULL OR w.product_id = t.product_id)
  WHERE t.id = NEW.task_id
  ORDER BY w.id;
  RETURN NULL;
END
$fn$;

CREATE TRIGGER webhook_wave_gate AFTER UPDATE OF state ON task_waves
  FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND NEW.state IN ('awaiting_approval', 'passed', 'failed'))
  EXECUTE FUNCTION otter_webhook_wave_gate();
