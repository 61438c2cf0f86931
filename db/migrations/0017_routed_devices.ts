// The devices behind a gateway, by id: what a send asks before it goes (db/queries/devices.ts
// findGateways, "which of these devices have a gateway?"). Through the primary key, the planner
// costed hundreds of index probes above one pass over the table, and read all 100,000 devices for
// every batch of sends (measured: 26 ms a batch, 4.4 s of a 100,000-device rollout). This index holds
// only the devices that have a gateway — none in a fleet without gateways — so probing it is cheap
// whatever the fleet's size.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE INDEX devices_routed_idx ON devices (id) WHERE gateway_id IS NOT NULL`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX IF EXISTS devices_routed_idx`.execute(db);
}
