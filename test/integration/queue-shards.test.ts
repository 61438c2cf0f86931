// QUEUE_SHARDS=3 on one Redis (docs/scaling.md#redis-cluster): a push rollout with retries spreads
// its jobs over the three shard queues by record id, every record ends final, and a job Redis lost
// is rebuilt by the reconciler in its record's own shard.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { upgradeJobId } from '../../core/jobs.ts';
import { shardOfRecord, shardQueueNames } from '../../core/queue-shards.ts';
import { Fleet, fleetDeviceIds } from '../../tools/fleet.ts';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { allFinal, createFirmware, createTask, registerDevices, waitForTask } from '../helpers/rollout.ts';

const PRODUCT = 'sharded';
const DEVICES = fleetDeviceIds(PRODUCT, 300);
const SHARDS = 3;

describe('queue shards on one Redis', () => {
  let broker: TestBroker;
  let t: TestApp;
  let fleet: Fleet;

  beforeAll(async () => {
    broker = await startBroker();
    t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url, QUEUE_SHARDS: String(SHARDS), WORKER_CONCURRENCY: '30' });
    fleet = new Fleet({ mqttUrl: broker.url, productId: PRODUCT, deviceIds: DEVICES, silentRate: 0.03, progressSteps: 3, stepMs: 20, seed: PRODUCT, reportOnStart: false });
    await fleet.start();
    await registerDevices(t.app, t.auth, PRODUCT, DEVICES);
  });

  afterAll(async () => {
    await fleet?.stop();
    await t?.close();
    await broker?.stop();
  });

  it('spreads a rollout\'s jobs over the shards by record id; retries and all, every record ends final', async () => {
    expect(t.otter.queue.shards.map((shard) => shard.name)).toEqual(shardQueueNames(SHARDS, true));
    const firmwareId = await createFirmware(t.app, t.auth, PRODUCT);
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 2, retry: { maxAttempts: 2, backoffSeconds: 1, on: ['timeout'] } });
    await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: true } });
    const task = await waitForTask(t.app, t.auth, taskId, (x) => allFinal(x) && x.state === 'completed', 60_000);
    const silent = fleet.fateCount('silent');
    expect(silent).toBeGreaterThan(0);
    expect(task.stats).toMatchObject({ total: 300, success: 300 - silent, failed: silent });

    // each record's jobs sit in its own shard, and in no other
    const records = await t.database.db.selectFrom('upgrade_records').select(['id', 'dispatches']).where('task_id', '=', taskId).execute();
    for (const [index, shard] of t.otter.queue.shards.entries()) {
      const jobs = await shard.getJobs(['completed', 'failed', 'delayed', 'waiting']);
      const recordIds = new Set(jobs.map((job) => job.data.recordId));
      const own = records.filter((record) => shardOfRecord(record.id, SHARDS) === index);
      expect(own.length).toBeGreaterThan(50);
      for (const record of own) expect(recordIds.has(record.id), `record ${record.id} in shard ${index}`).toBe(true);
      for (const recordId of recordIds) expect(shardOfRecord(recordId, SHARDS)).toBe(index);
    }
  });

  it('rebuilds a lost job in its record\'s own shard', async () => {
    const ids = DEVICES.slice(0, 6);
    const firmwareId = await createFirmware(t.app, t.auth, PRODUCT, '3.0.0', 3);
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 600 });
    // released but never heard from: silent devices keep their records processing
    for (const id of ids) fleet.devices.get(id)!.fate = 'silent';
    await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { deviceIds: ids, push: true } });
    await waitForTask(t.app, t.auth, taskId, (x) => x.stats.processing === ids.length, 20_000);
    const records = await t.database.db.selectFrom('upgrade_records').select(['id', 'dispatches']).where('task_id', '=', taskId).execute();
    const jobIds = records.map((record) => upgradeJobId(record.id, record.dispatches));
    expect(await t.otter.queue.exist(jobIds)).toEqual(jobIds.map(() => true));
    for (const jobId of jobIds) expect(await t.otter.queue.remove(jobId)).toBe(1);
    expect(await t.otter.queue.exist(jobIds)).toEqual(jobIds.map(() => false));

    const report = await t.otter.workers!.reconciler.runOnce();
    expect(report.rebuilt).toBeGreaterThanOrEqual(ids.length);
    for (const record of records) {
      const jobId = upgradeJobId(record.id, record.dispatches);
      const shard = t.otter.queue.shards[shardOfRecord(record.id, SHARDS)]!;
      expect(await shard.getJob(jobId), jobId).toBeDefined();
    }
  });
});
