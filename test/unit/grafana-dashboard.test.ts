// The Grafana dashboard is valid JSON and every query in it names only metrics Otter exports.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Metrics, registerStateGauges } from '../../services/metrics.ts';

interface Panel {
  title: string;
  targets?: Array<{ expr: string }>;
}

const dashboard = JSON.parse(readFileSync(new URL('../../dashboards/grafana-otter.json', import.meta.url), 'utf8')) as { title: string; panels: Panel[] };

/** The metric names an expression reads: identifiers followed by `{`, `[`, `)` or the end, minus PromQL words. */
function metricNames(expr: string): string[] {
  const words = new Set(['sum', 'max', 'min', 'avg', 'by', 'rate', 'histogram_quantile', 'clamp_min', 'le', 'state', 'type', 'result', 'reason', 'task_name', 'instance', 'without', 'on']);
  const withoutLabels = expr.replace(/\{[^}]*\}/g, '{}').replace(/\[[^\]]*\]/g, '[]').replace(/"[^"]*"/g, '');
  return [...withoutLabels.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)].map((m) => m[0]).filter((name) => !words.has(name) && !/^\d/.test(name));
}

describe('dashboards/grafana-otter.json', () => {
  it('is a dashboard with panels that all have queries', () => {
    expect(dashboard.title).toMatch(/Otter/);
    expect(dashboard.panels.length).toBeGreaterThanOrEqual(8);
    for (const panel of dashboard.panels) expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
  });

  it('queries only metrics the service exports', async () => {
    const metrics = new Metrics();
    registerStateGauges(metrics, {} as never, {} as never);
    const exported = new Set<string>();
    for (const metric of metrics.registry.getMetricsAsArray()) {
      const { name, type } = metric as unknown as { name: string; type: string };
      exported.add(name);
      if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) exported.add(name + suffix);
    }
    const used = dashboard.panels.flatMap((panel) => (panel.targets ?? []).flatMap((target) => metricNames(target.expr)));
    expect(used.length).toBeGreaterThan(10);
    const unknown = [...new Set(used)].filter((name) => !exported.has(name));
    expect(unknown).toEqual([]);
    // the dashboard covers the contract's families
    for (const family of ['otter_records', 'otter_task_records', 'otter_device_messages_total', 'otter_messages_sent_total', 'otter_dispatch_latency_seconds_bucket', 'otter_completion_latency_seconds_bucket', 'otter_queue_jobs']) {
      expect(used, family).toContain(family);
    }
  });
});
