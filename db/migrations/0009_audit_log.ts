// The audit log: one row per state-changing API request, naming the key by a short fingerprint
// (never the key itself). Rows older than AUDIT_RETENTION_DAYS are deleted.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE audit_log (
      id bigserial PRIMARY KEY,
      at timestamptz NOT NULL,
      -- first 12 hex digits of the key's SHA-256
      key_fingerprint text NOT NULL,
      role text NOT NULL,
      method text NOT NULL,
      path text NOT NULL,
      target_type text,
      target_id text,
      status integer NOT NULL
    )`.execute(db);
  // newest first, and the retention sweep by age
  await sql`CREATE INDEX audit_log_at_idx ON audit_log (at DESC, id DESC)`.execute(db);
  await sql`CREATE INDEX audit_log_target_idx ON audit_log (target_id, at DESC, id DESC) WHERE target_id IS NOT NULL`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE IF EXISTS audit_log`.execute(db);
}
