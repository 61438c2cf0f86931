// An isolated database per test file: created fresh, migrated, dropped at the end.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { createDb, ensureDatabase, type DbHandle } from '../../db/connection.ts';
import { migrateToLatest } from '../../db/migrate.ts';
import { TEST_DATABASE_URL } from './env.ts';

export interface TestDatabase extends DbHandle {
  url: string;
  name: string;
  drop(): Promise<void>;
}

export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const name = uniqueName('otter_test');
  const url = new URL(TEST_DATABASE_URL);
  url.pathname = `/${name}`;
  await ensureDatabase(url.toString());
  const handle = createDb(url.toString());
  await migrateToLatest(handle.db);
  return {
    ...handle,
    url: url.toString(),
    name,
    async drop() {
      await handle.db.destroy();
      const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
      await admin.connect();
      try {
        await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await admin.end();
      }
    },
  };
}
