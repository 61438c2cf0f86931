// Writes the record state machine's transitions for many records at once: one guarded UPDATE
// (a change applies only if the record's revision is still the one it was computed from), one
// INSERT of timeline events, one UPDATE of the tasks' state counters — all in one transaction.
import { sql } from 'kysely';
import type { Db } from '../connection.ts';
import type { RecordSnapshot, RecordState, TimelineEvent, Transition } from '../../core/record-machine.ts';
import type { UpgradeState } from './upgrade-state.ts';

export interface RecordChange {
  id: number;
  taskId: string;
  deviceId: string;
  /** The revision the change was computed from. */
  revision: number;
  fromState: RecordState;
  record: RecordSnapshot;
  events: TimelineEvent[];
  /** The record gets a new job (a pull reply starts an attempt followed by its own job). */
  dispatched?: boolean;
}

/** The change that writes `transition`'s outcome over the record `state` was read as. */
export function changeOf(state: UpgradeState, transition: Pick<Transition, 'record' | 'events'>, dispatched = false): RecordChange {
  return {
    id: state.id,
    taskId: state.taskId,
    deviceId: state.deviceId,
    revision: state.revision,
    fromState: state.snapshot.state,
    record: transition.record,
    events: transition.events,
    dispatched,
  };
}

/** An event for a record whose state does not change (an ignored message). */
export interface RecordNote {
  recordId: number;
  event: TimelineEvent;
}

export interface AppliedChanges {
  applied: RecordChange[];
  /** Changes whose record moved on meanwhile: recompute them from a fresh read. */
  stale: RecordChange[];
}


// times travel as epoch milliseconds (cheap to serialise) and become timestamptz in SQL
const toTime = (value: number | null): number | null => value;

export async function insertRecordEvents(db: Db, notes: readonly RecordNote[]): Promise<void> {
  if (notes.length === 0) return;
  await sql`
    INSERT INTO record_events (record_id, type, attempt, progress, message)
    SELECT * FROM unnest(
      ${notes.map((n) => n.recordId)}::bigint[], ${notes.map((n) => n.event.type)}::text[],
      ${notes.map((n) => n.event.attempt)}::int[], ${notes.map((n) => n.event.progress ?? null)}::smallint[],
      ${notes.map((n) => n.event.message ?? null)}::text[])`.execute(db);
}

/** Adds per-task deltas of the state counters; `deltas` maps task id → state → change. */
export async function addTaskCounters(db: Db, deltas: Map<string, Partial<Record<RecordState, number>>>): Promise<void> {
  const entries = [...deltas].filter(([, delta]) => Object.values(delta).some((n) => n !== 0));
  if (entries.length === 0) return;
  const column = (state: RecordState) => entries.map(([, delta]) => delta[state] ?? 0);
  // task rows locked in id order, so concurrent batches never deadlock on them
  if (entries.length > 1) {
    await sql`SELECT 1 FROM upgrade_tasks WHERE id = ANY(${entries.map(([id]) => id)}::uuid[]) ORDER BY id FOR UPDATE`.execute(db);
  }
  await sql`
    UPDATE upgrade_tasks t SET
      waiting = t.waiting + d.waiting, processing = t.processing + d.processing,
      success = t.success + d.success, failed = t.failed + d.failed, canceled = t.canceled + d.canceled,
      updated_at = now()
    FROM unnest(${entries.map(([id]) => id)}::uuid[], ${column('waiting')}::int[], ${column('processing')}::int[],
                ${column('success')}::int[], ${column('failed')}::int[], ${column('canceled')}::int[])
      AS d(id, waiting, processing, success, failed, canceled)
    WHERE t.id = d.id`.execute(db);
}

export function counterDeltas(changes: readonly { taskId: string; fromState: RecordState; record: { state: RecordState } }[]) {
  const deltas = new Map<string, Partial<Record<RecordState, number>>>();
  for (const change of changes) {
    if (change.fromState === change.record.state) continue;
    const delta = deltas.get(change.taskId) ?? {};
    delta[change.fromState] = (delta[change.fromState] ?? 0) - 1;
    delta[change.record.state] = (delta[change.record.state] ?? 0) + 1;
    deltas.set(change.taskId, delta);
  }
  return deltas;
}

export async function applyRecordChanges(
  db: Db,
  changes: readonly RecordChange[],
  notes: readonly RecordNote[] = [],
): Promise<AppliedChanges> {
  if (changes.length === 0) {
    await insertRecordEvents(db, notes);
    return { applied: [], stale: [] };
  }
  // one change per record per batch: the caller folds several inputs for a record into one
  const ordered = [...changes].sort((a, b) => a.id - b.id);
  const col = <T>(pick: (change: RecordChange) => T) => ordered.map(pick);
  return db.transaction().execute(async (trx) => {
    // lock the rows in id order first: concurrent batches then queue behind each other instead of
    // deadlocking on overlapping records taken in different orders
    await sql`SELECT 1 FROM upgrade_records WHERE id = ANY(${ordered.map((c) => c.id)}::bigint[]) ORDER BY id FOR UPDATE`.execute(trx);
    const { rows } = await sql<{ id: number }>`
      UPDATE upgrade_records r SET
        state = u.state, attempts = u.attempts, progress = u.progress, error_reason = u.error_reason,
        message_id = u.message_id, started_at = to_timestamp(u.started_at / 1000.0), attempt_started_at = to_timestamp(u.attempt_started_at / 1000.0),
        deadline_at = to_timestamp(u.deadline_at / 1000.0), response_deadline_at = to_timestamp(u.response_deadline_at / 1000.0), retry_at = to_timestamp(u.retry_at / 1000.0),
        last_message_at = to_timestamp(u.last_message_at / 1000.0), completed_at = to_timestamp(u.completed_at / 1000.0),
        queued_at = CASE WHEN u.state = 'waiting' AND r.state = 'waiting' THEN r.queued_at ELSE NULL END,
        push_requested = CASE WHEN u.state = 'waiting' THEN r.push_requested ELSE false END,
        dispatches = r.dispatches + CASE WHEN u.dispatched THEN 1 ELSE 0 END,
        revision = r.revision + 1, updated_at = now()
      FROM unnest(
        ${col((c) => c.id)}::bigint[], ${col((c) => c.revision)}::int[], ${col((c) => c.dispatched === true)}::boolean[], ${col((c) => c.record.state)}::text[],
        ${col((c) => c.record.attempts)}::int[], ${col((c) => c.record.progress)}::smallint[],
        ${col((c) => c.record.errorReason)}::text[], ${col((c) => c.record.messageId)}::text[],
        ${col((c) => toTime(c.record.startedAt))}::float8[], ${col((c) => toTime(c.record.attemptStartedAt))}::float8[],
        ${col((c) => toTime(c.record.deadlineAt))}::float8[], ${col((c) => toTime(c.record.responseDeadlineAt))}::float8[],
        ${col((c) => toTime(c.record.retryAt))}::float8[], ${col((c) => toTime(c.record.lastMessageAt))}::float8[],
        ${col((c) => toTime(c.record.completedAt))}::float8[]
      ) AS u(id, revision, dispatched, state, attempts, progress, error_reason, message_id, started_at, attempt_started_at,
             deadline_at, response_deadline_at, retry_at, last_message_at, completed_at)
      WHERE r.id = u.id AND r.revision = u.revision
      RETURNING r.id`.execute(trx);
    const appliedIds = new Set(rows.map((row) => row.id));
    const applied = ordered.filter((change) => appliedIds.has(change.id));
    const stale = ordered.filter((change) => !appliedIds.has(change.id));
    const events: RecordNote[] = [...notes];
    for (const change of applied) for (const event of change.events) events.push({ recordId: change.id, event });
    await insertRecordEvents(trx, events);
    await addTaskCounters(trx, counterDeltas(applied));
    // a successful upgrade means the device now runs the target version
    const upgraded = applied
      .filter((change) => change.record.state === 'success' && change.fromState !== 'success')
      .sort((a, b) => (a.deviceId < b.deviceId ? -1 : 1));
    if (upgraded.length > 0) {
      await sql`SELECT 1 FROM devices WHERE id = ANY(${upgraded.map((c) => c.deviceId)}::text[]) ORDER BY id FOR UPDATE`.execute(trx);
      await sql`
        UPDATE devices d SET firmware_version = u.version, firmware_reported_at = now(), updated_at = now()
        FROM unnest(${upgraded.map((c) => c.deviceId)}::text[], ${upgraded.map((c) => c.record.targetVersion)}::text[])
          AS u(id, version)
        WHERE d.id = u.id`.execute(trx);
    }
    return { applied, stale };
  });
}
