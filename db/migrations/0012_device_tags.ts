// Device tags (docs/rest-api.md#devices): a small string map per device, `{ "region": "eu" }`, that
// `GET /api/devices?tag=k:v` and a release by tags select on with containment (`tags @> …`).
// jsonb_path_ops indexes exactly that operator, smaller than the default jsonb GIN opclass.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  // a constant default: adding the column rewrites nothing, however large the fleet
  await sql`ALTER TABLE devices ADD COLUMN tags jsonb NOT NULL DEFAULT '{}'::jsonb`.execute(db);
  await sql`CREATE INDEX devices_tags_idx ON devices USING gin (tags jsonb_path_ops)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX IF EXISTS devices_tags_idx`.execute(db);
  await sql`ALTER TABLE devices DROP COLUMN IF EXISTS tags`.execute(db);
}
