// What the dispatcher reads and writes: which push tasks have records to hand to the queue, and
// claiming a batch of them (FOR UPDATE SKIP LOCKED, so dispatchers in several processes never
// claim the same record).
import { sql } from 'kysely';
import type { Db } from '../connection.ts';
import type { RolloutLimits } from '../database.ts';
import { lockDispatchableStates, type UpgradeState } from './upgrade-state.ts';
import { applyRecordChanges, type RecordChange } from './record-changes.ts';

export interface DispatchableTask {
  id: string;
  rollout: RolloutLimits;
  processing: number;
}

/** Running push tasks, past their start time, with records waiting to be handed to the queue. */
export async function findDispatchableTasks(db: Db): Promise<DispatchableTask[]> {
  const { rows } = await sql<DispatchableTask>`
    SELECT t.id, t.rollout, t.processing FROM upgrade_tasks t
    WHERE t.state = 'running' AND t.mode = 'push' AND (t.start_at IS NULL OR t.start_at <= now())
      AND EXISTS (
        SELECT 1 FROM upgrade_records r
        WHERE r.task_id = t.id AND r.state = 'waiting' AND r.push_requested AND r.queued_at IS NULL)
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
    const { rows } = await sql<{ id: number; device_id: string; dispatches: number }>`
      UPDATE upgrade_records r SET queued_at = now(), dispatches = r.dispatches + 1,
        revision = r.revision + 1, updated_at = now()
      WHERE r.id IN (
        SELECT id FROM upgrade_records
        WHERE task_id = ${taskId} AND state = 'waiting' AND push_requested AND queued_at IS NULL
        ORDER BY id LIMIT ${limit}
        FOR UPDATE SKIP LOCKED)
      RETURNING r.id, r.device_id, r.dispatches`.execute(trx);
    if (rows.length > 0) {
      await sql`
        INSERT INTO record_events (record_id, type, attempt)
        SELECT unnest(${rows.map((row) => row.id)}::bigint[]), 'queued', 0`.execute(trx);
    }
    return rows.map((row) => ({ id: row.id, deviceId: row.device_id, dispatches: row.dispatches }));
  });
}

/**
 * Claims a batch of a task's dispatchable records and marks them sent in the same transaction:
 * `send` turns each record into its change (the state machine's send, `dispatched`), which is
 * written with the record's `queued` event before it. Returns the changes written; the caller
 * then adds their jobs and delivers the messages.
 */
export async function claimRecordsAndSend(
  db: Db,
  taskId: string,
  budget: (inFlight: InFlight) => Promise<number>,
  send: (states: UpgradeState[]) => RecordChange[],
): Promise<RecordChange[]> {
  return db.transaction().execute(async (trx) => {
    const limit = await lockedBudget(trx, taskId, budget);
    if (limit <= 0) return [];
    const states = await lockDispatchableStates(trx, taskId, limit);
    if (states.length === 0) return [];
    const queued = states.map((state) => ({ recordId: state.id, event: { type: 'queued' as const, attempt: 0 } }));
    const { applied } = await applyRecordChanges(trx, send(states), queued);
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
      AND NOT (t.abort IS NOT NULL
               AND t.success + t.failed + t.canceled >= (t.abort->>'minFinished')::int
               AND t.success + t.failed > 0
               AND t.failed::float8 / (t.success + t.failed) >= (t.abort->>'failureRate')::float8)`.execute(trx);
  if (!counts[0]) return 0;
  return Math.floor(await budget(counts[0]));
}

/** Gives a queued, unsent record back to the dispatcher. */
export async function unqueueRecord(db: Db, recordId: number, revision: number): Promise<boolean> {
  const result = await sql`
    UPDATE upgrade_records SET queued_at = NULL, revision = revision + 1, updated_at = now()
    WHERE id = ${recordId} AND revision = ${revision} AND state = 'waiting'`.execute(db);
  return Number(result.numAffectedRows ?? 0) > 0;
}

/** Asks for a task's waiting records (or some devices' of them) to be pushed; returns how many. */
export async function requestPush(db: Db, taskId: string, deviceIds?: readonly string[]): Promise<number> {
  const deviceFilter = deviceIds ? sql`AND device_id = ANY(${[...deviceIds]}::text[])` : sql``;
  const result = await sql`
    UPDATE upgrade_records SET push_requested = true, revision = revision + 1, updated_at = now()
    WHERE task_id = ${taskId} AND state = 'waiting' AND NOT push_requested ${deviceFilter}`.execute(db);
  return Number(result.numAffectedRows ?? 0);
}

