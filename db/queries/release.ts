// Releasing a task to devices: every candidate device is classified (skip reasons of
// docs/states-and-rules.md#release) and each of the others gets a `waiting` record with its
// `released` event. A large release runs in batches of devices, each its own transaction, two at
// once (docs/scaling.md#release); every batch is safe to run again, so a release cut short is
// finished by releasing again. A record is born here; every later change of it goes through the
// state machine (db/queries/record-changes.ts).
import { sql } from 'kysely';
import type { Db } from '../connection.ts';
import type { RolloutLimits } from '../../core/tasks.ts';
import { conflict } from '../../core/errors.ts';
import { releaseBatch, SKIPPED_DEVICES_LISTED } from './release-batch.ts';
import { productDevicesFilter, type ReleaseBatch } from './release-candidates.ts';
import { wavePlacement, withBoundaries, type WavePlacement } from './release-waves.ts';

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

/** Batches released at once: one per core of the 2-core machine docs/scaling.md measures on. */
const RELEASE_LANES = 2;
/** A batch's candidates: at least this many (but for the last), so a small release is one batch… */
const BATCH_MIN = 25_000;
/** …and at most this many, so no transaction holds a million rows. */
const BATCH_MAX = 100_000;
/** The share of the devices table's pages sampled to cut a release into batches. */
const SAMPLE_PERCENT = 1;

export async function releaseToDevices(
  db: Db,
  requested: ReleaseTarget,
  selection: ReleaseSelection,
  options: { push: boolean },
): Promise<ReleaseResult> {
  const batches = await planBatches(db, requested, selection);
  if (batches.length === 1) {
    // one transaction, as a release always was (a waved task's row locked from its placement on)
    return attemptBatch(null, (attempt) =>
      db.transaction().execute(async (trx) => {
        const target = await takeReleaseLock(trx, requested);
        const placement = await withBoundaries(trx, target, selection, await wavePlacement(trx, target));
        return checkedBatch(trx, target, selection, batches[0]!, { ...attempt, push: options.push, placement });
      }),
    );
  }
  return db.transaction().execute(async (lockTrx) => {
    const target = await takeReleaseLock(lockTrx, requested);
    // committed before any batch: their records count into the wave rows it makes
    const placed = await db.transaction().execute((trx) => wavePlacement(trx, target));
    const placement = await withBoundaries(lockTrx, target, selection, placed);
    const results = await inLanes(batches, RELEASE_LANES, (batch) =>
      attemptBatch(placement.openWave, (attempt) =>
        db.transaction().execute((trx) => checkedBatch(trx, target, selection, batch, { ...attempt, push: options.push, placement })),
      ),
    );
    return merged(results);
  });
}

/**
 * Releases to one task take turns, whether from the API or a continuous task's enrolment in any
 * process: a release ranks its records after the task's earlier ones (waves), and a batch never
 * races another release's batch for the same device of the task.
 */
async function takeReleaseLock(trx: Db, target: ReleaseTarget): Promise<ReleaseTarget> {
  await lockTaskReleases(trx, target.taskId);
  // the waves as they are now: a PATCH of them takes this lock too, so it lands wholly before
  // this release or finds the task released (db/queries/tasks.ts, updateTask)
  const { rows } = await sql<{ rollout: RolloutLimits }>`SELECT rollout FROM upgrade_tasks WHERE id = ${target.taskId}`.execute(trx);
  return rows[0] ? { ...target, rollout: rows[0].rollout } : target;
}

/** Waits for the task's release lock, held until the end of `trx`. */
export async function lockTaskReleases(trx: Db, taskId: string): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(hashtextextended(${`otter-release:${taskId}`}, 0))`.execute(trx);
}

/**
 * The batches of a release: ranges of the product's device ids, cut where a sample of them (1 % of
 * the table's pages, read in milliseconds; the same pages each time) puts equal shares, as many as
 * make batches of BATCH_MIN to BATCH_MAX devices and enough for every lane. Any cut is correct (the
 * ranges cover every id); the sample only evens them out. Chosen ids are cut alike, exactly.
 */
async function planBatches(db: Db, target: ReleaseTarget, selection: ReleaseSelection): Promise<ReleaseBatch[]> {
  if ('deviceIds' in selection) {
    const ids = [...new Set(selection.deviceIds)].sort();
    const size = batchSize(ids.length);
    const batches: ReleaseBatch[] = [];
    for (let i = 0; i < ids.length; i += size) batches.push({ deviceIds: ids.slice(i, i + size) });
    return batches.length > 0 ? batches : [{ deviceIds: [] }];
  }
  const { rows } = await sql<{ device_id: string }>`
    SELECT d.id AS device_id FROM devices d TABLESAMPLE SYSTEM (${SAMPLE_PERCENT}) REPEATABLE (0)
    WHERE ${productDevicesFilter(target, selection)} ORDER BY d.id`.execute(db);
  const estimate = (rows.length * 100) / SAMPLE_PERCENT;
  const count = Math.ceil(estimate / batchSize(estimate));
  const starts = new Set<string>();
  for (let k = 1; k < count; k += 1) starts.add(rows[Math.floor((k * rows.length) / count)]!.device_id);
  const cuts = [...starts];
  return [null, ...cuts].map((from, i) => ({ from, to: cuts[i] ?? null }));
}

/** A release of `count` devices in batches of this many: enough batches for every lane. */
function batchSize(count: number): number {
  return Math.min(BATCH_MAX, Math.max(BATCH_MIN, Math.ceil(count / RELEASE_LANES)));
}

/** How a batch is tried: with a plain INSERT first, and placing records from this open wave on. */
interface Attempt {
  skipConflicts: boolean;
  openWave: number | null;
}

/** The open wave moved on while a batch was inserting: it is done again, placing from there. */
class WaveMovedError extends Error {
  readonly openWave: number;

  constructor(openWave: number) {
    super(`the open wave moved to ${openWave} during a release`);
    this.name = 'WaveMovedError';
    this.openWave = openWave;
  }
}

/** Runs a batch's transaction again (it rolled back) after a unique violation or a wave that moved. */
async function attemptBatch(openWave: number | null, run: (attempt: Attempt) => Promise<ReleaseResult>): Promise<ReleaseResult> {
  let attempt: Attempt = { skipConflicts: false, openWave };
  for (;;) {
    try {
      return await run(attempt);
    } catch (error) {
      if (error instanceof WaveMovedError) attempt = { ...attempt, openWave: error.openWave };
      else if ((error as { code?: string }).code === '23505' && !attempt.skipConflicts) attempt = { ...attempt, skipConflicts: true };
      else throw error;
    }
  }
}

/**
 * One batch, then a look at its task, whose row the counter trigger locked for the rest of the
 * transaction: a task closed meanwhile takes no more records, and a wave opened meanwhile gets
 * none placed before it.
 */
async function checkedBatch(
  trx: Db,
  target: ReleaseTarget,
  selection: ReleaseSelection,
  batch: ReleaseBatch,
  options: Attempt & { push: boolean; placement: WavePlacement },
): Promise<ReleaseResult> {
  const { placement } = options;
  const openWave = Math.max(placement.openWave, options.openWave ?? 0);
  const result = await releaseBatch(trx, target, selection, batch, { ...options, placement: { ...placement, openWave } });
  if (result.added === 0) return result;
  const { rows } = await sql<{ state: string; open_wave: number | null }>`
    SELECT state, open_wave FROM upgrade_tasks WHERE id = ${target.taskId}`.execute(trx);
  const task = rows[0];
  if (!task || task.state === 'canceled' || task.state === 'aborted') {
    throw conflict('task_closed', `task ${target.taskId} was closed during its release`);
  }
  if (placement.waves !== null && task.open_wave !== null && task.open_wave > openWave) throw new WaveMovedError(task.open_wave);
  return result;
}

/** Runs `work` on every item, `lanes` at once; after a failure starts no more, and throws it once the rest are done. */
async function inLanes<T, R>(items: readonly T[], lanes: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  let next = 0;
  let failed = false;
  const lane = async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        results[i] = await work(items[i]!);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  const settled = await Promise.allSettled(Array.from({ length: Math.min(lanes, items.length) }, lane));
  const rejected = settled.find((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected');
  if (rejected) throw rejected.reason;
  return results;
}

/** The batches' results as one: batches are in device order, so are the skipped devices listed. */
function merged(results: readonly ReleaseResult[]): ReleaseResult {
  const total: ReleaseResult = { added: 0, skipped: {}, skippedDevices: [] };
  for (const result of results) {
    total.added += result.added;
    for (const [reason, n] of Object.entries(result.skipped) as Array<[SkipReason, number]>) {
      total.skipped[reason] = (total.skipped[reason] ?? 0) + n;
    }
    total.skippedDevices.push(...result.skippedDevices.slice(0, SKIPPED_DEVICES_LISTED - total.skippedDevices.length));
  }
  return total;
}
