-- Webhook outbox rows of up to 100 events (docs/operations.md#webhooks). A statement that ends a
-- thousand records used to add a thousand outbox rows, each then updated when sealed and deleted
-- when pruned: three writes per event, with their index entries, in the rollout's hot path. Now
-- the same statement adds ten rows, and sealing and pruning touch as few. A row holds its events in
-- order as JSON ({type, at, data}); `first_seq` is the id receivers see for its first event, and
-- the others follow it. OUTBOX_ROW_EVENTS in core/webhooks.ts is the 100 written here.

CREATE FUNCTION otter_iso_ms(at timestamptz) RETURNS text LANGUAGE sql STABLE AS $fn$
  -- as JavaScript's Date.toISOString() writes it: UTC, milliseconds, Z
  SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$fn$;

-- a task's or a wave's record counts, as events show them
CREATE FUNCTION otter_counts_json(total integer, waiting integer, processing integer, success integer, failed integer, canceled integer)
  RETURNS json LANGUAGE sql IMMUTABLE AS $fn$
  SELECT json_build_object('total', total, 'waiting', waiting, 'processing', processing, 'success', success, 'failed', failed, 'canceled', canceled)
$fn$;

CREATE TABLE webhook_outbox (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  webhook_id uuid NOT NULL,
  stream text NOT NULL,
  event_count integer NOT NULL,
  oldest_at timestamptz NOT NULL,
  events json NOT NULL,
  delivery_id uuid,
  first_seq bigint
);
CREATE INDEX webhook_outbox_pending_idx ON webhook_outbox (webhook_id, stream, id) WHERE delivery_id IS NULL;
CREATE INDEX webhook_outbox_delivery_idx ON webhook_outbox (delivery_id, first_seq) WHERE delivery_id IS NOT NULL;

-- the events already in the outbox move over one row each, in order, with their seq
INSERT INTO webhook_outbox (webhook_id, stream, event_count, oldest_at, events, delivery_id, first_seq)
SELECT webhook_id, stream, 1, at, json_build_array(json_build_object('type', type, 'at', otter_iso_ms(at), 'data', data)), delivery_id, seq
FROM webhook_events
ORDER BY id;
DROP TABLE webhook_events;

-- record.final: a batch's final events, per hook and task, in rows of up to 100
CREATE OR REPLACE FUNCTION otter_webhook_record_final() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM webhooks WHERE 'record.final' = ANY (events)) THEN
    RETURN NULL;
  END IF;
  INSERT INTO webhook_outbox (webhook_id, stream, event_count, oldest_at, events)
  SELECT webhook_id, stream, count(*), min(at),
         json_agg(json_build_object('type', 'record.final', 'at', otter_iso_ms(at), 'data', data) ORDER BY event_id)
  FROM (
    SELECT w.id AS webhook_id, 'task:' || r.task_id AS stream, e.id AS event_id, e.at,
           json_build_object('recordId', r.id, 'taskId', r.task_id, 'deviceId', r.device_id,
             'productId', r.product_id, 'state', e.type, 'errorReason', r.error_reason,
             'attempts', r.attempts, 'version', r.target_version, 'fromVersion', r.from_version) AS data,
           (row_number() OVER (PARTITION BY w.id, r.task_id ORDER BY e.id) - 1) / 100 AS part
    FROM new_events e
    JOIN upgrade_records r ON r.id = e.record_id
    JOIN webhooks w ON 'record.final' = ANY (w.events) AND (w.product_id IS NULL OR w.product_id = r.product_id)
    WHERE e.type IN ('success', 'failed', 'canceled')) finals
  GROUP BY webhook_id, stream, part
  ORDER BY min(event_id), webhook_id;
  RETURN NULL;
END
$fn$;

-- task.state_changed and task.completed: one row per event and hook
CREATE OR REPLACE FUNCTION otter_webhook_task_state() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM webhooks WHERE events && ARRAY['task.state_changed', 'task.completed']) THEN
    RETURN NULL;
  END IF;
  INSERT INTO webhook_outbox (webhook_id, stream, event_count, oldest_at, events)
  SELECT w.id, 'task:' || NEW.id, 1, clock_timestamp(),
         json_build_array(json_build_object('type', k.type, 'at', otter_iso_ms(clock_timestamp()), 'data',
           json_build_object('taskId', NEW.id, 'productId', NEW.product_id, 'name', NEW.name,
             'firmwareId', NEW.firmware_id, 'version', NEW.firmware_version,
             'state', NEW.state, 'previousState', OLD.state,
             'stats', otter_counts_json(NEW.total, NEW.waiting, NEW.processing, NEW.success, NEW.failed, NEW.canceled))))
  FROM webhooks w
  CROSS JOIN (VALUES (1, 'task.state_changed'), (2, 'task.completed')) AS k(ord, type)
  WHERE k.type = ANY (w.events) AND (w.product_id IS NULL OR w.product_id = NEW.product_id)
    AND (k.type = 'task.state_changed' OR NEW.state = 'completed')
  ORDER BY k.ord, w.id;
  RETURN NULL;
END
$fn$;

-- device.registered: the rows an INSERT adds, per hook and product, in rows of up to 100
CREATE OR REPLACE FUNCTION otter_webhook_device_registered() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM webhooks WHERE 'device.registered' = ANY (events)) THEN
    RETURN NULL;
  END IF;
  INSERT INTO webhook_outbox (webhook_id, stream, event_count, oldest_at, events)
  SELECT webhook_id, stream, count(*), min(at),
         json_agg(json_build_object('type', 'device.registered', 'at', otter_iso_ms(at), 'data', data) ORDER BY device_id)
  FROM (
    SELECT w.id AS webhook_id, 'product:' || d.product_id AS stream, d.id AS device_id, clock_timestamp() AS at,
           json_build_object('deviceId', d.id, 'productId', d.product_id, 'name', d.name,
             'firmwareVersion', d.firmware_version, 'gatewayId', d.gateway_id) AS data,
           (row_number() OVER (PARTITION BY w.id, d.product_id ORDER BY d.id) - 1) / 100 AS part
    FROM new_devices d
    JOIN webhooks w ON 'device.registered' = ANY (w.events) AND (w.product_id IS NULL OR w.product_id = d.product_id)) registered
  GROUP BY webhook_id, stream, part
  ORDER BY min(device_id), webhook_id;
  RETURN NULL;
END
$fn$;

-- wave.gate: one row per event and hook
CREATE OR REPLACE FUNCTION otter_webhook_wave_gate() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM webhooks WHERE 'wave.gate' = ANY (events)) THEN
    RETURN NULL;
  END IF;
  INSERT INTO webhook_outbox (webhook_id, stream, event_count, oldest_at, events)
  SELECT w.id, 'task:' || NEW.task_id, 1, clock_timestamp(),
         json_build_array(json_build_object('type', 'wave.gate', 'at', otter_iso_ms(clock_timestamp()), 'data',
           json_build_object('taskId', NEW.task_id, 'productId', t.product_id, 'wave', NEW.index,
             'state', NEW.state, 'previousState', OLD.state,
             'stats', otter_counts_json(NEW.total, NEW.waiting, NEW.processing, NEW.success, NEW.failed, NEW.canceled))))
  FROM webhooks w
  JOIN upgrade_tasks t ON t.id = NEW.task_id
  WHERE 'wave.gate' = ANY (w.events) AND (w.product_id IS NULL OR w.product_id = t.product_id)
  ORDER BY w.id;
  RETURN NULL;
END
$fn$;
