// Writes the record state machine's transitions for many records at once: one guarded UPDATE
// (a change applies only if the record's revision is still the one it was computed from), one
// INSERT of timeline events, one UPDATE of the tasks' state counters — all in one transaction,
// one server-side function call.
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

/**
 * Writes the changes, and the notes' events, in one call of otter_apply_record_changes (migrations
 * 0004, 0006): one round trip, so row locks last only as long as Postgres works on them. Notes go
 * through it too, even without changes: it is where a timeline's `ignored` events are capped.
 */
export async function applyRecordChanges(
  db: Db,
  changes: readonly RecordChange[],
  notes: readonly RecordNote[] = [],
): Promise<AppliedChanges> {
  if (changes.length === 0 && notes.length === 0) return { applied: [], stale: [] };
  // one change per record per batch: the caller folds several inputs for a record into one
  const ordered = [...changes].sort((a, b) => a.id - b.id);
  const col = <T>(pick: (change: RecordChange) => T) => ordered.map(pick);
  const events: Array<{ recordId: number; event: TimelineEvent; always: boolean }> = notes.map((note) => ({ ...note, always: true }));
  for (const change of ordered) for (const event of change.events) events.push({ recordId: change.id, event, always: false });
  const ev = <T>(pick: (entry: (typeof events)[number]) => T) => events.map(pick);
  const { rows } = await sql<{ applied: string[] }>`
    SELECT otter_apply_record_changes(
      ${col((c) => c.id)}::bigint[], ${col((c) => c.revision)}::int[], ${col((c) => c.dispatched === true)}::boolean[],
      ${col((c) => c.taskId)}::uuid[], ${col((c) => c.fromState)}::text[], ${col((c) => c.deviceId)}::text[],
      ${col((c) => c.record.targetVersion)}::text[], ${col((c) => c.record.state)}::text[],
      ${col((c) => c.record.attempts)}::int[], ${col((c) => c.record.progress)}::smallint[],
      ${col((c) => c.record.errorReason)}::text[], ${col((c) => c.record.messageId)}::text[],
      ${col((c) => toTime(c.record.startedAt))}::float8[], ${col((c) => toTime(c.record.attemptStartedAt))}::float8[],
      ${col((c) => toTime(c.record.deadlineAt))}::float8[], ${col((c) => toTime(c.record.responseDeadlineAt))}::float8[],
      ${col((c) => toTime(c.record.retryAt))}::float8[], ${col((c) => toTime(c.record.lastMessageAt))}::float8[],
      ${col((c) => toTime(c.record.completedAt))}::float8[],
      ${ev((e) => e.recordId)}::bigint[], ${ev((e) => e.event.type)}::text[], ${ev((e) => e.event.attempt)}::int[],
      ${ev((e) => e.event.progress ?? null)}::smallint[], ${ev((e) => e.event.message ?? null)}::text[],
      ${ev((e) => e.always)}::boolean[]
    ) AS applied`.execute(db);
  // int8[] comes back as strings
  const appliedIds = new Set((rows[0]?.applied ?? []).map(Number));
  return {
    applied: ordered.filter((change) => appliedIds.has(change.id)),
    stale: ordered.filter((change) => !appliedIds.has(change.id)),
  };
}
