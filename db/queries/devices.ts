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
}

export interface DeviceFilter {
  productId?: string;
  firmwareVersion?: string;
}

/**
 * Inserts or updates the devices in one statement, whatever their number (two, in a transaction,
 * when some are taken away from their gateway), and answers how many distinct devices it touched. A device listed twice counts once, with its last entry: ON CONFLICT
 * cannot touch the same row twice in one statement.
 */
export async function upsertDevices(db: Db, devices: readonly DeviceUpsertInput[]): Promise<number> {
  const byId = new Map<string, DeviceUpsertInput>();
  for (const device of devices) byId.set(device.id, device);
  if (byId.size === 0) return 0;

  const ids: string[] = [];
  const productIds: string[] = [];
  const names: Array<string | null> = [];
  const versions: Array<string | null> = [];
  const gateways: Array<string | null> = [];
  const cleared: string[] = [];
  for (const device of byId.values()) {
    ids.push(device.id);
    productIds.push(device.productId);
    names.push(device.name ?? null);
    versions.push(device.firmwareVersion ?? null);
    gateways.push(device.gatewayId ?? null);
    if (device.gatewayId === null) cleared.push(device.id);
  }
  if (cleared.length > 0 && !db.isTransaction) {
    return db.transaction().execute((trx) => upsertDevices(trx, devices));
  }

  // unnest arrays rather than a multi-row VALUES: five parameters whatever the fleet size
  const result = await sql`
    INSERT INTO devices (id, product_id, name, firmware_version, firmware_reported_at, gateway_id)
    SELECT d.id, d.product_id, d.name, d.firmware_version,
           CASE WHEN d.firmware_version IS NULL THEN NULL ELSE now() END, d.gateway_id
      FROM unnest(${ids}::text[], ${productIds}::text[], ${names}::text[], ${versions}::text[], ${gateways}::text[])
           AS d (id, product_id, name, firmware_version, gateway_id)
    ON CONFLICT (id) DO UPDATE SET
      product_id = EXCLUDED.product_id,
      name = COALESCE(EXCLUDED.name, devices.name),
      gateway_id = COALESCE(EXCLUDED.gateway_id, devices.gateway_id),
      firmware_version = COALESCE(EXCLUDED.firmware_version, devices.firmware_version),
      firmware_reported_at = CASE WHEN EXCLUDED.firmware_version IS NULL
                                  THEN devices.firmware_reported_at ELSE now() END,
      updated_at = now()`.execute(db);
  // EXCLUDED cannot tell an omitted gateway (keep it) from a null one (take it away): the latter here
  if (cleared.length > 0) {
    await sql`UPDATE devices SET gateway_id = NULL, updated_at = now() WHERE id = ANY(${cleared}::text[]) AND gateway_id IS NOT NULL`.execute(db);
  }
  return Number(result.numAffectedRows ?? byId.size);
}

/** For each of `deviceIds` that sits behind a gateway: the gateway, and its product (null if it is not registered). */
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
  const [rows, count] = await Promise.all([
    matching.selectAll().orderBy('id').limit(window.limit).offset(window.offset).execute(),
    matching.select((eb) => eb.fn.countAll<number>().as('total')).executeTakeFirstOrThrow(),
  ]);
  return { rows, total: Number(count.total) };
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
