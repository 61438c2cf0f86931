// Room on every page of upgrade_records, so that the many small updates of a record in flight
// (progress, acknowledgements) can be HOT updates that touch no index.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE upgrade_records SET (fillfactor = 70)`.execute(db);
  await sql`ALTER TABLE upgrade_tasks SET (fillfactor = 50)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE upgrade_records RESET (fillfactor)`.execute(db);
  await sql`ALTER TABLE upgrade_tasks RESET (fillfactor)`.execute(db);
}
