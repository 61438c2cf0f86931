// One batch of a release (docs/states-and-rules.md#release): one statement classifies the batch's
// candidate devices (the skip reasons, in their order) and inserts a `waiting` record with its
// `released` event for each of the others, answering counts rather than a row per device.
import { sql } from 'kysely';
import type { Db } from '../connection.ts';
import { classifiedSql, roomForSorts, type ReleaseBatch } from './release-candidates.ts';
import { eligibleSql, waveOfEligible, type WavePlacement } from './release-waves.ts';
import type { ReleaseResult, ReleaseSelection, ReleaseTarget, SkipReason } from './release.ts';

/** How many skipped devices a release lists by id (the first, in device id order). */
export const SKIPPED_DEVICES_LISTED = 100;

/**
 * Releases one batch, in the caller's transaction. With `skipConflicts` false the INSERT is a plain
 * one, without the speculative insertion of `ON CONFLICT DO NOTHING` (its cost: docs/scaling.md#release):
 * a device that became busy meanwhile then fails it with a unique violation, and the caller runs
 * the batch again with `skipConflicts`, which counts such a device as busy.
 */
export async function releaseBatch(
  trx: Db,
  target: ReleaseTarget,
  selection: ReleaseSelection,
  batch: ReleaseBatch,
  options: { push: boolean; placement: WavePlacement; skipConflicts: boolean },
): Promise<ReleaseResult> {
  await roomForSorts(trx);
  const { rows } = await sql<{ reason: SkipReason | null; n: number | null; device_id: string | null }>`
    WITH classified AS (${classifiedSql(target, selection, batch)}),
    inserted AS (
      INSERT INTO upgrade_records (task_id, firmware_id, device_id, product_id, from_version, target_version, push_requested, wave)
      SELECT ${target.taskId}, ${target.firmwareId}, e.device_id, ${target.productId}, e.firmware_version,
             ${target.targetVersion}, ${options.push}, ${waveOfEligible(options.placement)}
      FROM (${eligibleSql(target, options.placement)}) e
      -- device order, in every batch of every release: two releases wait for each other's devices
      -- in one order, never in a cycle
      ORDER BY e.device_id
      ${options.skipConflicts ? sql`ON CONFLICT DO NOTHING` : sql``}
      RETURNING id, device_id
    ),
    released AS (
      INSERT INTO record_events (record_id, type, attempt) SELECT id, 'released', 0 FROM inserted
    ),
    outcome AS (
      SELECT c.device_id, COALESCE(c.reason, CASE WHEN i.id IS NULL THEN 'busy' END) AS reason
      FROM classified c LEFT JOIN inserted i ON i.device_id = c.device_id
    )
    SELECT reason, count(*)::int AS n, NULL::text AS device_id FROM outcome GROUP BY reason
    UNION ALL
    (SELECT reason, NULL, device_id FROM outcome WHERE reason IS NOT NULL ORDER BY device_id LIMIT ${SKIPPED_DEVICES_LISTED})`.execute(trx);

  const result: ReleaseResult = { added: 0, skipped: {}, skippedDevices: [] };
  for (const row of rows) {
    if (row.n === null) result.skippedDevices.push({ deviceId: row.device_id!, reason: row.reason! });
    else if (row.reason === null) result.added = row.n;
    else result.skipped[row.reason] = row.n;
  }
  // the task's counters, and its waves', follow the inserted records by trigger (migrations 0010, 0013)
  return result;
}
