// What operators watch: /metrics moves with a rollout and agrees with the task's stats at the end;
// /health/ready answers 503 naming Redis while it is down and 200 once it is back.
import { afterAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { startRedis, type PrivateRedis } from '../helpers/redis-server.ts';
import { Fleet, fleetDeviceIds } from '../../tools/fleet.ts';
import { allFinal, createFirmware, createTask, registerDevices, taskStats } from '../helpers/rollout.ts';

function sample(text: string, name: string, labels: Record<string, string>): number {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (wanted.length === 0 && line.startsWith(`${name} `)) return Number(line.slice(name.length + 1));
    if (!line.startsWith(`${name}{`)) continue;
    const labelText = line.slice(name.length + 1, line.lastIndexOf('}'));
    if (wanted.every((pair) => labelText.split(',').includes(pair))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

describe('metrics during a rollout', () => {
  let broker: TestBroker;
  let t: TestApp;
  let fleet: Fleet;

  afterAll(async () => {
    await fleet?.stop();
    await t?.close();
    await broker?.stop();
  });

  it('show record states moving and message counters rising, and agree with the stats at the end', async () => {
    broker = await startBroker();
    t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url }, { defaultMetrics: true });
    const ids = fleetDeviceIds('sensor', 1_000);
    await registerDevices(t.app, t.auth, 'sensor', ids);
    fleet = new Fleet({ mqttUrl: broker.url, productId: 'sensor', deviceIds: ids, progressSteps: 3, stepMs: 300, reportOnStart: false, failRate: 0.05, seed: 'metrics' });
    await fleet.start();
    const firmwareId = await createFirmware(t.app, t.auth, 'sensor');
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 60, rollout: { maxInFlight: 300 } });
    await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: true } });

    const successSeen: number[] = [];
    const progressSeen: number[] = [];
    const sentSeen: number[] = [];
    let stats = await taskStats(t.app, t.auth, taskId);
    const deadline = Date.now() + 90_000;
    while (!(allFinal(stats) && stats.state === 'completed')) {
      const text = (await t.app.inject({ url: '/metrics', headers: t.auth })).body;
      successSeen.push(sample(text, 'otter_task_records', { task: taskId, state: 'success' }));
      progressSeen.push(sample(text, 'otter_device_messages_total', { type: 'UPGRADE_FIRMWARE_PROGRESS', result: 'accepted' }));
      sentSeen.push(sample(text, 'otter_messages_sent_total', { type: 'UPGRADE_FIRMWARE', result: 'ok' }));
      if (Date.now() > deadline) throw new Error('rollout did not finish');
      await new Promise((resolve) => setTimeout(resolve, 200));
      stats = await taskStats(t.app, t.auth, taskId);
    }
    // the values moved through intermediate states, never backwards
    const distinct = (values: number[]) => new Set(values).size;
    expect(distinct(successSeen)).toBeGreaterThan(3);
    expect(distinct(progressSeen)).toBeGreaterThan(3);
    for (const series of [successSeen, progressSeen, sentSeen]) {
      for (let i = 1; i < series.length; i += 1) expect(series[i]).toBeGreaterThanOrEqual(series[i - 1]!);
    }

    const text = (await t.app.inject({ url: '/metrics', headers: t.auth })).body;
    for (const state of ['waiting', 'processing', 'success', 'failed', 'canceled'] as const) {
      expect(sample(text, 'otter_task_records', { task: taskId, state }), state).toBe(stats.stats[state]);
      expect(sample(text, 'otter_records', { state }), state).toBe(stats.stats[state]);
    }
    expect(stats.stats.failed).toBe(fleet.fateCount('fail'));
    expect(sample(text, 'otter_messages_sent_total', { type: 'UPGRADE_FIRMWARE', result: 'ok' })).toBe(1_000);
    // one final report per device: a success or a failure
    expect(sample(text, 'otter_completion_latency_seconds_count', { state: 'success' })).toBe(stats.stats.success);
    expect(sample(text, 'otter_dispatch_latency_seconds_count', {})).toBe(1_000);
    expect(text).toContain('process_resident_memory_bytes');
    expect(sample(text, 'otter_queue_jobs', { state: 'completed' })).toBeGreaterThan(0);
  }, 150_000);
});

describe('/health/ready', () => {
  let redis: PrivateRedis | undefined;
  let t: TestApp | undefined;

  afterAll(async () => {
    await t?.close().catch(() => {});
    await redis?.stop();
  });

  it('answers 503 naming Redis while it is down, and 200 once it is back', async () => {
    redis = await startRedis();
    t = await buildTestApp({ REDIS_URL: redis.url });
    const ready = await t.app.inject({ url: '/health/ready' });
    expect(ready.statusCode).toBe(200);
    expect(ready.json().checks).toMatchObject({ postgres: 'ok', redis: 'ok' });

    await redis.stop();
    const down = await t.app.inject({ url: '/health/ready' });
    expect(down.statusCode).toBe(503);
    expect(down.json().checks.redis).toMatch(/^down/);
    expect(down.json().checks.postgres).toBe('ok');
    expect(down.json().message).toMatch(/redis/);
    expect((await t.app.inject({ url: '/health/live' })).statusCode).toBe(200);

    redis = await startRedis(redis.port);
    const deadline = Date.now() + 15_000;
    let back = await t.app.inject({ url: '/health/ready' });
    while (back.statusCode !== 200 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      back = await t.app.inject({ url: '/health/ready' });
    }
    expect(back.statusCode).toBe(200);
  }, 60_000);
});
