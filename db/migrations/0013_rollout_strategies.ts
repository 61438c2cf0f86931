// Rollout strategies (docs/strategies.md): the SQL lives in 0013_rollout_strategies.sql.
import { sql, type Kysely } from 'kysely';
import { runSqlFile } from './sql-file.ts';

export const up = runSqlFile(new URL('./0013_rollout_strategies.sql', import.meta.url));

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TRIGGER IF EXISTS upgrade_records_waves_counted_on_insert ON upgrade_records`.execute(db);
  await sql`DROP TRIGGER IF EXISTS upgrade_records_waves_counted_on_update ON upgrade_records`.execute(db);
  // the table first: its wave.gate trigger goes with it
  await sql`DROP TABLE IF EXISTS task_waves`.execute(db);
  await sql`DROP FUNCTION IF EXISTS otter_count_wave_states, otter_webhook_wave_gate`.execute(db);
  await sql`DROP TYPE IF EXISTS otter_wave_move`.execute(db);
  await sql`DROP INDEX IF EXISTS upgrade_records_dispatchable_idx`.execute(db);
  await sql`
    CREATE INDEX upgrade_records_dispatchable_idx ON upgrade_records (task_id, id)
      WHERE state = 'waiting' AND push_requested AND queued_at IS NULL`.execute(db);
  await sql`ALTER TABLE upgrade_records DROP COLUMN IF EXISTS wave`.execute(db);
  await sql`
    ALTER TABLE upgrade_tasks DROP COLUMN IF EXISTS windows, DROP COLUMN IF EXISTS continuous,
      DROP COLUMN IF EXISTS selection, DROP COLUMN IF EXISTS end_at, DROP COLUMN IF EXISTS paused_reason,
      DROP COLUMN IF EXISTS open_wave`.execute(db);
}
