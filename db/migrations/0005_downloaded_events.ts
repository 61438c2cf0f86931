// At most one `downloaded` event per record and attempt: concurrent first downloads (Range requests
// of one device) race to insert it, and the database keeps exactly one. Partial, so the index holds
// only `downloaded` rows and the other timeline inserts do not pay for it.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE UNIQUE INDEX record_events_downloaded_once
      ON record_events (record_id, attempt) WHERE type = 'downloaded'`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX IF EXISTS record_events_downloaded_once`.execute(db);
}
