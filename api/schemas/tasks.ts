// Upgrade tasks as the API takes and shows them (docs/rest-api.md#upgrade-tasks), and the mapper
// from the database row.
import { Type, type Static } from 'typebox';
import type { TaskRow } from '../../db/database.ts';
import { EntityId, NullableTimestamp, PagingQuery, Timestamp, Uuid, iso } from './common.ts';
import { TagSelection } from './devices.ts';
import { UpgradeRecordState } from './records.ts';

export const TaskState = Type.Union([
  Type.Literal('created'),
  Type.Literal('running'),
  Type.Literal('paused'),
  Type.Literal('completed'),
  Type.Literal('canceled'),
  Type.Literal('aborted'),
]);

export const FailureReason = Type.Union([
  Type.Literal('timeout'),
  Type.Literal('send_error'),
  Type.Literal('device_failure'),
  Type.Literal('rejected'),
]);

export const RetryPolicy = Type.Object({
  maxAttempts: Type.Integer({ minimum: 1, maximum: 100, description: 'sends at most, the first included' }),
  backoffSeconds: Type.Number({ minimum: 0, maximum: 86_400, description: 'delay before attempt n+1 is backoffSeconds × 2^(n−1)' }),
  on: Type.Array(FailureReason, { uniqueItems: true, maxItems: 4, description: 'which failures are retried' }),
});

export const RolloutLimits = Type.Object({
  maxPerMinute: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000_000, description: 'sends per minute for this task, retries included' })),
  maxInFlight: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000_000, description: 'processing records at once' })),
});

export const AbortPolicy = Type.Object({
  failureRate: Type.Number({ minimum: 0, maximum: 1 }),
  minFinished: Type.Integer({ minimum: 1, maximum: 10_000_000 }),
});

const Name = Type.String({ minLength: 1, maxLength: 128 });
const Description = Type.String({ maxLength: 2_000 });
const TimeoutSeconds = Type.Integer({ minimum: 1, maximum: 30 * 86_400 });

/** The settings a task is created with and may later change (PATCH), all optional. */
const TaskSettings = {
  description: Type.Optional(Type.Union([Description, Type.Null()])),
  timeoutSeconds: Type.Optional(TimeoutSeconds),
  responseTimeoutSeconds: Type.Optional(Type.Union([TimeoutSeconds, Type.Null()])),
  retry: Type.Optional(RetryPolicy),
  rollout: Type.Optional(RolloutLimits),
  abort: Type.Optional(Type.Union([AbortPolicy, Type.Null()])),
  startAt: Type.Optional(Type.Union([Timestamp, Type.Null()])),
};

export const TaskCreateBody = Type.Object({
  firmwareId: Uuid,
  name: Name,
  mode: Type.Optional(Type.Union([Type.Literal('push'), Type.Literal('pull')], { default: 'push' })),
  ...TaskSettings,
});
export type TaskCreateBodyType = Static<typeof TaskCreateBody>;

export const TaskPatchBody = Type.Object({ name: Type.Optional(Name), ...TaskSettings }, { minProperties: 1 });

export const TaskStats = Type.Object({
  total: Type.Integer(),
  waiting: Type.Integer(),
  processing: Type.Integer(),
  success: Type.Integer(),
  failed: Type.Integer(),
  canceled: Type.Integer(),
});

export const Task = Type.Object({
  id: Uuid,
  firmwareId: Uuid,
  productId: EntityId,
  firmwareVersion: Type.String(),
  name: Type.String(),
  description: Type.Union([Type.String(), Type.Null()]),
  mode: Type.Union([Type.Literal('push'), Type.Literal('pull')]),
  timeoutSeconds: Type.Integer(),
  responseTimeoutSeconds: Type.Union([Type.Integer(), Type.Null()]),
  retry: RetryPolicy,
  rollout: RolloutLimits,
  abort: Type.Union([AbortPolicy, Type.Null()]),
  startAt: NullableTimestamp,
  state: TaskState,
  stats: TaskStats,
  revision: Type.Integer({
    description: 'raised by every change of the settings or the state (not by the record counters); '
      + 'the ETag is this number in quotes, for If-Match',
  }),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});
export type TaskJson = Static<typeof Task>;

export const TaskListQuery = Type.Object({
  firmwareId: Type.Optional(Uuid),
  productId: Type.Optional(EntityId),
  state: Type.Optional(TaskState),
  ...PagingQuery,
});

const DeviceIds = Type.Array(EntityId, { minItems: 1, maxItems: 100_000 });
const Versions = Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { minItems: 1, maxItems: 1_000 });

export const ReleaseBody = Type.Union([
  Type.Object({ allDevices: Type.Literal(true), fromVersions: Type.Optional(Versions), push: Type.Optional(Type.Boolean()) }),
  Type.Object({ deviceIds: DeviceIds, fromVersions: Type.Optional(Versions), push: Type.Optional(Type.Boolean()) }),
  Type.Object({ tags: TagSelection, fromVersions: Type.Optional(Versions), push: Type.Optional(Type.Boolean()) }),
]);

const SkipCounts = Type.Object({
  already_on_version: Type.Optional(Type.Integer()),
  busy: Type.Optional(Type.Integer()),
  version_filtered: Type.Optional(Type.Integer()),
  unknown_device: Type.Optional(Type.Integer()),
  already_in_task: Type.Optional(Type.Integer()),
});

export const ReleaseReply = Type.Object({
  added: Type.Integer(),
  skipped: SkipCounts,
  skippedDevices: Type.Array(Type.Object({ deviceId: Type.String(), reason: Type.String() })),
  queued: Type.Optional(Type.Integer({ description: 'records marked for push, with push: true' })),
});

export const PushBody = Type.Object({ deviceIds: Type.Optional(DeviceIds) });
export const PushReply = Type.Object({ queued: Type.Integer({ description: 'waiting records now marked to be sent' }) });

export const CancelBody = Type.Object({
  deviceIds: Type.Optional(DeviceIds),
  includeProcessing: Type.Optional(Type.Boolean({ default: false })),
});
export const CancelReply = Type.Object({ canceled: Type.Integer(), task: Task });

export const RetryBody = Type.Object({
  states: Type.Optional(
    Type.Array(Type.Union([Type.Literal('failed'), Type.Literal('canceled')]), { minItems: 1, uniqueItems: true }),
  ),
  deviceIds: Type.Optional(DeviceIds),
});
export const RetryReply = Type.Object({ retried: Type.Integer(), task: Task });

export const TaskRecordsQuery = Type.Object({
  state: Type.Optional(UpgradeRecordState),
  deviceId: Type.Optional(EntityId),
  ...PagingQuery,
});

export function taskToJson(row: TaskRow): TaskJson {
  return {
    id: row.id,
    firmwareId: row.firmware_id,
    productId: row.product_id,
    firmwareVersion: row.firmware_version,
    name: row.name,
    description: row.description,
    mode: row.mode,
    timeoutSeconds: row.timeout_seconds,
    responseTimeoutSeconds: row.response_timeout_seconds,
    retry: row.retry as TaskJson['retry'],
    rollout: row.rollout ?? {},
    abort: row.abort,
    startAt: iso(row.start_at),
    state: row.state,
    stats: {
      total: row.total,
      waiting: row.waiting,
      processing: row.processing,
      success: row.success,
      failed: row.failed,
      canceled: row.canceled,
    },
    revision: row.revision,
    createdAt: iso(row.created_at)!,
    updatedAt: iso(row.updated_at)!,
  };
}
