// The service's Postgres sessions (db/connection.ts): no parallel query workers for its short
// OLTP statements, no JIT compilation of them, and options given in DATABASE_URL still apply.
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb } from '../../db/connection.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';

let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
});

afterAll(async () => {
  await database?.drop();
});

async function setting(db: TestDatabase['db'], name: string): Promise<string> {
  const { rows } = await sql<{ value: string }>`SELECT current_setting(${name}) AS value`.execute(db);
  return rows[0]!.value;
}

describe('database sessions', () => {
  it('run without parallel query workers or JIT compilation', async () => {
    expect(await setting(database.db, 'max_parallel_workers_per_gather')).toBe('0');
    expect(await setting(database.db, 'jit')).toBe('off');
  });

  it('keep the options given in the URL', async () => {
    const url = new URL(database.url);
    url.searchParams.set('options', '-c statement_timeout=12345');
    const handle = createDb(url.toString(), 1);
    try {
      expect(await setting(handle.db, 'statement_timeout')).toBe('12345ms');
      expect(await setting(handle.db, 'max_parallel_workers_per_gather')).toBe('0');
      expect(await setting(handle.db, 'jit')).toBe('off');
    } finally {
      await handle.db.destroy();
    }
  });
});
