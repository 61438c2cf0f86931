// The migrations in order. Listed here rather than read from disk so a build runs them too.
import type { Migration } from 'kysely';
import * as initial from './0001_initial.ts';
import * as idempotencyKeys from './0002_idempotency_keys.ts';
import * as recordsFillfactor from './0003_records_fillfactor.ts';
import * as applyRecordChanges from './0004_apply_record_changes.ts';
import * as downloadedEvents from './0005_downloaded_events.ts';
import * as deviceEdge from './0006_device_edge.ts';
import * as deviceCertificates from './0007_device_certificates.ts';
import * as revisions from './0008_revisions.ts';
import * as auditLog from './0009_audit_log.ts';
import * as oneWritePath from './0010_one_write_path.ts';
import * as webhooks from './0011_webhooks.ts';
import * as deviceTags from './0012_device_tags.ts';
import * as rolloutStrategies from './0013_rollout_strategies.ts';
import * as queuedRecords from './0014_queued_records.ts';
import * as releaseBatches from './0015_release_batches.ts';
import * as webhookOutboxRows from './0016_webhook_outbox_rows.ts';
import * as routedDevices from './0017_routed_devices.ts';

export const migrations: Record<string, Migration> = {
  '0001_initial': initial,
  '0002_idempotency_keys': idempotencyKeys,
  '0003_records_fillfactor': recordsFillfactor,
  '0004_apply_record_changes': applyRecordChanges,
  '0005_downloaded_events': downloadedEvents,
  '0006_device_edge': deviceEdge,
  '0007_device_certificates': deviceCertificates,
  '0008_revisions': revisions,
  '0009_audit_log': auditLog,
  '0010_one_write_path': oneWritePath,
  '0011_webhooks': webhooks,
  '0012_device_tags': deviceTags,
  '0013_rollout_strategies': rolloutStrategies,
  '0014_queued_records': queuedRecords,
  '0015_release_batches': releaseBatches,
  '0016_webhook_outbox_rows': webhookOutboxRows,
  '0017_routed_devices': routedDevices,
};
