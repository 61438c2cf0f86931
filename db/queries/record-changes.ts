// The one write path of upgrade records (docs/states-and-rules.md#one-write-path): every change is
// a transition of the state machine (core/record-machine.ts), written for many records at once by
// otter_write_records (migration 0010) — one guarded UPDATE of named fields (a change applies only
// if the record's revision is still the one it was computed from), the timeline's events, and the
// device's version after a success, in one round trip. Task counters follow by trigger.
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
}

/** The change that writes `transition`'s outcome over the record `state` was read as. */
export function changeOf(state: UpgradeState, transition: Pick<Transition, 'record' | 'events'>): RecordChange {
  return {
    id: state.id,
    taskId: state.taskId,
    deviceId: state.deviceId,
    revision: state.revision,
    fromState: state.snapshot.state,
    record: transition.record,
    events: transition.events,
  };
}

/** The record as it is once `change` is written: what a caller holding `state` reads next. */
export function stateAfter(state: UpgradeState, change: RecordChange): UpgradeState {
  return { ...state, revision: change.revision + 1, snapshot: change.record };
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

/** A change as otter_write_records reads it (the composite type otter_record_change). */
function toRow(change: RecordChange) {
  const r = change.record;
  return {
    id: change.id,
    revision: change.revision,
    device_id: change.deviceId,
    target_version: r.targetVersion,
    from_state: change.fromState,
    state: r.state,
    attempts: r.attempts,
    progress: r.progress,
    error_reason: r.errorReason,
    message_id: r.messageId,
    started_at: r.startedAt,
    attempt_started_at: r.attemptStartedAt,
    deadline_at: r.deadlineAt,
    response_deadline_at: r.responseDeadlineAt,
    retry_at: r.retryAt,
    last_message_at: r.lastMessageAt,
    completed_at: r.completedAt,
    queued_at: r.queuedAt,
    push_requested: r.pushRequested,
    dispatches: r.dispatches,
  };
}

function eventRow(recordId: number, event: TimelineEvent, always: boolean) {
  return { record_id: recordId, type: event.type, attempt: event.attempt, progress: event.progress ?? null, message: event.message ?? null, always };
}

/**
 * Writes the changes, and the notes' events, in one call of otter_write_records. Notes go through
 * it too, even without changes: it is where a timeline's `ignored` events are capped.
 */
export async function applyRecordChanges(
  db: Db,
  changes: readonly RecordChange[],
  notes: readonly RecordNote[] = [],
): Promise<AppliedChanges> {
  if (changes.length === 0 && notes.length === 0) return { applied: [], stale: [] };
  // one change per record per batch: the caller folds several inputs for a record into one
  const ordered = [...changes].sort((a, b) => a.id - b.id);
  const events = notes.map((note) => eventRow(note.recordId, note.event, true));
  for (const change of ordered) for (const event of change.events) events.push(eventRow(change.id, event, false));
  const { rows } = await sql<{ applied: string[] }>`
    SELECT otter_write_records(${JSON.stringify(ordered.map(toRow))}::jsonb, ${JSON.stringify(events)}::jsonb) AS applied`.execute(db);
  // int8[] comes back as strings
  const appliedIds = new Set((rows[0]?.applied ?? []).map(Number));
  return {
    applied: ordered.filter((change) => appliedIds.has(change.id)),
    stale: ordered.filter((change) => !appliedIds.has(change.id)),
  };
}
