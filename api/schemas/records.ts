// Upgrade records and their event timelines as the API shows them (docs/states-and-rules.md#upgrade-records), and the
// mappers from the database rows. Shared by the device, task and record routes.
import { Type, type Static } from 'typebox';
import type { RecordEventRow, RecordRow } from '../../db/database.ts';
import { EntityId, NullableTimestamp, Timestamp, Uuid, iso } from './common.ts';

const NullableString = Type.Union([Type.String(), Type.Null()]);

export const UpgradeRecordState = Type.Union([
  Type.Literal('waiting'),
  Type.Literal('processing'),
  Type.Literal('success'),
  Type.Literal('failed'),
  Type.Literal('canceled'),
]);

export const UpgradeRecord = Type.Object({
  id: Type.Integer(),
  taskId: Uuid,
  firmwareId: Uuid,
  deviceId: EntityId,
  productId: EntityId,
  fromVersion: NullableString,
  targetVersion: Type.String(),
  state: UpgradeRecordState,
  progress: Type.Integer({ minimum: 0, maximum: 100 }),
  attempts: Type.Integer({ minimum: 0 }),
  wave: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], { description: 'its wave (from 1) in a task with waves, else null' }),
  errorReason: NullableString,
  ignoredEvents: Type.Integer({ minimum: 0, description: 'late or repeated messages ignored for this record; its timeline keeps the first 20 of them' }),
  createdAt: Timestamp,
  startedAt: NullableTimestamp,
  completedAt: NullableTimestamp,
  updatedAt: Timestamp,
});
export type UpgradeRecordJson = Static<typeof UpgradeRecord>;

export const RecordEventType = Type.Union([
  Type.Literal('released'),
  Type.Literal('queued'),
  Type.Literal('sent'),
  Type.Literal('acknowledged'),
  Type.Literal('pulled'),
  Type.Literal('downloaded'),
  Type.Literal('progress'),
  Type.Literal('success'),
  Type.Literal('failed'),
  Type.Literal('timeout'),
  Type.Literal('retry'),
  Type.Literal('canceled'),
  Type.Literal('ignored'),
]);

export const RecordEvent = Type.Object({
  at: Timestamp,
  type: RecordEventType,
  attempt: Type.Integer({ minimum: 0 }),
  progress: Type.Optional(Type.Integer({ minimum: 0, maximum: 100 })),
  message: Type.Optional(Type.String()),
});
export type RecordEventJson = Static<typeof RecordEvent>;
export type RecordEventTypeName = Static<typeof RecordEventType>;

/** The most events `GET /api/records/{id}` answers: the latest ones. */
export const MAX_RECORD_EVENTS = 1_000;

export const RecordWithEvents = Type.Object({
  ...UpgradeRecord.properties,
  events: Type.Array(RecordEvent, { description: `the timeline, oldest first: its latest ${MAX_RECORD_EVENTS.toLocaleString('en')} events at most` }),
  eventsTotal: Type.Integer({ minimum: 0, description: 'how many events the timeline holds in all' }),
});
export type RecordWithEventsJson = Static<typeof RecordWithEvents>;

export function recordToJson(row: RecordRow): UpgradeRecordJson {
  return {
    id: row.id,
    taskId: row.task_id,
    firmwareId: row.firmware_id,
    deviceId: row.device_id,
    productId: row.product_id,
    fromVersion: row.from_version,
    targetVersion: row.target_version,
    state: row.state,
    progress: row.progress,
    attempts: row.attempts,
    wave: row.wave > 0 ? row.wave : null,
    errorReason: row.error_reason,
    ignoredEvents: row.ignored_events,
    createdAt: row.created_at.toISOString(),
    startedAt: iso(row.started_at),
    completedAt: iso(row.completed_at),
    updatedAt: row.updated_at.toISOString(),
  };
}

export function eventToJson(row: RecordEventRow): RecordEventJson {
  const event: RecordEventJson = {
    at: row.at.toISOString(),
    // the column is plain text; Otter only ever writes the documented event types into it (docs/states-and-rules.md#record-events)
    type: row.type as RecordEventTypeName,
    attempt: row.attempt,
  };
  if (row.progress !== null) event.progress = row.progress;
  if (row.message !== null) event.message = row.message;
  return event;
}

export function recordWithEventsToJson(row: RecordRow, events: readonly RecordEventRow[], eventsTotal = events.length): RecordWithEventsJson {
  return { ...recordToJson(row), events: events.map(eventToJson), eventsTotal };
}
