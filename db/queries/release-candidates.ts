// The candidate devices of a release, or of one batch of it, each classified: released, or skipped
// for one of the reasons of docs/states-and-rules.md#release, checked in their order.
import { sql, type RawBuilder } from 'kysely';
import type { Db } from '../connection.ts';
import type { ReleaseSelection, ReleaseTarget } from './release.ts';

/** Sorts and hashes over a batch's candidates (by device id, by rank, joined with what was inserted) stay in memory. */
const RELEASE_WORK_MEM = '64MB';

/** Gives the rest of the transaction RELEASE_WORK_MEM. */
export async function roomForSorts(trx: Db): Promise<void> {
  await sql`SELECT set_config('work_mem', ${RELEASE_WORK_MEM}, true)`.execute(trx);
}

/** Devices of the product from `from` (inclusive) to `to` (exclusive), null for no bound. */
export interface DeviceRange {
  from: string | null;
  to: string | null;
}

/** A range of the product's devices, or some of the chosen ids. */
export type ReleaseBatch = DeviceRange | { deviceIds: string[] };

export const WHOLE_SELECTION: DeviceRange = { from: null, to: null };

/**
 * The candidates of `batch` as (device_id, firmware_version, reason): reason null for a device to
 * release. `EXISTS` reads what the statement's snapshot shows, so a device that became busy
 * meanwhile is caught by the insert's unique index instead. Its records are looked for within the
 * batch's range too: the planner may read them all at once, and a later batch of a release must
 * not read every record the earlier ones made.
 */
export function classifiedSql(target: ReleaseTarget, selection: ReleaseSelection, batch: ReleaseBatch): RawBuilder<unknown> {
  const fromVersions = selection.fromVersions && selection.fromVersions.length > 0 ? selection.fromVersions : null;
  return sql`
    SELECT c.device_id, c.firmware_version,
      CASE
        WHEN NOT c.known THEN 'unknown_device'
        WHEN EXISTS (SELECT 1 FROM upgrade_records r
                     WHERE r.task_id = ${target.taskId} AND r.device_id = c.device_id AND ${inRange('r.device_id', batch)})
          THEN 'already_in_task'
        WHEN c.firmware_version = ${target.targetVersion} THEN 'already_on_version'
        WHEN ${fromVersions}::text[] IS NOT NULL
          AND (c.firmware_version IS NULL OR NOT c.firmware_version = ANY(${fromVersions}::text[]))
          THEN 'version_filtered'
        WHEN EXISTS (SELECT 1 FROM upgrade_records r
                     WHERE r.device_id = c.device_id AND r.state IN ('waiting', 'processing') AND ${inRange('r.device_id', batch)})
          THEN 'busy'
      END AS reason
    FROM (${candidatesSql(target, selection, batch)}) c`;
}

/** Whether the device id `column` is within the batch's range (any, for a batch of chosen ids). */
function inRange(column: string, batch: ReleaseBatch): RawBuilder<unknown> {
  const bounds: DeviceRange = 'from' in batch ? batch : WHOLE_SELECTION;
  const id = sql.ref(column);
  return sql`(${bounds.from}::text IS NULL OR ${id} >= ${bounds.from}) AND (${bounds.to}::text IS NULL OR ${id} < ${bounds.to})`;
}

/** (device_id, firmware_version, known): known is false for an id not registered to the task's product. */
function candidatesSql(target: ReleaseTarget, selection: ReleaseSelection, batch: ReleaseBatch): RawBuilder<unknown> {
  if ('deviceIds' in selection) {
    const ids = 'deviceIds' in batch ? batch.deviceIds : selection.deviceIds;
    return sql`
      SELECT c.device_id, d.firmware_version, coalesce(d.product_id = ${target.productId}, false) AS known
      FROM (SELECT DISTINCT unnest(${ids}::text[]) AS device_id) c LEFT JOIN devices d ON d.id = c.device_id`;
  }
  return sql`
    SELECT d.id AS device_id, d.firmware_version, true AS known
    FROM devices d
    WHERE ${productDevicesFilter(target, selection)} AND ${inRange('d.id', batch)}`;
}

/** The condition on `devices d` of a selection by product (all its devices, or those having the tags). */
export function productDevicesFilter(target: ReleaseTarget, selection: ReleaseSelection): RawBuilder<unknown> {
  return 'tags' in selection
    ? sql`d.product_id = ${target.productId} AND d.tags @> ${JSON.stringify(selection.tags)}::jsonb`
    : sql`d.product_id = ${target.productId}`;
}
