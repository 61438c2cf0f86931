// What the dispatcher reads and writes: which push tasks have records to hand to the queue, and
// claiming a batch of them (FOR UPDATE SKIP LOCKED, so dispatchers in several processes never
// claim the same record).
import { sql } from 'kysely';
import type { Db } from '../connection.ts';
import type { RolloutLimits } from '../database.ts';
import { DISPATCHABLE, lockUpgradeStates, type UpgradeState } from './upgrade-state.ts';
import type { MaintenanceWindow } from '../../core/maintenance-windows.ts';
import { applyRecordChanges, type RecordChange } from './record-changes.ts';
import { transitionRecords } from './record-transitions.ts';

export interface DispatchableTask {
  id: string;
  rollout: RolloutLimits;
  processing: number;
  /** Succeeded records so far: a ramp's rate grows with them. */
  success: number;
  windows: MaintenanceWindow[] | null;
}

/** Running push tasks, past their start time, with records waiting to be handed to the queue. */
export async function findDispatchableTasks(db: Db): Promise<DispatchableTask[]> {
  const { rows } = await sql<DispatchableTask>`
    SELECT t.id, t.rollout, t.processing, t.success, t.windows FROM upgrade_tasks t
    WHERE t.state = 'running' AND t.mode = 'push' AND (t.start_at IS NULL OR t.start_at <= now())
      AND EXISTS (
        SELECT 1 FROM upgrade_records
        WHERE task_id = t.id AND ${DISPATCHABLE} AND wave <= coalesce(t.open_wave, 32767))
    ORDER BY t.created_at`.execute(db);
  return rows;
}

export interface ClaimedRecord {
  id: number;
  deviceId: string;
  dispatches: number;
}

export interface InFlight {
  processing: number;
  queuedUnsent: number;
}

/**
 * Claims a batch of a task's dispatchable records: marks them queued (with `queued` events) and
 * returns them. `budget` says how many may go given what is in flight. A per-task advisory lock
 * makes dispatchers in several processes take turns, so a budget is never spent twice.
 */
export async function claimRecordsForDispatch(
  db: Db,
  taskId: string,
  budget: (inFlight: InFlight) => Promise<number>,
): Promise<ClaimedRecord[]> {
  return db.transaction().execute(async (trx) => {
    const limit = await lockedBudget(trx, taskId, budget);
    if (limit <= 0) return [];
    const now = Date.now();
    const written = await transitionRecords(trx, { taskId, dispatchable: true, skipLocked: true }, () => ({ type: 'queue', now }), limit);
    return written.map(({ change }) => ({ id: change.id, deviceId: change.deviceId, dispatches: change.record.dispatches }));
  });
}

/**
 * Claims a batch of a task's dispatchable records and marks them sent in the same transaction:
 * `send` gives the records' changes (the state machine's queue, then its send, as one change per
 * record), once it has read what their messages need. Returns the changes written; the caller then
 * adds their jobs and delivers the messages.
 */
export async function claimRecordsAndSend(
  db: Db,
  taskId: string,
  budget: (inFlight: InFlight) => Promise<number>,
  send: (states: UpgradeState[]) => Promise<RecordChange[]>,
): Promise<RecordChange[]> {
  return db.transaction().execute(async (trx) => {
    const limit = await lockedBudget(trx, taskId, budget);
    if (limit <= 0) return [];
    const states = await lockUpgradeStates(trx, { taskId, dispatchable: true, skipLocked: true }, undefined, limit);
    const changes = await send(states);
    const { applied } = await applyRecordChanges(trx, changes);
    return applied;
  });
}

/**
 * Takes the task's dispatch lock (a per-task advisory lock, so dispatchers in several processes
 * take turns and a budget is never spent twice) and asks `budget` how many records may go now.
 */
async function lockedBudget(trx: Db, taskId: string, budget: (inFlight: InFlight) => Promise<number>): Promise<number> {
  const { rows: lock } = await sql<{ locked: boolean }>`
    SELECT pg_try_advisory_xact_lock(hashtextextended(${`otter-dispatch:${taskId}`}, 0)) AS locked`.execute(trx);
  if (!lock[0]?.locked) return 0;
  const { rows: counts } = await sql<InFlight>`
    SELECT t.processing,
      (SELECT count(*)::int FROM upgrade_records r
       WHERE r.task_id = t.id AND r.state = 'waiting' AND r.queued_at IS NOT NULL) AS "queuedUnsent"
    FROM upgrade_tasks t WHERE t.id = ${taskId} AND t.state = 'running'
      -- past its abort threshold, a task sends nothing more even before the supervisor aborts it
      AND NOT otter_past_abort_threshold(t.abort, t.success, t.failed, t.canceled)`.execute(trx);
  if (!counts[0]) return 0;
  return Math.floor(await budget(counts[0]));
}

/** Asks for a task's waiting records (or some devices' of them) to be pushed; returns how many. */
export async function requestPush(db: Db, taskId: string, deviceIds?: readonly string[]): Promise<number> {
  const now = Date.now();
  const written = await db.transaction().execute((trx) =>
    transitionRecords(trx, { taskId, states: ['waiting'], deviceIds }, () => ({ type: 'request_push', now })),
  );
  return written.length;
}
