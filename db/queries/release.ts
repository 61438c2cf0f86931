// Releasing a task to devices: one set-based statement classifies every candidate device (skip
// reasons of docs/states-and-rules.md#release) and inserts a `waiting` record with its `released` event for each of the
// others — whether the fleet has ten devices or a hundred thousand. A record is born here; every
// later change of it goes through the state machine (db/queries/record-changes.ts).
import { sql } from 'kysely';
import type { Db } from '../connection.ts';
import type { RolloutLimits } from '../../core/tasks.ts';

export type SkipReason = 'already_on_version' | 'busy' | 'version_filtered' | 'unknown_device' | 'already_in_task';

export interface ReleaseTarget {
  taskId: string;
  firmwareId: string;
  productId: string;
  targetVersion: string;
  /** The task's waves and first devices (docs/strategies.md#waves); records are placed in waves as they are born. */
  rollout?: RolloutLimits;
}

export type ReleaseSelection =
  | { allDevices: true; fromVersions?: string[] }
  | { deviceIds: string[]; fromVersions?: string[] }
  /** The product's devices having all these tags (docs/rest-api.md#devices). */
  | { tags: Record<string, string>; fromVersions?: string[] };

export interface ReleaseResult {
  added: number;
  skipped: Partial<Record<SkipReason, number>>;
  skippedDevices: Array<{ deviceId: string; reason: SkipReason }>;
}

const SKIPPED_DEVICES_LISTED = 100;

export async function releaseToDevices(
  db: Db,
  target: ReleaseTarget,
  selection: ReleaseSelection,
  options: { push: boolean },
): Promise<ReleaseResult> {
  const fromVersions = selection.fromVersions && selection.fromVersions.length > 0 ? selection.fromVersions : null;
  const candidates =
    'allDevices' in selection
      ? sql`SELECT d.id AS device_id FROM devices d WHERE d.product_id = ${target.productId}`
      : 'tags' in selection
        ? sql`SELECT d.id AS device_id FROM devices d
              WHERE d.product_id = ${target.productId} AND d.tags @> ${JSON.stringify(selection.tags)}::jsonb`
        : sql`SELECT DISTINCT unnest(${selection.deviceIds}::text[]) AS device_id`;

  return db.transaction().execute(async (trx) => {
    const placement = await wavePlacement(trx, target);
    const { rows } = await sql<{ device_id: string; reason: SkipReason | null; record_id: number | null }>`
      WITH candidate AS (${candidates}),
      classified AS (
        SELECT c.device_id, d.firmware_version,
          CASE
            WHEN d.id IS NULL OR d.product_id <> ${target.productId} THEN 'unknown_device'
            WHEN EXISTS (SELECT 1 FROM upgrade_records r WHERE r.task_id = ${target.taskId} AND r.device_id = c.device_id)
              THEN 'already_in_task'
            WHEN d.firmware_version = ${target.targetVersion} THEN 'already_on_version'
            WHEN ${fromVersions}::text[] IS NOT NULL
              AND (d.firmware_version IS NULL OR NOT d.firmware_version = ANY(${fromVersions}::text[]))
              THEN 'version_filtered'
            WHEN EXISTS (SELECT 1 FROM upgrade_records r
                         WHERE r.device_id = c.device_id AND r.state IN ('waiting', 'processing'))
              THEN 'busy'
          END AS reason
        FROM candidate c LEFT JOIN devices d ON d.id = c.device_id
      ),
      eligible AS (${placement.waves === null ? sql`SELECT device_id, firmware_version FROM classified WHERE reason IS NULL` : rankedEligible(target, placement)}),
      inserted AS (
        INSERT INTO upgrade_records (task_id, firmware_id, device_id, product_id, from_version, target_version, push_requested, wave)
        SELECT ${target.taskId}, ${target.firmwareId}, device_id, ${target.productId}, firmware_version,
               ${target.targetVersion}, ${options.push}, ${placement.waves === null ? sql`0` : waveOfRank(placement)}
        FROM eligible
        ORDER BY device_id
        -- a device that became busy in another task meanwhile: skipped, never two active records
        ON CONFLICT DO NOTHING
        RETURNING id, device_id
      ),
      released AS (
        INSERT INTO record_events (record_id, type, attempt) SELECT id, 'released', 0 FROM inserted
      )
      SELECT c.device_id, COALESCE(c.reason, CASE WHEN i.id IS NULL THEN 'busy' END) AS reason, i.id AS record_id
      FROM classified c LEFT JOIN inserted i ON i.device_id = c.device_id`.execute(trx);

    const result: ReleaseResult = { added: 0, skipped: {}, skippedDevices: [] };
    for (const row of rows) {
      if (row.reason === null) {
        result.added += 1;
        continue;
      }
      result.skipped[row.reason] = (result.skipped[row.reason] ?? 0) + 1;
      if (result.skippedDevices.length < SKIPPED_DEVICES_LISTED) {
        result.skippedDevices.push({ deviceId: row.device_id, reason: row.reason });
      }
    }
    // the task's counters follow the inserted records by trigger (migration 0010)
    return result;
  });
}

interface WavePlacement {
  /** Each wave's kind and cumulative value, or null for a task without waves. */
  waves: { kinds: string[]; values: number[] } | null;
  firstDeviceIds: string[];
  /** Records the task had before this release: the new ones rank after them. */
  existing: number;
  /** The wave the dispatcher sends to now: a record born later joins no wave already passed. */
  openWave: number;
}

/**
 * Readies a waved task for new records: locks its row (releases to one task take turns, so ranks
 * never collide), makes sure its wave rows exist, and opens wave 1 the first time.
 */
async function wavePlacement(trx: Db, target: ReleaseTarget): Promise<WavePlacement> {
  const waves = target.rollout?.waves;
  const firstDeviceIds = target.rollout?.firstDeviceIds ?? [];
  if (!waves || waves.length === 0) return { waves: null, firstDeviceIds, existing: 0, openWave: 0 };
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
  };
}

/** The eligible devices of a waved task, in its stable random order, its first devices ahead. */
function rankedEligible(target: ReleaseTarget, placement: WavePlacement) {
  return sql`
    SELECT device_id, firmware_version,
      row_number() OVER (ORDER BY device_id = ANY(${placement.firstDeviceIds}::text[]) DESC,
                                  md5(${target.taskId}::text || device_id), device_id) AS rank,
      count(*) OVER () AS batch
    FROM classified WHERE reason IS NULL`;
}

/**
 * The wave of an eligible record (docs/strategies.md#waves): the first whose cumulative size over
 * the task's records reaches the record's rank, the last past them all, and never one before the
 * open wave.
 */
function waveOfRank(placement: WavePlacement) {
  const { waves, existing, openWave } = placement;
  return sql`greatest(${openWave}::int, coalesce(
    (SELECT min(s.k) FROM unnest(${waves!.kinds}::text[], ${waves!.values}::float8[]) WITH ORDINALITY AS s(kind, value, k)
     WHERE ${existing}::int + rank <= CASE WHEN s.kind = 'percent' THEN ceil(s.value * (${existing}::int + batch) / 100.0) ELSE s.value END),
    ${waves!.kinds.length}::int))::smallint`;
}
