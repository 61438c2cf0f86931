// kysely's view of the schema (db/migrations). Column names are snake_case in SQL and in these
// types; the API layer maps them to the API's camelCase.
import type { ColumnType, Generated, Insertable, Selectable, Updateable } from 'kysely';
import type { RecordState, RetryPolicy } from '../core/record-machine.ts';
import type { AbortPolicy, PausedReason, RolloutLimits, TaskMode, TaskState } from '../core/tasks.ts';
import type { MaintenanceWindow } from '../core/maintenance-windows.ts';
import type { WaveState } from '../core/waves.ts';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type CreatedAt = ColumnType<Date, Date | string | undefined, never>;
type Json<T> = ColumnType<T, string, string>;


// re-exported for the queries: the types themselves live in core/
export type { AbortPolicy, RecordState, RetryPolicy, RolloutLimits, TaskMode, TaskState };
export type SignMethod = 'md5' | 'sha256';

export interface FirmwareTable {
  id: Generated<string>;
  product_id: string;
  name: string;
  version: string;
  version_order: number;
  url: string | null;
  sign: string | null;
  sign_method: SignMethod | null;
  size: number | null;
  properties: Json<Record<string, string>>;
  description: string | null;
  has_file: Generated<boolean>;
  created_at: CreatedAt;
  updated_at: Timestamp;
  /** Raised by every change; the ETag, checked against If-Match. */
  revision: Generated<number>;
}

export interface DeviceTable {
  id: string;
  product_id: string;
  name: string | null;
  firmware_version: string | null;
  firmware_properties: Json<Record<string, unknown>> | null;
  firmware_reported_at: Timestamp | null;
  report_timestamp: number | null;
  /** The gateway this device talks through (a child device), or null. */
  gateway_id: Generated<string | null>;
  /** Labels to select devices by (migration 0012); `{}` when none. */
  tags: ColumnType<Record<string, string>, string | undefined, string>;
  created_at: CreatedAt;
  updated_at: Timestamp;
}

export interface UpgradeTaskTable {
  id: Generated<string>;
  firmware_id: string;
  product_id: string;
  firmware_version: string;
  name: string;
  description: string | null;
  mode: TaskMode;
  timeout_seconds: number;
  response_timeout_seconds: number | null;
  retry: Json<RetryPolicy>;
  rollout: Json<RolloutLimits>;
  abort: Json<AbortPolicy> | null;
  start_at: Timestamp | null;
  state: Generated<TaskState>;
  total: Generated<number>;
  waiting: Generated<number>;
  processing: Generated<number>;
  success: Generated<number>;
  failed: Generated<number>;
  canceled: Generated<number>;
  created_at: CreatedAt;
  updated_at: Timestamp;
  /** Raised by a change of settings or state, not by the record counters; the ETag, checked against If-Match. */
  revision: Generated<number>;
  /** Maintenance windows (docs/strategies.md#windows): sends only inside them; null for always. */
  windows: Json<MaintenanceWindow[]> | null;
  /** Enrols devices that come to match `selection` later (docs/strategies.md#continuous). */
  continuous: Generated<boolean>;
  /** The release selection a continuous task enrols by. */
  selection: Json<StoredSelection> | null;
  end_at: Timestamp | null;
  paused_reason: PausedReason | null;
  /** The highest wave the dispatcher sends to; null for a task without waves. */
  open_wave: number | null;
}

/** A release's selection as a continuous task keeps it (docs/strategies.md#continuous). */
export type StoredSelection =
  | { allDevices: true; fromVersions?: string[]; push: boolean }
  | { deviceIds: string[]; fromVersions?: string[]; push: boolean }
  | { tags: Record<string, string>; fromVersions?: string[]; push: boolean };

/** One wave of a task: its counters (kept by trigger, migration 0013) and its gate. */
export interface TaskWaveTable {
  task_id: string;
  index: number;
  total: Generated<number>;
  waiting: Generated<number>;
  processing: Generated<number>;
  success: Generated<number>;
  failed: Generated<number>;
  canceled: Generated<number>;
  state: Generated<WaveState>;
  gate_met_at: Timestamp | null;
  approved: Generated<boolean>;
}

export interface UpgradeRecordTable {
  id: Generated<number>;
  task_id: string;
  firmware_id: string;
  device_id: string;
  product_id: string;
  from_version: string | null;
  target_version: string;
  state: Generated<RecordState>;
  progress: Generated<number>;
  attempts: Generated<number>;
  error_reason: string | null;
  push_requested: Generated<boolean>;
  queued_at: Timestamp | null;
  dispatches: Generated<number>;
  attempt_started_at: Timestamp | null;
  deadline_at: Timestamp | null;
  response_deadline_at: Timestamp | null;
  retry_at: Timestamp | null;
  message_id: string | null;
  last_message_at: Timestamp | null;
  created_at: CreatedAt;
  started_at: Timestamp | null;
  completed_at: Timestamp | null;
  updated_at: Timestamp;
  revision: Generated<number>;
  /** Every `ignored` event of the record; its timeline keeps only the first 20. */
  ignored_events: Generated<number>;
  /** Its wave (docs/strategies.md#waves), placed at release; 0 in a task without waves. */
  wave: Generated<number>;
}

export interface RecordEventTable {
  id: Generated<number>;
  record_id: number;
  at: CreatedAt;
  type: string;
  attempt: number;
  progress: number | null;
  message: string | null;
}

export type IdempotencyKeyState = 'in_progress' | 'done';

export interface IdempotencyKeyTable {
  api_key_hash: string;
  method: string;
  path: string;
  idempotency_key: string;
  request_hash: string;
  state: Generated<IdempotencyKeyState>;
  response_status: number | null;
  response_body: string | null;
  // reset when an expired or stale key is taken over
  created_at: Timestamp;
  expires_at: Timestamp;
}

export type DeviceCertificateOrigin = 'generated' | 'csr';

export interface DeviceCertificateTable {
  serial: string;
  device_id: string;
  origin: DeviceCertificateOrigin;
  issued_at: CreatedAt;
  not_after: Timestamp;
  revoked_at: Timestamp | null;
}

export interface AuditLogTable {
  id: Generated<number>;
  at: Timestamp;
  key_fingerprint: string;
  role: string;
  method: string;
  path: string;
  target_type: string | null;
  target_id: string | null;
  status: number;
}

export interface WebhookTable {
  id: Generated<string>;
  url: string;
  /** The HMAC key of the deliveries' signatures; never answered by the API. */
  secret: string;
  events: string[];
  product_id: string | null;
  created_at: CreatedAt;
}

export interface WebhookDeliveryTable {
  id: string;
  webhook_id: string;
  /** `task:<id>` or `product:<id>`: deliveries of one stream go out in `first_seq` order. */
  stream: string;
  first_seq: number;
  event_count: number;
  state: Generated<'pending' | 'delivered' | 'failed'>;
  attempts: Generated<number>;
  created_at: CreatedAt;
  next_attempt_at: Timestamp;
  lease_token: string | null;
  leased_until: Timestamp | null;
  last_attempt_at: Timestamp | null;
  last_status: number | null;
  last_error: string | null;
  completed_at: Timestamp | null;
}

/** The webhook outbox (db/migrations/0011_webhooks.ts), filled by triggers. */
/** Up to 100 webhook events of one hook and stream, in order (migration 0016). */
export interface WebhookOutboxTable {
  id: Generated<number>;
  webhook_id: string;
  stream: string;
  event_count: number;
  oldest_at: Timestamp;
  /** [{ type, at, data }, …] */
  events: Json<unknown>;
  delivery_id: string | null;
  /** The id receivers see for the row's first event; the others follow it. */
  first_seq: number | null;
}

export interface Database {
  firmware: FirmwareTable;
  devices: DeviceTable;
  upgrade_tasks: UpgradeTaskTable;
  task_waves: TaskWaveTable;
  upgrade_records: UpgradeRecordTable;
  record_events: RecordEventTable;
  idempotency_keys: IdempotencyKeyTable;
  device_certificates: DeviceCertificateTable;
  audit_log: AuditLogTable;
  webhooks: WebhookTable;
  webhook_deliveries: WebhookDeliveryTable;
  webhook_outbox: WebhookOutboxTable;
}

export type FirmwareRow = Selectable<FirmwareTable>;
export type NewFirmwareRow = Insertable<FirmwareTable>;
export type FirmwareUpdate = Updateable<FirmwareTable>;
export type DeviceRow = Selectable<DeviceTable>;
export type TaskRow = Selectable<UpgradeTaskTable>;
export type TaskWaveRow = Selectable<TaskWaveTable>;
export type RecordRow = Selectable<UpgradeRecordTable>;
export type RecordEventRow = Selectable<RecordEventTable>;
export type IdempotencyKeyRow = Selectable<IdempotencyKeyTable>;
export type AuditLogRow = Selectable<AuditLogTable>;
export type NewAuditLogRow = Insertable<AuditLogTable>;
export type WebhookRow = Selectable<WebhookTable>;
export type WebhookDeliveryRow = Selectable<WebhookDeliveryTable>;
