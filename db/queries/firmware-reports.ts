// ReportFirmwareMessage (and the reply to a read) applied to devices in bulk: the reported version
// and properties are stored unless an equal-or-newer report (by the device's own timestamp) is
// already there; an unknown device is registered when the report names its product and may
// register it. A report never moves a device to another product.
import { sql } from 'kysely';
import type { Db } from '../connection.ts';

export interface FirmwareReport {
  deviceId: string;
  productId: string | undefined;
  version: string;
  properties: Record<string, unknown> | undefined;
  timestamp: number | undefined;
  /** An unknown device may be registered by this report (a platform's, or self-registration is on). */
  register: boolean;
}

export type ReportOutcome = 'applied' | 'stale' | 'unknown_device';

/** Applies the reports; within one batch a device's newest report wins, the others are stale. */
export async function applyFirmwareReports(db: Db, reports: readonly FirmwareReport[]): Promise<ReportOutcome[]> {
  if (reports.length === 0) return [];
  const newest = new Map<string, number>();
  reports.forEach((report, index) => {
    const current = newest.get(report.deviceId);
    const currentTs = current === undefined ? undefined : reports[current]!.timestamp;
    if (current === undefined || (report.timestamp ?? Number.MAX_SAFE_INTEGER) >= (currentTs ?? 0)) {
      newest.set(report.deviceId, index);
    }
  });
  const chosen = [...newest.values()].map((index) => reports[index]!);
  const { rows } = await sql<{ id: string }>`
    WITH input AS (
      SELECT * FROM unnest(
        ${chosen.map((r) => r.deviceId)}::text[], ${chosen.map((r) => r.productId ?? null)}::text[],
        ${chosen.map((r) => r.version)}::text[],
        ${chosen.map((r) => (r.properties ? JSON.stringify(r.properties) : null))}::jsonb[],
        ${chosen.map((r) => (r.timestamp === undefined ? null : Math.trunc(r.timestamp)))}::bigint[],
        ${chosen.map((r) => r.register)}::boolean[]
      ) AS i(id, product_id, version, properties, ts, register)
    )
    INSERT INTO devices AS d (id, product_id, firmware_version, firmware_properties, firmware_reported_at, report_timestamp)
    SELECT i.id, COALESCE(i.product_id, existing.product_id), i.version, i.properties, now(), i.ts
    FROM input i LEFT JOIN devices existing ON existing.id = i.id
    WHERE existing.id IS NOT NULL OR (i.product_id IS NOT NULL AND i.register)
    ON CONFLICT (id) DO UPDATE SET
      firmware_version = EXCLUDED.firmware_version,
      firmware_properties = COALESCE(EXCLUDED.firmware_properties, d.firmware_properties),
      firmware_reported_at = now(),
      report_timestamp = COALESCE(EXCLUDED.report_timestamp, d.report_timestamp),
      updated_at = now()
    WHERE d.product_id = EXCLUDED.product_id
      AND (d.report_timestamp IS NULL OR EXCLUDED.report_timestamp IS NULL
           OR d.report_timestamp <= EXCLUDED.report_timestamp)
    RETURNING d.id`.execute(db);
  const applied = new Set(rows.map((row) => row.id));
  const missing = chosen.filter((r) => !applied.has(r.deviceId)).map((r) => r.deviceId);
  const known = new Set<string>();
  if (missing.length > 0) {
    const found = await db.selectFrom('devices').select('id').where('id', 'in', missing).execute();
    for (const row of found) known.add(row.id);
  }
  return reports.map((report, index) => {
    if (newest.get(report.deviceId) !== index) return 'stale';
    if (applied.has(report.deviceId)) return 'applied';
    return known.has(report.deviceId) ? 'stale' : 'unknown_device';
  });
}

/** Which of these device ids are registered. */
export async function knownDevices(db: Db, deviceIds: readonly string[]): Promise<Set<string>> {
  if (deviceIds.length === 0) return new Set();
  const rows = await db.selectFrom('devices').select('id').where('id', 'in', [...new Set(deviceIds)]).execute();
  return new Set(rows.map((row) => row.id));
}
