// Releases in batches (docs/scaling.md#release), which run several transactions at once inserting
// one task's records. Two changes make that safe and cheap:
// - The task's counter trigger (otter_count_record_states, migration 0010) locked the task's row
//   FOR UPDATE, which waits for every holder of KEY SHARE on it: each batch holds one (its records
//   refer to the task) until it commits, so two batches, each wanting the other's gone, deadlocked.
//   The counters are no key: FOR NO KEY UPDATE is all the trigger needs. Counter updates of a task
//   still take turns, in task id order; the function is otherwise unchanged.
// - The references of records to tasks and of events to records are checked per statement instead
//   of per row: 0015_release_batches.sql.
import { sql, type Kysely } from 'kysely';
import { OtterError } from '../../core/errors.ts';
import { runSqlFile } from './sql-file.ts';

const setBasedReferences = runSqlFile(new URL('./0015_release_batches.sql', import.meta.url));

/** Redefines the counter trigger's function with its row locks `from` replaced by `to`. */
async function relockCounters(db: Kysely<unknown>, from: string, to: string): Promise<void> {
  const { rows } = await sql<{ definition: string }>`
    SELECT pg_get_functiondef('otter_count_record_states'::regproc) AS definition`.execute(db);
  const definition = rows[0]!.definition;
  // one lock for inserted records, one for updated ones
  const found = definition.split(`ORDER BY id ${from})`).length - 1;
  if (found !== 2) throw new OtterError('migration_failed', `otter_count_record_states has ${found} locks ${from}, expected 2`, 500);
  await sql.raw(definition.replaceAll(`ORDER BY id ${from})`, `ORDER BY id ${to})`)).execute(db);
}

export async function up(db: Kysely<unknown>): Promise<void> {
  await relockCounters(db, 'FOR UPDATE', 'FOR NO KEY UPDATE');
  await setBasedReferences(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TRIGGER IF EXISTS upgrade_records_have_tasks ON upgrade_records;
    DROP TRIGGER IF EXISTS upgrade_records_events_deleted ON upgrade_records;
    DROP TRIGGER IF EXISTS upgrade_records_id_fixed ON upgrade_records;
    DROP TRIGGER IF EXISTS upgrade_records_task_fixed ON upgrade_records;
    DROP TRIGGER IF EXISTS record_events_have_records ON record_events;
    DROP TRIGGER IF EXISTS record_events_record_fixed ON record_events;
    DROP TRIGGER IF EXISTS upgrade_tasks_records_deleted ON upgrade_tasks;
    DROP TRIGGER IF EXISTS upgrade_tasks_id_fixed ON upgrade_tasks`.execute(db);
  await sql`
    DROP FUNCTION IF EXISTS otter_records_have_tasks, otter_events_have_records, otter_hold_tasks,
      otter_delete_task_records, otter_delete_record_events, otter_reference_fixed`.execute(db);
  await sql`
    ALTER TABLE upgrade_records ADD CONSTRAINT upgrade_records_task_id_fkey
      FOREIGN KEY (task_id) REFERENCES upgrade_tasks (id) ON DELETE CASCADE`.execute(db);
  await sql`
    ALTER TABLE record_events ADD CONSTRAINT record_events_record_id_fkey
      FOREIGN KEY (record_id) REFERENCES upgrade_records (id) ON DELETE CASCADE`.execute(db);
  await relockCounters(db, 'FOR NO KEY UPDATE', 'FOR UPDATE');
}
