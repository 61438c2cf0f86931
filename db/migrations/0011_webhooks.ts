// Webhooks (docs/rest-api.md#webhooks): the hooks, an outbox of their events and the deliveries that
// carry them. Events are captured by triggers on the tables whose changes they report, so an event
// commits with its change (nothing lost on a crash) and no write path has to know about webhooks;
// with no hook subscribed, a trigger costs one probe of the tiny `webhooks` table.
// The outbox is drained by workers/webhook-deliverer.ts (docs/operations.md#webhooks).
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE webhooks (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      url text NOT NULL,
      secret text NOT NULL,
      events text[] NOT NULL,
      -- only events about this product's devices and tasks; null: every product
      product_id text,
      created_at timestamptz NOT NULL DEFAULT now()
    )`.execute(db);
  await sql`CREATE INDEX webhooks_created_idx ON webhooks (created_at DESC, id DESC)`.execute(db);

  // What one POST carries: up to 1,000 events of one stream (a task, or a product's devices).
  // Deliveries of a stream go out one at a time in first_seq order.
  await sql`
    CREATE TABLE webhook_deliveries (
      id uuid PRIMARY KEY,
      webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
      stream text NOT NULL,
      first_seq bigint NOT NULL,
      event_count integer NOT NULL,
      state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
      attempts integer NOT NULL DEFAULT 0,
      created_at timestamptz NOT NULL DEFAULT now(),
      next_attempt_at timestamptz NOT NULL DEFAULT now(),
      -- the sender holding the delivery right now, and until when (a crashed sender's lease runs out)
      lease_token uuid,
      leased_until timestamptz,
      last_attempt_at timestamptz,
      last_status integer,
      last_error text,
      completed_at timestamptz
    )`.execute(db);
  await sql`CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (webhook_id, stream, first_seq) WHERE state = 'pending'`.execute(db);
  await sql`CREATE INDEX webhook_deliveries_list_idx ON webhook_deliveries (webhook_id, created_at DESC, first_seq DESC)`.execute(db);
  await sql`CREATE INDEX webhook_deliveries_done_idx ON webhook_deliveries (completed_at) WHERE state <> 'pending'`.execute(db);

  // The outbox: one row per event and subscribed hook. `seq` (the event id a receiver sees) is given
  // when the event is sealed into a delivery, in sealing order, so it rises within a stream in the
  // order events are delivered even when a transaction that took a smaller row id commits later.
  // No foreign keys: a trigger's insert must never fail the change it reports (a hook deleted at the
  // same moment leaves rows the prune removes).
  await sql`
    CREATE TABLE webhook_events (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      webhook_id uuid NOT NULL,
      stream text NOT NULL,
      type text NOT NULL,
      at timestamptz NOT NULL,
      data json NOT NULL,
      delivery_id uuid,
      seq bigint
    )`.execute(db);
  await sql`CREATE INDEX webhook_events_pending_idx ON webhook_events (webhook_id, stream, id) WHERE delivery_id IS NULL`.execute(db);
  await sql`CREATE INDEX webhook_events_delivery_idx ON webhook_events (delivery_id, seq) WHERE delivery_id IS NOT NULL`.execute(db);
  await sql`CREATE SEQUENCE webhook_event_seq`.execute(db);

  // record.final: a success, failed or canceled event in a record's timeline. Statement-level, so a
  // batch of a thousand record changes adds its outbox rows in one INSERT.
  await sql`
    CREATE FUNCTION otter_webhook_record_final() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN
      IF NOT EXISTS (SELECT 1 FROM webhooks WHERE 'record.final' = ANY (events)) THEN
        RETURN NULL;
      END IF;
      INSERT INTO webhook_events (webhook_id, stream, type, at, data)
      SELECT w.id, 'task:' || r.task_id, 'record.final', e.at,
             json_build_object('recordId', r.id, 'taskId', r.task_id, 'deviceId', r.device_id,
               'productId', r.product_id, 'state', e.type, 'errorReason', r.error_reason,
               'attempts', r.attempts, 'version', r.target_version, 'fromVersion', r.from_version)
      FROM new_events e
      JOIN upgrade_records r ON r.id = e.record_id
      JOIN webhooks w ON 'record.final' = ANY (w.events) AND (w.product_id IS NULL OR w.product_id = r.product_id)
      WHERE e.type IN ('success', 'failed', 'canceled')
      ORDER BY e.id, w.id;
      RETURN NULL;
    END
    $fn$`.execute(db);
  await sql`
    CREATE TRIGGER webhook_record_final AFTER INSERT ON record_events
      REFERENCING NEW TABLE AS new_events
      FOR EACH STATEMENT EXECUTE FUNCTION otter_webhook_record_final()`.execute(db);

  // task.state_changed and task.completed. Row-level with a WHEN clause (transition tables cannot go
  // with a column list): the record counters' updates never call it.
  await sql`
    CREATE FUNCTION otter_webhook_task_state() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN
      IF NOT EXISTS (SELECT 1 FROM webhooks WHERE events && ARRAY['task.state_changed', 'task.completed']) THEN
        RETURN NULL;
      END IF;
      INSERT INTO webhook_events (webhook_id, stream, type, at, data)
      SELECT w.id, 'task:' || NEW.id, k.type, clock_timestamp(),
             json_build_object('taskId', NEW.id, 'productId', NEW.product_id, 'name', NEW.name,
               'firmwareId', NEW.firmware_id, 'version', NEW.firmware_version,
               'state', NEW.state, 'previousState', OLD.state,
               'stats', json_build_object('total', NEW.total, 'waiting', NEW.waiting, 'processing', NEW.processing,
                 'success', NEW.success, 'failed', NEW.failed, 'canceled', NEW.canceled))
      FROM webhooks w
      CROSS JOIN (VALUES (1, 'task.state_changed'), (2, 'task.completed')) AS k(ord, type)
      WHERE k.type = ANY (w.events) AND (w.product_id IS NULL OR w.product_id = NEW.product_id)
        AND (k.type = 'task.state_changed' OR NEW.state = 'completed')
      ORDER BY k.ord, w.id;
      RETURN NULL;
    END
    $fn$`.execute(db);
  await sql`
    CREATE TRIGGER webhook_task_state AFTER UPDATE OF state ON upgrade_tasks
      FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
      EXECUTE FUNCTION otter_webhook_task_state()`.execute(db);

  // device.registered: rows an INSERT adds (an upsert's updated rows are not in new_devices).
  await sql`
    CREATE FUNCTION otter_webhook_device_registered() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN
      IF NOT EXISTS (SELECT 1 FROM webhooks WHERE 'device.registered' = ANY (events)) THEN
        RETURN NULL;
      END IF;
      INSERT INTO webhook_events (webhook_id, stream, type, at, data)
      SELECT w.id, 'product:' || d.product_id, 'device.registered', clock_timestamp(),
             json_build_object('deviceId', d.id, 'productId', d.product_id, 'name', d.name,
               'firmwareVersion', d.firmware_version, 'gatewayId', d.gateway_id)
      FROM new_devices d
      JOIN webhooks w ON 'device.registered' = ANY (w.events) AND (w.product_id IS NULL OR w.product_id = d.product_id)
      ORDER BY d.id, w.id;
      RETURN NULL;
    END
    $fn$`.execute(db);
  await sql`
    CREATE TRIGGER webhook_device_registered AFTER INSERT ON devices
      REFERENCING NEW TABLE AS new_devices
      FOR EACH STATEMENT EXECUTE FUNCTION otter_webhook_device_registered()`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TRIGGER IF EXISTS webhook_device_registered ON devices`.execute(db);
  await sql`DROP TRIGGER IF EXISTS webhook_task_state ON upgrade_tasks`.execute(db);
  await sql`DROP TRIGGER IF EXISTS webhook_record_final ON record_events`.execute(db);
  await sql`DROP FUNCTION IF EXISTS otter_webhook_device_registered, otter_webhook_task_state, otter_webhook_record_final`.execute(db);
  await sql`DROP TABLE IF EXISTS webhook_events, webhook_deliveries, webhooks`.execute(db);
  await sql`DROP SEQUENCE IF EXISTS webhook_event_seq`.execute(db);
}
