// Upgrade tasks as the API takes and shows them (docs/rest-api.md#upgrade-tasks), and the mapper
// from the database row.
import { Type, type Static } from 'typebox';
import type { TaskRow, TaskWaveRow } from '../../db/database.ts';
import { nextWindowAt } from '../../core/maintenance-windows.ts';
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

export const WaveSize = Type.Union([
  Type.Object({ percent: Type.Number({ exclusiveMinimum: 0, maximum: 100, description: 'cumulative share of the task\'s records' }) }),
  Type.Object({ devices: Type.Integer({ minimum: 1, maximum: 10_000_000, description: 'cumulative count of records' }) }),
]);

export const WaveGate = Type.Object({
  minSuccessRate: Type.Optional(Type.Number({ minimum: 0, maximum: 1, description: 'success among the wave\'s succeeded and failed records; default 0.9' })),
  minFinished: Type.Optional(Type.Number({ minimum: 0, maximum: 1, description: 'share of the wave\'s records final; default 1' })),
  soakSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 30 * 86_400, description: 'wait after both hold; default 0' })),
  approval: Type.Optional(Type.Boolean({ description: 'wait for POST /api/tasks/{id}/waves/{n}/approve; default false' })),
});

export const Ramp = Type.Object({
  startPerMinute: Type.Integer({ minimum: 1, maximum: 10_000_000 }),
  factor: Type.Number({ minimum: 1, maximum: 100 }),
  everySucceeded: Type.Integer({ minimum: 1, maximum: 10_000_000 }),
});

export const RolloutLimits = Type.Object({
  maxPerMinute: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000_000, description: 'sends per minute for this task, retries included; a ramp\'s cap' })),
  maxInFlight: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000_000, description: 'processing records at once' })),
  waves: Type.Optional(Type.Array(WaveSize, { minItems: 1, maxItems: 20, description: 'cumulative and increasing; fixed once the task is released' })),
  gate: Type.Optional(WaveGate),
  ramp: Type.Optional(Ramp),
  firstDeviceIds: Type.Optional(Type.Array(EntityId, { maxItems: 10_000, uniqueItems: true, description: 'placed in wave 1' })),
});

const Weekday = Type.Union([
  Type.Literal('mon'),
  Type.Literal('tue'),
  Type.Literal('wed'),
  Type.Literal('thu'),
  Type.Literal('fri'),
  Type.Literal('sat'),
  Type.Literal('sun'),
]);

export const MaintenanceWindow = Type.Object({
  days: Type.Array(Weekday, { minItems: 1, maxItems: 7, uniqueItems: true, description: 'local weekdays on which the window starts' }),
  start: Type.String({ pattern: '^([01][0-9]|2[0-3]):[0-5][0-9]$', description: 'local time, HH:MM' }),
  durationMinutes: Type.Integer({ minimum: 1, maximum: 10_080 }),
  timeZone: Type.String({ minLength: 1, maxLength: 64, description: 'IANA time zone, e.g. Europe/Berlin' }),
});
const Windows = Type.Array(MaintenanceWindow, { minItems: 1, maxItems: 50 });

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
  continuous: Type.Optional(Type.Boolean({ description: 'enrol devices that come to match the release later; ends with cancel or endAt' })),
  windows: Type.Optional(Type.Union([Windows, Type.Null()])),
  endAt: Type.Optional(Type.Union([Timestamp, Type.Null()])),
};

export const TaskCreateBody = Type.Object({
  firmwareId: Uuid,
  name: Name,
  mode: Type.Optional(Type.Union([Type.Literal('push'), Type.Literal('pull')], { default: 'push' })),
  ...TaskSettings,
});
export type TaskCreateBodyType = Static<typeof TaskCreateBody>;

export const TaskPatchBody = Type.Object({ name: Type.Optional(Name), ...TaskSettings }, { minProperties: 1 });
export type TaskPatch = Static<typeof TaskPatchBody>;

export const TaskStats = Type.Object({
  total: Type.Integer(),
  waiting: Type.Integer(),
  processing: Type.Integer(),
  success: Type.Integer(),
  failed: Type.Integer(),
  canceled: Type.Integer(),
});

export const WaveJson = Type.Object({
  index: Type.Integer({ description: 'from 1' }),
  size: Type.Integer(),
  state: Type.Union([
    Type.Literal('pending'),
    Type.Literal('running'),
    Type.Literal('soaking'),
    Type.Literal('awaiting_approval'),
    Type.Literal('passed'),
    Type.Literal('failed'),
  ]),
  stats: TaskStats,
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
  continuous: Type.Boolean(),
  windows: Type.Union([Windows, Type.Null()]),
  nextWindowAt: Type.Union([Timestamp, Type.Null()], { description: 'with windows, when the next one opens; null inside one' }),
  endAt: NullableTimestamp,
  state: TaskState,
  pausedReason: Type.Union([Type.Literal('manual'), Type.Literal('gate_failed'), Type.Null()]),
  stats: TaskStats,
  waves: Type.Array(WaveJson),
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
  wave: Type.Optional(Type.Integer({ minimum: 1, maximum: 20, description: "only this wave's records" })),
  ...PagingQuery,
});

/** The task as the API shows it; `waves` from findTaskWaves, `now` the clock windows are read by. */
export function taskToJson(row: TaskRow, waves: readonly TaskWaveRow[] = [], now = Date.now()): TaskJson {
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
    continuous: row.continuous,
    windows: row.windows as TaskJson['windows'],
    nextWindowAt: row.windows ? iso(nextWindowAt(row.windows, new Date(now))) : null,
    endAt: iso(row.end_at),
    state: row.state,
    pausedReason: row.state === 'paused' ? (row.paused_reason ?? 'manual') : null,
    waves: waves.map((wave) => ({ index: wave.index, size: wave.total, state: wave.state, stats: statsOf(wave) })),
    stats: statsOf(row),
    revision: row.revision,
    createdAt: iso(row.created_at)!,
    updatedAt: iso(row.updated_at)!,
  };
}

function statsOf(counters: Pick<TaskWaveRow, 'total' | 'waiting' | 'processing' | 'success' | 'failed' | 'canceled'>): Static<typeof TaskStats> {
  const { total, waiting, processing, success, failed, canceled } = counters;
  return { total, waiting, processing, success, failed, canceled };
}
