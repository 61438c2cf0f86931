// One write path for upgrade records: the SQL lives in 0010_one_write_path.sql, read as SQL.
import { sql, type Kysely } from 'kysely';
import { createApplyRecordChanges0006 } from './0006_device_edge.ts';
import { runSqlFile } from './sql-file.ts';

export const up = runSqlFile(new URL('./0010_one_write_path.sql', import.meta.url));

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TRIGGER IF EXISTS upgrade_records_counted_on_insert ON upgrade_records`.execute(db);
  await sql`DROP TRIGGER IF EXISTS upgrade_records_counted_on_update ON upgrade_records`.execute(db);
  await sql`DROP FUNCTION IF EXISTS otter_count_record_states, otter_write_records, otter_past_abort_threshold, otter_time`.execute(db);
  await sql`DROP TYPE IF EXISTS otter_record_change, otter_record_event`.execute(db);
  await createApplyRecordChanges0006(db);
}
