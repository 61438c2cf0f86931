// The hot look-ups read indexes, not whole tables, on a fleet large enough for the planner to weigh
// one pass over the table against many index probes (docs/scaling.md#what-limits-next): PostgreSQL's
// own scan counters tell which it chose.
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb, type DbHandle } from '../../db/connection.ts';
import { findGateways } from '../../db/queries/devices.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';

const FLEET = 30_000;
let database: TestDatabase;
let session: DbHandle;

beforeAll(async () => {
  database = await createTestDatabase();
  // one connection, so the counters this session flushes are the scans it made
  session = createDb(database.url, 1);
  await sql`
    INSERT INTO devices (id, product_id, name)
    SELECT 'meter-' || lpad(i::text, 6, '0'), 'meter', 'meter ' || i FROM generate_series(1, ${FLEET}) AS i`.execute(session.db);
  await sql`INSERT INTO devices (id, product_id, name) VALUES ('hub-1', 'hub', 'hub 1')`.execute(session.db);
  await sql`UPDATE devices SET gateway_id = 'hub-1' WHERE id IN ('meter-000010', 'meter-000020')`.execute(session.db);
});

afterAll(async () => {
  await session?.db.destroy();
  await database?.drop();
});

/** Sequential scans of the devices table so far, as PostgreSQL counts them. */
async function devicesSeqScans(): Promise<number> {
  await sql`SELECT pg_stat_force_next_flush()`.execute(session.db);
  // the flush happens as that statement's transaction ends; a fresh snapshot then shows it
  await sql`SELECT pg_stat_clear_snapshot()`.execute(session.db);
  const { rows } = await sql<{ seq_scan: number }>`SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'devices'`.execute(session.db);
  return Number(rows[0]!.seq_scan);
}

describe('query plans', () => {
  it('finds the gateways of 600 devices of 30,000 without reading every device', async () => {
    const ids = Array.from({ length: 600 }, (_, i) => `meter-${String(i + 1).padStart(6, '0')}`);
    const before = await devicesSeqScans();
    const found = await findGateways(session.db, ids);
    const after = await devicesSeqScans();
    expect([...found.keys()].sort()).toEqual(['meter-000010', 'meter-000020']);
    expect(found.get('meter-000010')).toEqual({ gatewayId: 'hub-1', gatewayProductId: 'hub' });
    expect(after - before).toBe(0);
  });
});
