// Prometheus metrics of one process (prom-client), in a registry of its own so several apps in one
// test process never share counters. Gauges that read Postgres or Redis are collected at scrape
// time from O(1) sources (task counters, queue counts), never from a table scan.
import type { UpgradeQueues } from './upgrade-queues.ts';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { sql } from 'kysely';
import type { Db } from '../db/connection.ts';

export class Metrics {
  readonly registry = new Registry();

  readonly deviceMessages = new Counter({
    name: 'otter_device_messages_total',
    help: 'Device messages received, by type and result (accepted, ignored, refused) and refusal reason',
    labelNames: ['type', 'result', 'reason'] as const,
    registers: [this.registry],
  });

  readonly messagesSent = new Counter({
    name: 'otter_messages_sent_total',
    help: 'Messages sent to devices, by type and result (ok, error)',
    labelNames: ['type', 'result'] as const,
    registers: [this.registry],
  });

  readonly dispatchLatency = new Histogram({
    name: 'otter_dispatch_latency_seconds',
    help: 'From a record being handed to the queue to its upgrade message being sent',
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300],
    registers: [this.registry],
  });

  readonly completionLatency = new Histogram({
    name: 'otter_completion_latency_seconds',
    help: 'From the first send to a final state, by final state',
    labelNames: ['state'] as const,
    buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600],
    registers: [this.registry],
  });

  readonly webhookAttempts = new Counter({
    name: 'otter_webhook_attempts_total',
    help: 'Webhook delivery attempts by result (delivered, retry, expired: failed for 24 h, given up)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly webhookEventsDelivered = new Counter({
    name: 'otter_webhook_events_delivered_total',
    help: 'Events in webhook deliveries answered 2xx',
    registers: [this.registry],
  });

  readonly webhookAttemptSeconds = new Histogram({
    name: 'otter_webhook_attempt_seconds',
    help: 'How long a webhook delivery attempt took, to its answer or failure',
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });

  /** Observes the completion latency of records that just became final. */
  observeFinished(changes: Iterable<{ fromState: string; record: { state: string; startedAt: number | null; completedAt: number | null } }>): void {
    for (const { fromState, record } of changes) {
      if (fromState === record.state || !['success', 'failed', 'canceled'].includes(record.state)) continue;
      if (record.startedAt !== null && record.completedAt !== null) {
        this.completionLatency.observe({ state: record.state }, (record.completedAt - record.startedAt) / 1000);
      }
    }
  }

  /** The device-message backlog of this process (received, not yet applied), read at scrape time. */
  observeDeviceMessageBacklog(current: () => number, peak: () => number): void {
    new Gauge({
      name: 'otter_device_message_backlog',
      help: 'Device messages received and not yet applied or refused (capped by DEVICE_MESSAGE_BACKLOG)',
      registers: [this.registry],
      collect() {
        this.set(current());
      },
    });
    new Gauge({
      name: 'otter_device_message_backlog_peak',
      help: 'The highest device-message backlog since the process started',
      registers: [this.registry],
      collect() {
        this.set(peak());
      },
    });
  }

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }
}

const RECORD_STATES = ['waiting', 'processing', 'success', 'failed', 'canceled'] as const;
const QUEUE_STATES = ['waiting', 'active', 'delayed', 'completed', 'failed', 'prioritized'] as const;

/**
 * Gauges read at scrape time: records by state in total and per live task (from the tasks' O(1)
 * counters — never a scan of the records), and the upgrade queue's job counts by state.
 */
export function registerStateGauges(metrics: Metrics, db: Db, queue: UpgradeQueues): void {
  new Gauge({
    name: 'otter_records',
    help: 'Upgrade records by state, over all tasks',
    labelNames: ['state'] as const,
    registers: [metrics.registry],
    async collect() {
      const { rows } = await sql<Record<(typeof RECORD_STATES)[number], number>>`
        SELECT COALESCE(sum(waiting), 0)::int AS waiting, COALESCE(sum(processing), 0)::int AS processing,
               COALESCE(sum(success), 0)::int AS success, COALESCE(sum(failed), 0)::int AS failed,
               COALESCE(sum(canceled), 0)::int AS canceled
        FROM upgrade_tasks`.execute(db);
      for (const state of RECORD_STATES) this.set({ state }, rows[0]?.[state] ?? 0);
    },
  });
  new Gauge({
    name: 'otter_task_records',
    help: 'Upgrade records by state for each task that is not finished or finished within the last hour',
    labelNames: ['task', 'task_name', 'state'] as const,
    registers: [metrics.registry],
    async collect() {
      this.reset();
      const rows = await db
        .selectFrom('upgrade_tasks')
        .select(['id', 'name', ...RECORD_STATES])
        .where((eb) => eb.or([eb('state', 'in', ['created', 'running', 'paused']), eb('updated_at', '>', sql<Date>`now() - interval '1 hour'`)]))
        .limit(200)
        .execute();
      for (const row of rows) for (const state of RECORD_STATES) this.set({ task: row.id, task_name: row.name, state }, row[state]);
    },
  });
  new Gauge({
    name: 'otter_webhook_pending_deliveries',
    help: 'Webhook deliveries not yet answered 2xx (nor given up), over all hooks',
    registers: [metrics.registry],
    async collect() {
      const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM webhook_deliveries WHERE state = 'pending'`.execute(db);
      this.set(rows[0]?.n ?? 0);
    },
  });
  new Gauge({
    name: 'otter_queue_jobs',
    help: 'Jobs in the upgrade queue by BullMQ state',
    labelNames: ['state'] as const,
    registers: [metrics.registry],
    async collect() {
      const counts = await queue.getJobCounts(...QUEUE_STATES);
      for (const state of QUEUE_STATES) this.set({ state }, counts[state] ?? 0);
    },
  });
}
