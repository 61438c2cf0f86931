// What the reconciler compares with Redis: the records that should have a job (queued to be sent,
// or processing), page by page, and which of a set of records are already final.
import { sql } from 'kysely';
import type { Db } from '../connection.ts';
import { nextWakeAt, type RecordState } from '../../core/record-machine.ts';
import { loadInFlightStates } from './upgrade-state.ts';

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
  const states = await loadInFlightStates(db, taskId, afterId, limit);
  const now = Date.now();
  return states.map(({ id, taskId, deviceId, snapshot }) => ({
    id,
    taskId,
    deviceId,
    state: snapshot.state,
    dispatches: snapshot.dispatches,
    // the job's due time is the state machine's rule (nextWakeAt), not a copy of it in SQL
    dueAt: (snapshot.state === 'waiting' ? snapshot.queuedAt : nextWakeAt(snapshot)) ?? now,
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
