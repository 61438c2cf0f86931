-- Migration 0015, its second half: the references of records to their task and of events to their
-- record, checked once per statement instead of once per row (docs/scaling.md#release).
--
-- A foreign key checks each inserted row with a query of its own: a release of a million devices
-- spent a third of its time there (a million records, each with a `released` event). The same
-- rules hold, set-based:
-- - a statement's new records name tasks that exist, and those tasks stay until it commits (each
--   is held FOR KEY SHARE, as the foreign key held it);
-- - a statement's new events name records that exist, and their tasks are held alike: a record
--   goes only with its task, so a held task keeps its records;
-- - a task's records are deleted with it, and a record's events with the record;
-- - none of these references ever changes.

CREATE FUNCTION otter_hold_tasks(task_ids uuid[]) RETURNS boolean
LANGUAGE sql AS $fn$
  -- in task id order, as every lock of task rows is taken
  SELECT count(*) = cardinality(task_ids)
  FROM (SELECT 1 FROM upgrade_tasks WHERE id = ANY(task_ids) ORDER BY id FOR KEY SHARE) held
$fn$;

CREATE FUNCTION otter_records_have_tasks() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  IF NOT otter_hold_tasks(ARRAY(SELECT DISTINCT task_id FROM new_rows)) THEN
    RAISE EXCEPTION 'an upgrade record names a task that does not exist' USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END
$fn$;

CREATE TRIGGER upgrade_records_have_tasks
  AFTER INSERT ON upgrade_records REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION otter_records_have_tasks();

CREATE FUNCTION otter_events_have_records() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  events int;
  found int;
  task_ids uuid[];
BEGIN
  -- each event's record by its primary key (the fence keeps it a lookup, not a scan of every record)
  SELECT count(*), count(r.task_id), coalesce(array_agg(DISTINCT r.task_id) FILTER (WHERE r.task_id IS NOT NULL), '{}')
    INTO events, found, task_ids
  FROM new_events e
  LEFT JOIN LATERAL (SELECT x.task_id FROM upgrade_records x WHERE x.id = e.record_id OFFSET 0) r ON true;
  IF found < events OR NOT otter_hold_tasks(task_ids) THEN
    RAISE EXCEPTION 'a record event names a record that does not exist' USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END
$fn$;

-- named to fire before webhook_record_final, which reads the events' records
CREATE TRIGGER record_events_have_records
  AFTER INSERT ON record_events REFERENCING NEW TABLE AS new_events
  FOR EACH STATEMENT EXECUTE FUNCTION otter_events_have_records();

CREATE FUNCTION otter_delete_task_records() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  DELETE FROM upgrade_records WHERE task_id IN (SELECT id FROM old_tasks);
  RETURN NULL;
END
$fn$;

CREATE TRIGGER upgrade_tasks_records_deleted
  AFTER DELETE ON upgrade_tasks REFERENCING OLD TABLE AS old_tasks
  FOR EACH STATEMENT EXECUTE FUNCTION otter_delete_task_records();

CREATE FUNCTION otter_delete_record_events() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  DELETE FROM record_events WHERE record_id IN (SELECT id FROM old_records);
  RETURN NULL;
END
$fn$;

CREATE TRIGGER upgrade_records_events_deleted
  AFTER DELETE ON upgrade_records REFERENCING OLD TABLE AS old_records
  FOR EACH STATEMENT EXECUTE FUNCTION otter_delete_record_events();

-- Row-level, but only for an UPDATE that sets one of these columns: the updates of a rollout never do.
CREATE FUNCTION otter_reference_fixed() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  RAISE EXCEPTION '%.% never changes: other rows refer to it', TG_TABLE_NAME, TG_ARGV[0] USING ERRCODE = 'foreign_key_violation';
END
$fn$;

CREATE TRIGGER upgrade_tasks_id_fixed BEFORE UPDATE OF id ON upgrade_tasks
  FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION otter_reference_fixed('id');
CREATE TRIGGER upgrade_records_id_fixed BEFORE UPDATE OF id ON upgrade_records
  FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION otter_reference_fixed('id');
CREATE TRIGGER upgrade_records_task_fixed BEFORE UPDATE OF task_id ON upgrade_records
  FOR EACH ROW WHEN (OLD.task_id IS DISTINCT FROM NEW.task_id) EXECUTE FUNCTION otter_reference_fixed('task_id');
CREATE TRIGGER record_events_record_fixed BEFORE UPDATE OF record_id ON record_events
  FOR EACH ROW WHEN (OLD.record_id IS DISTINCT FROM NEW.record_id) EXECUTE FUNCTION otter_reference_fixed('record_id');

ALTER TABLE upgrade_records DROP CONSTRAINT upgrade_records_task_id_fkey;
ALTER TABLE record_events DROP CONSTRAINT record_events_record_id_fkey;
