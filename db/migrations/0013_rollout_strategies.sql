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

-- Each wave's counters follow its records, as the task's do (migration 0010): a statement's
-- waved records, as (task, wave, state, ±1) moves, summed into their wave rows. It fires after
-- the task's counter (trigger names sort after it), which has locked the task rows first, so
-- concurrent statements on one task take their locks in one order.
CREATE TYPE otter_wave_move AS (task_id uuid, wave smallint, state text, delta int);

CREATE FUNCTION otter_count_wave_states() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  moves otter_wave_move[];
BEGIN
  IF TG_OP = 'INSERT' THEN
    moves := ARRAY(SELECT ROW(task_id, wave, state, 1)::otter_wave_move FROM new_rows WHERE wave > 0);
  ELSE
    moves := ARRAY(
      SELECT ROW(n.task_id, n.wave, s.state, s.delta)::otter_wave_move
      FROM new_rows n JOIN old_rows o ON o.id = n.id
      CROSS JOIN LATERAL (VALUES (o.state, -1), (n.state, 1)) AS s(state, delta)
      WHERE n.wave > 0 AND o.state <> n.state);
  END IF;
  IF cardinality(moves) = 0 THEN
    RETURN NULL;
  END IF;
  UPDATE task_waves w SET
    total = w.total + d.born,
    waiting = w.waiting + d.waiting, processing = w.processing + d.processing,
    success = w.success + d.success, failed = w.failed + d.failed, canceled = w.canceled + d.canceled
  FROM (
    SELECT m.task_id, m.wave,
      CASE WHEN TG_OP = 'INSERT' THEN count(*) ELSE 0 END::int AS born,
      coalesce(sum(m.delta) FILTER (WHERE m.state = 'waiting'), 0)::int AS waiting,
      coalesce(sum(m.delta) FILTER (WHERE m.state = 'processing'), 0)::int AS processing,
      coalesce(sum(m.delta) FILTER (WHERE m.state = 'success'), 0)::int AS success,
      coalesce(sum(m.delta) FILTER (WHERE m.state = 'failed'), 0)::int AS failed,
      coalesce(sum(m.delta) FILTER (WHERE m.state = 'canceled'), 0)::int AS canceled
    FROM unnest(moves) AS m GROUP BY m.task_id, m.wave) d
  WHERE w.task_id = d.task_id AND w.index = d.wave;
  RETURN NULL;
END
$fn$;

CREATE TRIGGER upgrade_records_waves_counted_on_insert
  AFTER INSERT ON upgrade_records REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION otter_count_wave_states();

CREATE TRIGGER upgrade_records_waves_counted_on_update
  AFTER UPDATE ON upgrade_records REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION otter_count_wave_states();

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
