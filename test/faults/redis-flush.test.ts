// Redis loses everything (FLUSHALL) in the middle of a rollout: the reconciler rebuilds the jobs
// from Postgres, and the rollout completes with every record final.
import { afterAll, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { FaultRig } from '../helpers/fault-rig.ts';
import { startRedis, type PrivateRedis } from '../helpers/redis-server.ts';
import { allFinal, waitForTask } from '../helpers/rollout.ts';

let rig: FaultRig | undefined;
let redis: PrivateRedis | undefined;
afterAll(async () => {
  await rig?.stop();
  await redis?.stop();
});

it('rebuilds the work after FLUSHALL and completes the rollout', async () => {
  redis = await startRedis();
  rig = await FaultRig.start({ devices: 2_000, workers: 2, env: { REDIS_URL: redis.url }, task: { timeoutSeconds: 15 }, fleet: { stepMs: 300 } });
  await waitForTask(rig.t.app, rig.t.auth, rig.taskId, (x) => x.stats.success >= 300 && x.stats.waiting > 0, 60_000);

  const client = new Redis(redis.url);
  const before = await client.dbsize();
  await client.flushall();
  console.log(`FLUSHALL dropped ${before} keys`);
  client.disconnect();

  const task = await waitForTask(rig.t.app, rig.t.auth, rig.taskId, (x) => allFinal(x) && x.state === 'completed', 180_000);
  expect(task.stats.total).toBe(2_000);
  expect(task.stats.success).toBe(2_000);
  const outcome = await rig.outcome();
  for (const record of outcome) {
    expect(record.state).toBe('success');
    expect(record.received, record.deviceId).toBeLessThanOrEqual(record.attempts);
  }
  console.log(`after FLUSHALL: ${outcome.filter((r) => r.attempts > 1).length} records needed another attempt`);
});
