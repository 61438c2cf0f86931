// Devices: the set-based upsert of a whole fleet in one statement, listing, look-up and deletion.
import { sql } from 'kysely';
import type { Db } from '../connection.ts';
import type { DeviceRow } from '../database.ts';
import { ACTIVE_RECORD_STATES } from './records.ts';

export interface DeviceUpsertInput {
  id: string;
  productId: string;
  /** Omitted or null: the stored value stays. */
  name?: string | null;
  /** Omitted or null: the stored value stays; given: also stamps firmware_reported_at. */
  firmwareVersion?: string | null;
  /** Omitted: the stored value stays; null: the device has no gateway (any more). */
  gatewayId?: string | null;
  /** Omitted: the stored tags stay; given: they replace all of them (`{}` removes them). */
  tags?: Record<string, string>;
}

export interface DeviceFilter {
  productId?: string;
  firmwareVersion?: string;
  /** Key/value pairs a device must all have. */
  tags?: ReadonlyArray<readonly [string, string]>;
}

/**
 * Inserts or updates the devices in one statement per kind (devices given with tags, devices
 * without), whatever their number, plus one when some are taken away from their gateway — in a
 * transaction when more than one — and answers how many distinct devices it touched. A device listed
 * twice counts once, with its last entry: ON CONFLICT cannot touch the same row twice in one statement.
 */
export async function upsertDevices(db: Db, devices: readonly DeviceUpsertInput[]): Promise<number> {
  const byId = new Map<string, DeviceUpsertInput>();
  for (const device of devices) byId.set(device.id, device);
  if (byId.size === 0) return 0;

  // EXCLUDED cannot tell omitted tags (keep them) from given ones in one statement: tags is NOT NULL
  const tagged: DeviceUpsertInput[] = [];
  const untagged: DeviceUpsertInput[] = [];
  const cleared: string[] = [];
  for (const device of byId.values()) {
    (device.tags === undefined ? untagged : tagged).push(device);
    if (device.gatewayId === null) cleared.push(device.id);
  }
  const statements = (tagged.length > 0 ? 1 : 0) + (untagged.length > 0 ? 1 : 0) + (cleared.length > 0 ? 1 : 0);
  if (statements > 1 && !db.isTransaction) {
    return db.transaction().execute((trx) => upsertDevices(trx, devices));
  }

  let upserted = 0;
  if (tagged.length > 0) upserted += await upsertBatch(db, tagged, true);
  if (untagged.length > 0) upserted += await upsertBatch(db, untagged, false);
  // EXCLUDED cannot tell an omitted gateway (keep it) from a null one (take it away): the latter here
  if (cleared.length > 0) {
    await sql`UPDATE devices SET gateway_id = NULL, updated_at = now() WHERE id = ANY(${cleared}::text[]) AND gateway_id IS NOT NULL`.execute(db);
  }
  return upserted;
}

async function upsertBatch(db: Db, devices: readonly DeviceUpsertInput[], withTags: boolean): Promise<number> {
  const ids: string[] = [];
  const productIds: string[] = [];
  const names: Array<string | null> = [];
  const versions: Array<string | null> = [];
  const gateways: Array<string | null> = [];
  const tags: string[] = [];
  for (const device of devices) {
    ids.push(device.id);
    productIds.push(device.productId);
    names.push(device.name ?? null);
    versions.push(device.firmwareVersion ?? null);
    gateways.push(device.gatewayId ?? null);
    tags.push(JSON.stringify(device.tags ?? {}));
  }
  // unnest arrays rather than a multi-row VALUES: six parameters whatever the fleet size
  const result = await sql`
    INSERT INTO devices (id, product_id, name, firmware_version, firmware_reported_at, gateway_id, tags)
    SELECT d.id, d.product_id, d.name, d.firmware_version,
           CASE WHEN d.firmware_version IS NULL THEN NULL ELSE now() END, d.gateway_id, d.tags::jsonb
      FROM unnest(${ids}::text[], ${productIds}::text[], ${names}::text[], ${versions}::text[], ${gateways}::text[], ${tags}::text[])
           AS d (id, product_id, name, firmware_version, gateway_id, tags)
    ON CONFLICT (id) DO UPDATE SET
      product_id = EXCLUDED.product_id,
      name = COALESCE(EXCLUDED.name, devices.name),
      gateway_id = COALESCE(EXCLUDED.gateway_id, devices.gateway_id),
      firmware_version = COALESCE(EXCLUDED.firmware_version, devices.firmware_version),
      firmware_reported_at = CASE WHEN EXCLUDED.firmware_version IS NULL
                                  THEN devices.firmware_reported_at ELSE now() END,
      tags = ${withTags ? sql`EXCLUDED.tags` : sql`devices.tags`},
      updated_at = now()`.execute(db);
  return Number(result.numAffectedRows ?? devices.length);
}

/**
 * For each of `deviceIds` that sits behind a gateway: the gateway, and its product (null if it is not
 * registered). Reads the index of devices with a gateway (migration 0017), not the whole table.
 */
export async function findGateways(db: Db, deviceIds: readonly string[]): Promise<Map<string, { gatewayId: string; gatewayProductId: string | null }>> {
  if (deviceIds.length === 0) return new Map();
  const { rows } = await sql<{ id: string; gateway_id: string; gateway_product_id: string | null }>`
    SELECT c.id, c.gateway_id, (SELECT g.product_id FROM devices g WHERE g.id = c.gateway_id) AS gateway_product_id
    FROM devices c
    WHERE c.id = ANY(${[...new Set(deviceIds)]}::text[]) AND c.gateway_id IS NOT NULL`.execute(db);
  return new Map(rows.map((row) => [row.id, { gatewayId: row.gateway_id, gatewayProductId: row.gateway_product_id }]));
}

export async function findDevice(db: Db, id: string): Promise<DeviceRow | undefined> {
  return db.selectFrom('devices').selectAll().where('id', '=', id).executeTakeFirst();
}

/** A page of devices matching the filter, ordered by id, with the number of all matches. */
export async function listDevices(
  db: Db,
  filter: DeviceFilter,
  window: { limit: number; offset: number },
): Promise<{ rows: DeviceRow[]; total: number }> {
  let matching = db.selectFrom('devices');
  if (filter.productId !== undefined) matching = matching.where('product_id', '=', filter.productId);
  if (filter.firmwareVersion !== undefined) matching = matching.where('firmware_version', '=', filter.firmwareVersion);
  if (filter.tags !== undefined && filter.tags.length > 0) {
    const wanted = tagsObject(filter.tags);
    // one containment test, which the GIN index of migration 0012 answers; two values for one key match nothing
    matching = wanted === null ? matching.where(sql<boolean>`false`) : matching.where(sql<boolean>`tags @> ${JSON.stringify(wanted)}::jsonb`);
  }
  const [rows, count] = await Promise.all([
    matching.selectAll().orderBy('id').limit(window.limit).offset(window.offset).execute(),
    matching.select((eb) => eb.fn.countAll<number>().as('total')).executeTakeFirstOrThrow(),
  ]);
  return { rows, total: Number(count.total) };
}

/** The pairs as one object, or null when a key is asked for with two different values. */
function tagsObject(pairs: ReadonlyArray<readonly [string, string]>): Record<string, string> | null {
  // a Map, then fromEntries: a key named __proto__ stays a plain key
  const wanted = new Map<string, string>();
  for (const [key, value] of pairs) {
    if (wanted.has(key) && wanted.get(key) !== value) return null;
    wanted.set(key, value);
  }
  return Object.fromEntries(wanted);
}

export type DeleteDeviceOutcome = 'deleted' | 'busy' | 'not_found';

/**
 * Deletes the device unless it has an active (waiting or processing) upgrade record. The check and
 * the delete are one statement, so a record that is active when it runs always keeps its device.
 * The device's finished records stay: they are its tasks' history.
 */
export async function deleteDevice(db: Db, id: string): Promise<DeleteDeviceOutcome> {
  const deleted = await db
    .deleteFrom('devices')
    .where('id', '=', id)
    .where(({ not, exists, selectFrom }) =>
      not(exists(
        selectFrom('upgrade_records')
          .select('upgrade_records.id')
          .whereRef('upgrade_records.device_id', '=', 'devices.id')
          .where('upgrade_records.state', 'in', ACTIVE_RECORD_STATES),
      )),
    )
    .returning('id')
    .executeTakeFirst();
  if (deleted) return 'deleted';
  return (await findDevice(db, id)) ? 'busy' : 'not_found';
}
