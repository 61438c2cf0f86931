// A migration whose SQL lives in a .sql file beside it, read as SQL (docs/states-and-rules.md#one-write-path).
import { readFileSync } from 'node:fs';
import { sql, type Kysely } from 'kysely';

/** The `up` of a migration that runs the SQL file at `url`. */
export function runSqlFile(url: URL): (db: Kysely<unknown>) => Promise<void> {
  const text = readFileSync(url, 'utf8');
  return async (db) => {
    await sql.raw(text).execute(db);
  };
}
