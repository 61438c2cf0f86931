// Rollout strategies (docs/strategies.md): the SQL lives in 0013_rollout_strategies.sql.
import { readFileSync } from 'node:fs';
import { sql, type Kysely } from 'kysely';

const UP = readFileSync(new URL('./0013_rollout_strategies.sql', import.meta.url), 'utf8');

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql.raw(UP).execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE IF EXISTS task_waves`.execute(db);
  await sql`DROP FUNCTION IF EXISTS otter_webhook_wave_gate`.execute(db);
  await sql`DROP INDEX IF EXISTS upgrade_records_dispatchable_idx`.execute(db);
  await sql`
    CREATE INDEX upgrade_records_dispatchable_idx ON upgrade_records (task_id, id)
      WHERE state = 'waiting' AND push_requested AND queued_at IS NULL`.execute(db);
  await sql`ALTER TABLE upgrade_records DROP COLUMN IF EXISTS wave`.execute(db);
  await sql`
    ALTER TABLE upgrade_tasks DROP COLUMN IF EXISTS windows, DROP COLUMN IF EXISTS continuous,
      DROP COLUMN IF EXISTS selection, DROP COLUMN IF EXISTS end_at, DROP COLUMN IF EXISTS paused_reason,
      DROP COLUMN IF EXISTS open_wave`.execute(db);
  // the trigger function without waves comes back with migration 0010's SQL
  const oneWritePath = readFileSync(new URL('./0010_one_write_path.sql', import.meta.url), 'utf8');
  const counter = /CREATE FUNCTION otter_count_record_states\(\)[\s\S]*?\$fn\$;/.exec(oneWritePath);
  if (counter) await sql.raw(counter[0].replace('CREATE FUNCTION', 'CREATE OR REPLACE FUNCTION')).execute(db);
}
