// Loads upgrade records together with their task's policy, in the shape the record state machine
// reads, for many records or devices in one query.
import { sql } from 'kysely';
import type { Db } from '../connection.ts';
import type { DeviceBinding } from '../../core/device-binding.ts';
import type { JobbedRecord } from '../../core/jobs.ts';
import type { RecordSnapshot, RecordState, UpgradePolicy } from '../../core/record-machine.ts';
import type { RetryPolicy, RolloutLimits, TaskState } from '../database.ts';
import type { MaintenanceWindow } from '../../core/maintenance-windows.ts';

export interface UpgradeState {
  id: number;
  taskId: string;
  firmwareId: string;
  deviceId: string;
  productId: string;
  /** Its wave (docs/strategies.md#waves), 0 in a task without waves. */
  wave: number;
  revision: number;
  taskState: TaskState;
  /** Its task's records that succeeded so far: a ramp's rate grows with them. */
  taskSuccess: number;
  windows: MaintenanceWindow[] | null;
  rollout: RolloutLimits;
  policy: UpgradePolicy;
  snapshot: RecordSnapshot;
}

interface Row {
  id: number;
  task_id: string;
  firmware_id: string;
  device_id: string;
  product_id: string;
  wave: number;
  revision: number;
  queued_at: number | null;
  push_requested: boolean;
  dispatches: number;
  state: RecordState;
  target_version: string;
  attempts: number;
  progress: number;
  error_reason: string | null;
  message_id: string | null;
  started_at: number | null;
  attempt_started_at: number | null;
  deadline_at: number | null;
  response_deadline_at: number | null;
  retry_at: number | null;
  last_message_at: number | null;
  completed_at: number | null;
  task_state: TaskState;
  mode: 'push' | 'pull';
  timeout_seconds: number;
  response_timeout_seconds: number | null;
  retry: RetryPolicy;
  rollout: RolloutLimits;
  task_success: number;
  windows: MaintenanceWindow[] | null;
}


/** The record as its job is built from it (core/jobs.ts upgradeJob). */
export function jobbed(state: UpgradeState): JobbedRecord {
  return { id: state.id, taskId: state.taskId, deviceId: state.deviceId, dispatches: state.snapshot.dispatches };
}

function toUpgradeState(row: Row): UpgradeState {
  return {
    id: row.id,
    taskId: row.task_id,
    firmwareId: row.firmware_id,
    deviceId: row.device_id,
    productId: row.product_id,
    wave: row.wave,
    revision: row.revision,
    taskState: row.task_state,
    taskSuccess: row.task_success,
    windows: row.windows,
    rollout: row.rollout ?? {},
    policy: {
      mode: row.mode,
      timeoutSeconds: row.timeout_seconds,
      responseTimeoutSeconds: row.response_timeout_seconds,
      retry: row.retry,
    },
    snapshot: {
      state: row.state,
      targetVersion: row.target_version,
      attempts: row.attempts,
      progress: row.progress,
      errorReason: row.error_reason,
      messageId: row.message_id,
      startedAt: row.started_at,
      attemptStartedAt: row.attempt_started_at,
      deadlineAt: row.deadline_at,
      responseDeadlineAt: row.response_deadline_at,
      retryAt: row.retry_at,
      lastMessageAt: row.last_message_at,
      completedAt: row.completed_at,
      pushRequested: row.push_requested,
      queuedAt: row.queued_at,
      dispatches: row.dispatches,
    },
  };
}

// times come back as epoch milliseconds: cheaper to parse than timestamps, and what the state machine uses
const ms = (column: string) => sql.raw(`(extract(epoch FROM r.${column}) * 1000)::float8 AS ${column}`);

const COLUMNS = sql`
  r.id, r.task_id, r.firmware_id, r.device_id, r.product_id, r.wave, r.revision, ${ms('queued_at')}, r.push_requested, r.dispatches,
  r.state, r.target_version, r.attempts, r.progress, r.error_reason, r.message_id, ${ms('started_at')},
  ${ms('attempt_started_at')}, ${ms('deadline_at')}, ${ms('response_deadline_at')}, ${ms('retry_at')}, ${ms('last_message_at')},
  ${ms('completed_at')}, t.state AS task_state, t.mode, t.timeout_seconds, t.response_timeout_seconds, t.retry, t.rollout,
  t.success AS task_success, t.windows`;

export async function loadUpgradeStatesByIds(db: Db, ids: readonly number[]): Promise<Map<number, UpgradeState>> {
  if (ids.length === 0) return new Map();
  const { rows } = await sql<Row>`
    SELECT ${COLUMNS}
    FROM upgrade_records r JOIN upgrade_tasks t ON t.id = r.task_id
    WHERE r.id = ANY(${[...ids]}::bigint[])`.execute(db);
  return new Map(rows.map((row) => [row.id, toUpgradeState(row)]));
}

/**
 * For each device, the record a device message is about: its active (waiting or processing)
 * record if it has one, otherwise its most recent record, so late messages land on its timeline.
 */
export async function loadUpgradeStatesByDevices(db: Db, deviceIds: readonly string[]): Promise<Map<string, UpgradeState>> {
  if (deviceIds.length === 0) return new Map();
  const { rows } = await sql<Row>`
    SELECT DISTINCT ON (r.device_id) ${COLUMNS}
    FROM upgrade_records r JOIN upgrade_tasks t ON t.id = r.task_id
    WHERE r.device_id = ANY(${[...new Set(deviceIds)]}::text[])
    ORDER BY r.device_id, (r.state IN ('waiting', 'processing')) DESC, r.id DESC`.execute(db);
  return new Map(rows.map((row) => [row.device_id, toUpgradeState(row)]));
}

// a subquery, not a join: the planner would otherwise hash the whole devices table for a gateway
// column that is mostly null (measured: 100 ms instead of 40 ms for 1,000 of 100,000 devices)
const GATEWAY_PRODUCT = sql`(SELECT g.product_id FROM devices g WHERE g.id = d.gateway_id)`;

/** A registered device as its messages see it: its binding, and the record they are about (if any). */
export interface DeviceState {
  binding: DeviceBinding;
  upgrade: UpgradeState | undefined;
}

/**
 * For each registered device of `deviceIds`: its product and gateway (with the gateway's product),
 * and the record a message is about, as loadUpgradeStatesByDevices picks it — one query for both,
 * so checking who may speak for a device costs no extra round trip. Unknown devices are absent.
 */
export async function loadDeviceStates(db: Db, deviceIds: readonly string[]): Promise<Map<string, DeviceState>> {
  if (deviceIds.length === 0) return new Map();
  const { rows } = await sql<Partial<Row> & { req_id: string; device_product_id: string; gateway_id: string | null; gateway_product_id: string | null }>`
    SELECT d.id AS req_id, d.product_id AS device_product_id, d.gateway_id,
      ${GATEWAY_PRODUCT} AS gateway_product_id, s.*
    FROM devices d
    LEFT JOIN LATERAL (
      SELECT ${COLUMNS}
      FROM upgrade_records r JOIN upgrade_tasks t ON t.id = r.task_id
      WHERE r.device_id = d.id
      ORDER BY (r.state IN ('waiting', 'processing')) DESC, r.id DESC
      LIMIT 1) s ON true
    WHERE d.id = ANY(${[...new Set(deviceIds)]}::text[])`.execute(db);
  return new Map(rows.map((row) => [row.req_id, {
    binding: { productId: row.device_product_id, gatewayId: row.gateway_id, gatewayProductId: row.gateway_product_id },
    upgrade: row.id === null || row.id === undefined ? undefined : toUpgradeState(row as Row),
  }]));
}

/** The bindings of the registered devices among `deviceIds` (a device's product and gateway). */
export async function loadDeviceBindings(db: Db, deviceIds: readonly string[]): Promise<Map<string, DeviceBinding>> {
  if (deviceIds.length === 0) return new Map();
  const { rows } = await sql<{ id: string; product_id: string; gateway_id: string | null; gateway_product_id: string | null }>`
    SELECT d.id, d.product_id, d.gateway_id, ${GATEWAY_PRODUCT} AS gateway_product_id
    FROM devices d
    WHERE d.id = ANY(${[...new Set(deviceIds)]}::text[])`.execute(db);
  return new Map(rows.map((row) => [row.id, { productId: row.product_id, gatewayId: row.gateway_id, gatewayProductId: row.gateway_product_id }]));
}

/**
 * The records the dispatcher may hand to the queue (core/record-machine.ts isDispatchable, tested
 * equal): the one SQL form of that rule, matching the partial index of migration 0001.
 */
export const DISPATCHABLE = sql`state = 'waiting' AND push_requested AND queued_at IS NULL`;

/**
 * Of a task's dispatchable records, those of its open waves (docs/strategies.md#waves): every one
 * when the task has no waves (its records are all wave 0, its open_wave null).
 */
export function inOpenWaves(taskId: unknown) {
  return sql`wave <= (SELECT coalesce(open_wave, 32767) FROM upgrade_tasks WHERE id = ${taskId})`;
}

/** A page of a task's records that should have a job (queued, or processing) after `afterId`, in id order. */
export async function loadInFlightStates(db: Db, taskId: string, afterId: number, limit: number): Promise<UpgradeState[]> {
  const { rows } = await sql<Row>`
    SELECT ${COLUMNS}
    FROM upgrade_records r JOIN upgrade_tasks t ON t.id = r.task_id
    WHERE r.task_id = ${taskId} AND r.id > ${afterId}
      AND (r.state = 'processing' OR (r.state = 'waiting' AND r.queued_at IS NOT NULL))
    ORDER BY r.id LIMIT ${limit}`.execute(db);
  return rows.map(toUpgradeState);
}

/** Which of a task's records a set-based operation (cancel, retry, push, claim) works on. */
export interface RecordSelection {
  taskId: string;
  states?: readonly RecordState[];
  deviceIds?: readonly string[];
  /** Only records the dispatcher may hand to the queue. */
  dispatchable?: boolean;
  /** Only records whose device has no active (waiting or processing) record in any task. */
  deviceIdle?: boolean;
  /** Skip records another transaction holds instead of waiting for them. */
  skipLocked?: boolean;
}

/**
 * Locks and loads up to `limit` of the selected records after `afterId`, in id order (the order in
 * which record batches lock them). Only inside a transaction.
 */
export async function lockUpgradeStates(trx: Db, selection: RecordSelection, after: UpgradeState | undefined, limit: number): Promise<UpgradeState[]> {
  // pages follow the order below: wave by wave for the dispatcher, by id for the rest
  const filters = [
    sql`task_id = ${selection.taskId}`,
    selection.dispatchable ? sql`(wave, id) > (${after?.wave ?? -1}, ${after?.id ?? 0})` : sql`id > ${after?.id ?? 0}`,
  ];
  if (selection.states) filters.push(sql`state = ANY(${[...selection.states]}::text[])`);
  if (selection.deviceIds) filters.push(sql`device_id = ANY(${[...selection.deviceIds]}::text[])`);
  if (selection.dispatchable) filters.push(DISPATCHABLE, inOpenWaves(selection.taskId));
  if (selection.deviceIdle) {
    filters.push(sql`NOT EXISTS (SELECT 1 FROM upgrade_records o
                                 WHERE o.device_id = upgrade_records.device_id AND o.state IN ('waiting', 'processing'))`);
  }
  // The lock is taken on the rows the outer query returns, not in the subquery: a row another
  // transaction changed while this one waited for it is then returned as that transaction left it
  // (PostgreSQL re-reads a row it locks), never as the statement's older snapshot saw it, whose
  // change would be refused as stale (a cancel amid device progress reports missed records so).
  const { rows } = await sql<Row>`
    SELECT ${COLUMNS}
    FROM upgrade_records r JOIN upgrade_tasks t ON t.id = r.task_id
    WHERE r.id IN (
      SELECT id FROM upgrade_records
      WHERE ${sql.join(filters, sql` AND `)}
      -- dispatchable records in the order of their index (migration 0013): wave by wave
      ORDER BY ${selection.dispatchable ? sql`wave, id` : sql`id`} LIMIT ${limit})
    ORDER BY ${selection.dispatchable ? sql`r.wave, r.id` : sql`r.id`}
    FOR UPDATE OF r ${selection.skipLocked ? sql`SKIP LOCKED` : sql``}`.execute(trx);
  return rows.map(toUpgradeState);
}
