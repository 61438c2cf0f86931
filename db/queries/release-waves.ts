// Placing released records in waves (docs/strategies.md#waves). The devices of a release are ranked
// (first devices ahead, then by md5 of task id and device id); wave k takes the ranks up to its
// cumulative size. A release in batches cannot rank inside each batch, so the ranks are turned into
// keys first: the key of the last rank of each wave, against which any batch places its records.
import { sql, type RawBuilder } from 'kysely';
import type { Db } from '../connection.ts';
import { classifiedSql, roomForSorts, WHOLE_SELECTION } from './release-candidates.ts';
import type { ReleaseSelection, ReleaseTarget } from './release.ts';

/** A wave's last rank in this release, as its key (first device or not, md5, device id). */
export interface WaveBoundary {
  wave: number;
  later: boolean;
  hash: string;
  deviceId: string;
}

export interface WavePlacement {
  /** Each wave's kind and cumulative value, or null for a task without waves. */
  waves: { kinds: string[]; values: number[] } | null;
  firstDeviceIds: string[];
  /** Records the task had before this release: the new ones rank after them. */
  existing: number;
  /** The wave the dispatcher sends to now: a record born later joins no wave already passed. */
  openWave: number;
  /** Of every wave but the last that takes records from this release. */
  boundaries: WaveBoundary[];
}

export const NO_WAVES: WavePlacement = { waves: null, firstDeviceIds: [], existing: 0, openWave: 0, boundaries: [] };

/**
 * Readies a waved task for new records: locks its row, makes sure its wave rows exist, and opens
 * wave 1 the first time. Its boundaries are found by `withBoundaries`.
 */
export async function wavePlacement(trx: Db, target: ReleaseTarget): Promise<WavePlacement> {
  const waves = target.rollout?.waves;
  const firstDeviceIds = target.rollout?.firstDeviceIds ?? [];
  if (!waves || waves.length === 0) return NO_WAVES;
  const { rows } = await sql<{ total: number; open_wave: number | null }>`
    SELECT total, open_wave FROM upgrade_tasks WHERE id = ${target.taskId} FOR UPDATE`.execute(trx);
  const openWave = rows[0]?.open_wave ?? 1;
  await sql`
    INSERT INTO task_waves (task_id, index, state)
    SELECT ${target.taskId}, n, CASE WHEN n < ${openWave} THEN 'passed' WHEN n = ${openWave} THEN 'running' ELSE 'pending' END
    FROM generate_series(1, ${waves.length}) AS n
    ON CONFLICT DO NOTHING`.execute(trx);
  await sql`UPDATE upgrade_tasks SET open_wave = ${openWave} WHERE id = ${target.taskId} AND open_wave IS NULL`.execute(trx);
  return {
    waves: {
      kinds: waves.map((wave) => ('percent' in wave ? 'percent' : 'devices')),
      values: waves.map((wave) => ('percent' in wave ? wave.percent : wave.devices)),
    },
    firstDeviceIds,
    existing: rows[0]?.total ?? 0,
    openWave,
    boundaries: [],
  };
}

/**
 * The placement with the boundaries of this release: every eligible device of the whole selection
 * ranked once, and the key at each wave's last rank kept. A wave whose size the task's earlier
 * records already fill takes none. A device that turns busy between this and its batch leaves its
 * wave one record short, as a conflict at insert always did.
 */
export async function withBoundaries(db: Db, target: ReleaseTarget, selection: ReleaseSelection, placement: WavePlacement): Promise<WavePlacement> {
  const { waves, existing } = placement;
  if (waves === null) return placement;
  await roomForSorts(db);
  const { rows } = await sql<{ wave: number; later: boolean; hash: string; device_id: string }>`
    WITH classified AS (${classifiedSql(target, selection, WHOLE_SELECTION)}),
    ranked AS (
      SELECT e.later, e.hash, e.device_id, row_number() OVER (ORDER BY e.later, e.hash, e.device_id) AS rank
      FROM (${eligibleSql(target, placement)}) e
    ),
    sized AS (SELECT count(*) AS eligible FROM ranked),
    cutoffs AS (
      SELECT s.k::int AS wave,
        least(CASE WHEN s.kind = 'percent' THEN ceil(s.value * (${existing}::int + z.eligible) / 100.0) ELSE s.value END - ${existing}::int,
              z.eligible) AS cutoff
      FROM unnest(${waves.kinds}::text[], ${waves.values}::float8[]) WITH ORDINALITY AS s(kind, value, k), sized z
      WHERE s.k < ${waves.kinds.length}
    )
    SELECT c.wave, r.later, r.hash, r.device_id FROM cutoffs c JOIN ranked r ON r.rank = c.cutoff ORDER BY c.wave`.execute(db);
  return { ...placement, boundaries: rows.map((row) => ({ wave: row.wave, later: row.later, hash: row.hash, deviceId: row.device_id })) };
}

/**
 * The devices of `classified` to release, as `e`: in a waved task with their key (later, hash,
 * device_id), the order of their ranks. Computed once per device: the fence (OFFSET 0) keeps the
 * planner from inlining md5 into the per-wave comparison of waveOfEligible.
 */
export function eligibleSql(target: ReleaseTarget, placement: WavePlacement): RawBuilder<unknown> {
  if (placement.waves === null) return sql`SELECT device_id, firmware_version FROM classified WHERE reason IS NULL`;
  return sql`
    SELECT c.device_id, c.firmware_version, NOT (c.device_id = ANY(${placement.firstDeviceIds}::text[])) AS later,
           md5(${target.taskId}::text || c.device_id) AS hash
    FROM classified c WHERE c.reason IS NULL OFFSET 0`;
}

/**
 * The wave of an eligible device `e` (docs/strategies.md#waves): the first whose boundary key is at
 * or past the device's key, the last past them all, and never one before the open wave. A CASE of
 * at most 19 comparisons with constants: no subquery per device.
 */
export function waveOfEligible(placement: WavePlacement): RawBuilder<unknown> {
  const { waves, boundaries, openWave } = placement;
  if (waves === null) return sql`0::smallint`;
  const last = sql`${waves.kinds.length}::int`;
  const wave =
    boundaries.length === 0
      ? last
      : sql`CASE ${sql.join(
          boundaries.map((b) => sql`WHEN (e.later, e.hash, e.device_id) <= (${b.later}::bool, ${b.hash}::text, ${b.deviceId}::text) THEN ${b.wave}::int`),
          sql` `,
        )} ELSE ${last} END`;
  return sql`greatest(${openWave}::int, ${wave})::smallint`;
}
