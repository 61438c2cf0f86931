// A revision on firmware and tasks for optimistic concurrency: raised by every change an operator
// can see, shown as the ETag, and checked against If-Match in the same statement that writes. A
// task's record counters do not raise it (they change all through a rollout); its settings and its
// state do.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  // a constant default: no table rewrite, existing rows start at 1 like new ones
  await sql`ALTER TABLE firmware ADD COLUMN revision integer NOT NULL DEFAULT 1`.execute(db);
  await sql`ALTER TABLE upgrade_tasks ADD COLUMN revision integer NOT NULL DEFAULT 1`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE upgrade_tasks DROP COLUMN IF EXISTS revision`.execute(db);
  await sql`ALTER TABLE firmware DROP COLUMN IF EXISTS revision`.execute(db);
}
