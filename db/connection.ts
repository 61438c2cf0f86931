// The Postgres pool and kysely instance. int8 and numeric come back as numbers, not strings:
// every such column here (sizes, counts, record ids) fits in a double.
import pg from 'pg';
import { Kysely, PostgresDialect } from 'kysely';
import type { Database } from './database.ts';

pg.types.setTypeParser(pg.types.builtins.INT8, (value) => Number(value));
pg.types.setTypeParser(pg.types.builtins.NUMERIC, (value) => Number(value));

export type Db = Kysely<Database>;

export interface DbHandle {
  db: Db;
  pool: pg.Pool;
}

/**
 * Every query here is short OLTP work on a few hundred rows at most: starting parallel workers for
 * one costs more than it saves, yet the planner chose them for the larger message batches (a fifth
 * fewer devices/s in the benchmark). JIT compilation likewise: the device-message lookup's estimated
 * cost passes jit_above_cost, and compiling it took most of its 32 ms per batch, against a few ms
 * to run it (docs/scaling.md#what-limits-next). Set per session rather than as a startup option,
 * which connection poolers such as PgBouncer refuse.
 */
const SESSION_SETUP = 'SET max_parallel_workers_per_gather = 0; SET jit = off';

export function createDb(databaseUrl: string, max = 10): DbHandle {
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
  });
  // A client that loses its server (a restart, a failover) must not take the process down: the
  // query in flight fails and is retried, and the pool connects anew. pg emits 'error' on idle
  // clients through the pool, and on checked-out clients on the client itself.
  pool.on('error', () => {});
  pool.on('connect', (client) => {
    client.on('error', () => {});
    // pg runs a client's queries in order: this one goes ahead of the first query of whoever asked for it
    client.query(SESSION_SETUP).catch(() => {});
  });
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  return { db, pool };
}

/** Creates the database named in the URL when it does not exist yet. */
export async function ensureDatabase(databaseUrl: string): Promise<void> {
  const target = new URL(databaseUrl);
  const name = decodeURIComponent(target.pathname.replace(/^\//, '')) || 'postgres';
  const admin = new URL(databaseUrl);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString(), connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (found.rowCount === 0) {
      const quoted = '"' + name.replace(/"/g, '""') + '"';
      try {
        await client.query(`CREATE DATABASE ${quoted}`);
      } catch (error) {
        // another process created it at the same moment
        const code = (error as { code?: string }).code;
        if (code !== '42P04' && code !== '23505') throw error;
      }
    }
  } finally {
    await client.end();
  }
}
