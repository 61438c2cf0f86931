// Prometheus metrics of one process (prom-client), in a registry of its own so several apps in one
// test process never share counters. Gauges that read Postgres or Redis are collected at scrape
// time from O(1) sources (task counters, queue counts), never from a table scan.
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

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

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }
}
