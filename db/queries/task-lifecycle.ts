// Task-level transitions driven by their records: completion when every record is final, abort
// when failures pass the threshold, and set-based cancellation of records.
import { sql } from 'kysely';
import type { Db } from '../connection.ts';
import type { RecordState } from '../database.ts';
import { addTaskCounters, insertRecordEvents } from './record-changes.ts';

/** Running tasks among `taskIds` whose records are all final become `completed`. */
export async function completeFinishedTasks(db: Db, taskIds: readonly string[]): Promise<string[]> {
  if (taskIds.length === 0) return [];
  const { rows } = await sql<{ id: string }>`
    UPDATE upgrade_tasks SET state = 'completed', revision = revision + 1, updated_at = now()
    WHERE id = ANY(${[...taskIds]}::uuid[]) AND state IN ('running', 'paused')
      AND waiting = 0 AND processing = 0 AND total > 0
    RETURNING id`.execute(db);
  return rows.map((row) => row.id);
}

/** Tasks among `taskIds` that reached their abort threshold (docs/states-and-rules.md#abort). */
export async function tasksPastAbortThreshold(db: Db, taskIds: readonly string[]): Promise<string[]> {
  if (taskIds.length === 0) return [];
  const { rows } = await sql<{ id: string }>`
    SELECT id FROM upgrade_tasks
    WHERE id = ANY(${[...taskIds]}::uuid[]) AND state IN ('running', 'paused') AND abort IS NOT NULL
      AND success + failed + canceled >= (abort->>'minFinished')::int
      AND success + failed > 0
      AND failed::float8 / (success + failed) >= (abort->>'failureRate')::float8`.execute(db);
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
 * Cancels a task's records in the given states (optionally only some devices) in one statement,
 * with their `canceled` events and the task's counters, in the caller's transaction.
 */
export async function cancelRecords(
  db: Db,
  taskId: string,
  options: { states: RecordState[]; deviceIds?: string[]; message: string },
): Promise<CanceledRecord[]> {
  const deviceFilter = options.deviceIds ? sql`AND r.device_id = ANY(${options.deviceIds}::text[])` : sql``;
  const { rows } = await sql<{ id: number; device_id: string; dispatches: number; had_job: boolean; from_state: RecordState; attempts: number }>`
    WITH target AS (
      SELECT id, state, queued_at FROM upgrade_records r
      WHERE r.task_id = ${taskId} AND r.state = ANY(${options.states}::text[]) ${deviceFilter}
      ORDER BY r.id -- locked in id order, like record batches (applyRecordChanges)
      FOR UPDATE
    )
    UPDATE upgrade_records r SET state = 'canceled', completed_at = now(), queued_at = NULL,
      push_requested = false, deadline_at = NULL, response_deadline_at = NULL, retry_at = NULL,
      revision = r.revision + 1, updated_at = now()
    FROM target
    WHERE r.id = target.id
    RETURNING r.id, r.device_id, r.dispatches, r.attempts,
      (target.state = 'processing' OR target.queued_at IS NOT NULL) AS had_job, target.state AS from_state`.execute(db);
  if (rows.length === 0) return [];
  await insertRecordEvents(
    db,
    rows.map((row) => ({ recordId: row.id, event: { type: 'canceled' as const, attempt: row.attempts, message: options.message } })),
  );
  const delta: Partial<Record<RecordState, number>> = { canceled: rows.length };
  for (const row of rows) delta[row.from_state] = (delta[row.from_state] ?? 0) - 1;
  await addTaskCounters(db, new Map([[taskId, delta]]));
  return rows.map((row) => ({
    id: row.id,
    deviceId: row.device_id,
    dispatches: row.dispatches,
    hadJob: row.had_job,
    fromState: row.from_state,
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
