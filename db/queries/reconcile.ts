// What the reconciler compares with Redis: the records that should have a job (queued to be sent,
// or processing), page by page, and which of a set of records are already final.
import { sql } from 'kysely';
import type { Db } from '../connection.ts';
import type { RecordState } from '../database.ts';

export interface InFlightRecord {
  id: number;
  taskId: string;
  deviceId: string;
  state: RecordState;
  dispatches: number;
  /** When the job must next run (epoch ms): now for a queued record, the retry or deadline otherwise. */
  dueAt: number;
}

/** Tasks that have records in flight, by their counters. */
export async function tasksWithRecordsInFlight(db: Db): Promise<string[]> {
  const rows = await db
    .selectFrom('upgrade_tasks')
    .select('id')
    .where((eb) => eb.or([eb('processing', '>', 0), eb('waiting', '>', 0)]))
    .execute();
  return rows.map((row) => row.id);
}

/** A page of a task's in-flight records after `afterId`, in id order. */
export async function inFlightRecords(db: Db, taskId: string, afterId: number, limit: number): Promise<InFlightRecord[]> {
  const { rows } = await sql<{ id: number; task_id: string; device_id: string; state: RecordState; dispatches: number; due_at: Date | null }>`
    SELECT id, task_id, device_id, state, dispatches,
      CASE
        WHEN state = 'waiting' THEN queued_at
        WHEN retry_at IS NOT NULL THEN retry_at
        WHEN response_deadline_at IS NOT NULL AND (last_message_at IS NULL OR last_message_at < attempt_started_at)
          THEN LEAST(response_deadline_at, deadline_at)
        ELSE deadline_at
      END AS due_at
    FROM upgrade_records
    WHERE task_id = ${taskId} AND id > ${afterId}
      AND (state = 'processing' OR (state = 'waiting' AND queued_at IS NOT NULL))
    ORDER BY id LIMIT ${limit}`.execute(db);
  return rows.map((row) => ({
    id: row.id,
    taskId: row.task_id,
    deviceId: row.device_id,
    state: row.state,
    dispatches: row.dispatches,
    dueAt: row.due_at ? row.due_at.getTime() : Date.now(),
  }));
}

/** Which of these records are final (success, failed or canceled) or gone. */
export async function finishedRecordIds(db: Db, ids: readonly number[]): Promise<Set<number>> {
  if (ids.length === 0) return new Set();
  const { rows } = await sql<{ id: number }>`
    SELECT i.id FROM unnest(${[...ids]}::bigint[]) AS i(id)
    LEFT JOIN upgrade_records r ON r.id = i.id
    WHERE r.id IS NULL OR r.state IN ('success', 'failed', 'canceled')`.execute(db);
  return new Set(rows.map((row) => row.id));
}
