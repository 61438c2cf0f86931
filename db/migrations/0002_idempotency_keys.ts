// Idempotency keys of retried POSTs (Idempotency-Key header): one row per key, scoped by API key,
// method and path, holding the request's fingerprint and, once done, the answer to replay.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE idempotency_keys (
      -- a hash of the API key that sent the request, never the key itself
      api_key_hash text NOT NULL,
      method text NOT NULL,
      -- the request path with its concrete ids, without the query string
      path text NOT NULL,
      idempotency_key text NOT NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
      -- a hash of the request body: the same key with another body is refused
      request_hash text NOT NULL,
      state text NOT NULL DEFAULT 'in_progress' CHECK (state IN ('in_progress', 'done')),
      response_status integer,
      -- the response body as sent (JSON text), replayed byte for byte
      response_body text,
      created_at timestamptz NOT NULL DEFAULT now(),
      expires_at timestamptz NOT NULL,
      PRIMARY KEY (api_key_hash, method, path, idempotency_key)
    )`.execute(db);
  await sql`CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE IF EXISTS idempotency_keys`.execute(db);
}
