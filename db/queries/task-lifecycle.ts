// Task-level transitions driven by their records: completion when every record is final, abort
// when failures pass the threshold, and cancellation of records (through the state machine).
import { sql } from 'kysely';
import type { RecordState } from '../../core/record-machine.ts';
import type { Db } from '../connection.ts';
import { transitionRecords } from './record-transitions.ts';

/**
 * Running tasks among `taskIds` whose records are all final become `completed` — a continuous
 * task only once past its endAt (docs/strategies.md#continuous).
 */
export async function completeFinishedTasks(db: Db, taskIds: readonly string[]): Promise<string[]> {
  if (taskIds.length === 0) return [];
  const { rows } = await sql<{ id: string }>`
    UPDATE upgrade_tasks SET state = 'completed', paused_reason = NULL, revision = revision + 1, updated_at = now()
    WHERE id = ANY(${[...taskIds]}::uuid[]) AND state IN ('running', 'paused')
      AND waiting = 0 AND processing = 0 AND total > 0
      AND (NOT continuous OR end_at <= now())
    RETURNING id`.execute(db);
  return rows.map((row) => row.id);
}

/** Tasks among `taskIds` that reached their abort threshold (docs/states-and-rules.md#abort). */
export async function tasksPastAbortThreshold(db: Db, taskIds: readonly string[]): Promise<string[]> {
  if (taskIds.length === 0) return [];
  const { rows } = await sql<{ id: string }>`
    SELECT id FROM upgrade_tasks
    WHERE id = ANY(${[...taskIds]}::uuid[]) AND state IN ('running', 'paused')
      AND otter_past_abort_threshold(abort, success, failed, canceled)`.execute(db);
  return rows.map((row) => row.id);
}

export interface CanceledRecord {
  id: number;
  deviceId: string;
  dispatches: number;
  /** The record had a job in the queue (queued or processing). */
  hadJob: boolean;
  fromState: RecordState;
}

/**
 * Cancels a task's records in the given states (optionally only some devices), with their
 * `canceled` events, in the caller's transaction.
 */
export async function cancelRecords(
  trx: Db,
  taskId: string,
  options: { states: RecordState[]; deviceIds?: string[]; message: string },
): Promise<CanceledRecord[]> {
  const now = Date.now();
  const written = await transitionRecords(trx, { taskId, states: options.states, deviceIds: options.deviceIds }, () => ({
    type: 'cancel',
    now,
    message: options.message,
  }));
  return written.map(({ before }) => ({
    id: before.id,
    deviceId: before.deviceId,
    dispatches: before.snapshot.dispatches,
    hadJob: before.snapshot.state === 'processing' || before.snapshot.queuedAt !== null,
    fromState: before.snapshot.state,
  }));
}

/** Marks the task aborted and cancels its waiting records; the caller removes their jobs. */
export async function abortTask(db: Db, taskId: string): Promise<CanceledRecord[] | undefined> {
  return db.transaction().execute(async (trx) => {
    // the records first, then the task row: the order in which record batches lock them
    await sql`SELECT 1 FROM upgrade_records WHERE task_id = ${taskId} AND state = 'waiting' ORDER BY id FOR UPDATE`.execute(trx);
    const { rows } = await sql<{ id: string }>`
      UPDATE upgrade_tasks SET state = 'aborted', revision = revision + 1, updated_at = now()
      WHERE id = ${taskId} AND state IN ('running', 'paused') RETURNING id`.execute(trx);
    if (rows.length === 0) return undefined;
    return cancelRecords(trx, taskId, { states: ['waiting'], message: 'task aborted: failure rate reached its threshold' });
  });
}

/** Open tasks past their endAt (docs/strategies.md#end-at). */
export async function findEndedTasks(db: Db): Promise<string[]> {
  const { rows } = await sql<{ id: string }>`
    SELECT id FROM upgrade_tasks WHERE end_at <= now() AND state IN ('created', 'running', 'paused')`.execute(db);
  return rows.map((row) => row.id);
}

/**
 * Ends a task at its endAt: its waiting records are canceled; it completes at once if nothing is
 * in flight, else when its in-flight upgrades end (completeFinishedTasks). The caller removes jobs.
 */
export async function endTask(db: Db, taskId: string): Promise<CanceledRecord[]> {
  return db.transaction().execute(async (trx) => {
    // the records first, then the task row: the order in which record batches lock them
    const canceled = await cancelRecords(trx, taskId, { states: ['waiting'], message: 'task ended: its endAt passed' });
    await sql`
      UPDATE upgrade_tasks SET state = 'completed', paused_reason = NULL, revision = revision + 1, updated_at = now()
      WHERE id = ${taskId} AND state IN ('created', 'running', 'paused') AND processing = 0`.execute(trx);
    return canceled;
  });
}
