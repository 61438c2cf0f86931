// The first schema: firmware catalogue, devices, upgrade tasks with O(1) state counters,
// per-device upgrade records and their event timelines.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE firmware (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      product_id text NOT NULL,
      name text NOT NULL,
      version text NOT NULL,
      version_order integer NOT NULL CHECK (version_order >= 0),
      url text,
      sign text,
      sign_method text CHECK (sign_method IN ('md5', 'sha256')),
      size bigint CHECK (size >= 0),
      properties jsonb NOT NULL DEFAULT '{}'::jsonb,
      description text,
      has_file boolean NOT NULL DEFAULT false,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      CONSTRAINT firmware_product_version_order_key UNIQUE (product_id, version_order)
    )`.execute(db);
  await sql`CREATE INDEX firmware_created_idx ON firmware (created_at DESC, id DESC)`.execute(db);

  await sql`
    CREATE TABLE devices (
      id text PRIMARY KEY,
      product_id text NOT NULL,
      name text,
      firmware_version text,
      firmware_properties jsonb,
      firmware_reported_at timestamptz,
      -- the device's own timestamp of the report applied last: an older report never wins
      report_timestamp bigint,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`.execute(db);
  await sql`CREATE INDEX devices_product_idx ON devices (product_id, id)`.execute(db);
  await sql`CREATE INDEX devices_product_version_idx ON devices (product_id, firmware_version)`.execute(db);

  await sql`
    CREATE TABLE upgrade_tasks (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      firmware_id uuid NOT NULL REFERENCES firmware (id) ON DELETE CASCADE,
      product_id text NOT NULL,
      firmware_version text NOT NULL,
      name text NOT NULL,
      description text,
      mode text NOT NULL CHECK (mode IN ('push', 'pull')),
      timeout_seconds integer NOT NULL CHECK (timeout_seconds > 0),
      response_timeout_seconds integer CHECK (response_timeout_seconds > 0),
      retry jsonb NOT NULL,
      rollout jsonb NOT NULL DEFAULT '{}'::jsonb,
      abort jsonb,
      start_at timestamptz,
      state text NOT NULL DEFAULT 'created'
        CHECK (state IN ('created', 'running', 'paused', 'completed', 'canceled', 'aborted')),
      -- counters kept in the same transaction as every record change, so stats are O(1)
      total integer NOT NULL DEFAULT 0,
      waiting integer NOT NULL DEFAULT 0,
      processing integer NOT NULL DEFAULT 0,
      success integer NOT NULL DEFAULT 0,
      failed integer NOT NULL DEFAULT 0,
      canceled integer NOT NULL DEFAULT 0,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`.execute(db);
  await sql`CREATE INDEX upgrade_tasks_firmware_idx ON upgrade_tasks (firmware_id)`.execute(db);
  await sql`CREATE INDEX upgrade_tasks_created_idx ON upgrade_tasks (created_at DESC, id DESC)`.execute(db);
  await sql`CREATE INDEX upgrade_tasks_active_idx ON upgrade_tasks (state) WHERE state IN ('running', 'paused')`.execute(db);

  await sql`
    CREATE TABLE upgrade_records (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      task_id uuid NOT NULL REFERENCES upgrade_tasks (id) ON DELETE CASCADE,
      firmware_id uuid NOT NULL,
      device_id text NOT NULL,
      product_id text NOT NULL,
      from_version text,
      target_version text NOT NULL,
      state text NOT NULL DEFAULT 'waiting'
        CHECK (state IN ('waiting', 'processing', 'success', 'failed', 'canceled')),
      progress smallint NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
      attempts integer NOT NULL DEFAULT 0,
      error_reason text,
      -- work-in-flight bookkeeping: when the record was handed to the queue, the current attempt's
      -- deadlines, when the next attempt is due, and the id of the message sent in this attempt
      push_requested boolean NOT NULL DEFAULT false,
      queued_at timestamptz,
      -- how many times the record was handed to the queue: part of its BullMQ job id
      dispatches integer NOT NULL DEFAULT 0,
      attempt_started_at timestamptz,
      deadline_at timestamptz,
      response_deadline_at timestamptz,
      retry_at timestamptz,
      message_id text,
      last_message_at timestamptz,
      created_at timestamptz NOT NULL DEFAULT now(),
      started_at timestamptz,
      completed_at timestamptz,
      updated_at timestamptz NOT NULL DEFAULT now(),
      -- bumped by every change: a change computed from an older revision does not apply
      revision integer NOT NULL DEFAULT 0,
      CONSTRAINT upgrade_records_task_device_key UNIQUE (task_id, device_id)
    )`.execute(db);
  // one active upgrade per device, whatever the task
  await sql`
    CREATE UNIQUE INDEX upgrade_records_one_active_per_device
      ON upgrade_records (device_id) WHERE state IN ('waiting', 'processing')`.execute(db);
  await sql`CREATE INDEX upgrade_records_task_state_idx ON upgrade_records (task_id, state, id)`.execute(db);
  // what the dispatcher hands to the queue next
  await sql`
    CREATE INDEX upgrade_records_dispatchable_idx ON upgrade_records (task_id, id)
      WHERE state = 'waiting' AND push_requested AND queued_at IS NULL`.execute(db);
  // records in flight, for the reconciler and deadline sweeps
  await sql`
    CREATE INDEX upgrade_records_in_flight_idx ON upgrade_records (task_id, id)
      WHERE state = 'processing' OR (state = 'waiting' AND queued_at IS NOT NULL)`.execute(db);
  await sql`CREATE INDEX upgrade_records_device_idx ON upgrade_records (device_id, id DESC)`.execute(db);

  await sql`
    CREATE TABLE record_events (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      record_id bigint NOT NULL REFERENCES upgrade_records (id) ON DELETE CASCADE,
      at timestamptz NOT NULL DEFAULT clock_timestamp(),
      type text NOT NULL,
      attempt integer NOT NULL DEFAULT 0,
      progress smallint,
      message text
    )`.execute(db);
  await sql`CREATE INDEX record_events_record_idx ON record_events (record_id, id)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE IF EXISTS record_events, upgrade_records, upgrade_tasks, devices, firmware CASCADE`.execute(db);
}
