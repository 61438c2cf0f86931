// Otter on a 3-master Redis Cluster with QUEUE_SHARDS=3 (docs/scaling.md#redis-cluster): 5,000
// devices, some silent (so retries run), a worker killed with -9 mid-rollout and replaced. Every
// record ends final, each shard's keys live on a master of their own, every shard did work, and
// bull-board lists every shard.
import calculateSlot from 'cluster-key-slot';
import { Redis } from 'ioredis';
import { afterAll, expect, it } from 'vitest';
import { shardQueueNames } from '../../core/queue-shards.ts';
import { startRedisCluster, type LocalRedisCluster } from '../../tools/redis-cluster.ts';
import { FaultRig } from '../helpers/fault-rig.ts';
import { allFinal, waitForTask } from '../helpers/rollout.ts';

const DEVICES = 5_000;
const SHARDS = 3;

let cluster: LocalRedisCluster | undefined;
let rig: FaultRig | undefined;
afterAll(async () => {
  await rig?.stop();
  await cluster?.stop();
});

/** The shard queue names whose keys a master holds (scanned on that master alone). */
async function shardsOnMaster(port: number, prefix: string): Promise<Set<string>> {
  const client = new Redis({ port, host: '127.0.0.1' });
  const names = new Set<string>();
  try {
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1_000);
      cursor = next;
      for (const key of keys) {
        const name = key.slice(prefix.length + 1).split(':')[0]!;
        if (name.startsWith('upgrades')) names.add(name);
      }
    } while (cursor !== '0');
  } finally {
    client.disconnect();
  }
  return names;
}

it('rolls out 5,000 devices over 3 queue shards on a 3-master cluster, through a worker kill', async () => {
  cluster = await startRedisCluster(3);
  rig = await FaultRig.start({
    devices: DEVICES,
    workers: 2,
    env: { REDIS_CLUSTER_NODES: cluster.nodes, QUEUE_SHARDS: String(SHARDS) },
    task: { timeoutSeconds: 6, retry: { maxAttempts: 3, backoffSeconds: 1, on: ['timeout', 'send_error'] } },
    fleet: { silentRate: 0.01, failRate: 0.01, seed: 'redis-cluster', stepMs: 100 },
  });
  const { queuePrefix } = rig.t.config;
  const names = shardQueueNames(SHARDS, true);

  await waitForTask(rig.t.app, rig.t.auth, rig.taskId, (x) => x.stats.success >= 1_000, 120_000);
  const victim = rig.workers.shift()!;
  victim.child.kill('SIGKILL');
  expect(await victim.exited).toBe('SIGKILL');
  await rig.addWorker();

  const task = await waitForTask(rig.t.app, rig.t.auth, rig.taskId, (x) => allFinal(x) && x.state === 'completed', 180_000);
  const outcome = await rig.outcome();
  expect(outcome).toHaveLength(DEVICES);
  expect(outcome.filter((r) => r.state !== 'success' && r.state !== 'failed')).toEqual([]);
  expect(task.stats.success).toBe(rig.fleet.fateCount('success'));
  // silent devices were tried three times (the retries ran through the shards), then failed
  const silent = outcome.filter((r) => rig!.fleet.devices.get(r.deviceId)!.fate === 'silent');
  expect(silent.length).toBeGreaterThan(10);
  for (const record of silent) expect(record).toMatchObject({ state: 'failed', attempts: 3 });
  for (const record of outcome) expect(record.received, record.deviceId).toBeLessThanOrEqual(record.attempts);

  // each shard's keys on a master of its own, and nowhere else
  const masters = await Promise.all(names.map((name) => cluster!.masterOfSlot(calculateSlot(`${queuePrefix}:${name}:id`))));
  expect(new Set(masters).size).toBe(SHARDS);
  for (const [i, port] of masters.entries()) expect([...(await shardsOnMaster(port, queuePrefix))]).toEqual([names[i]]);

  // every shard did its share of the work, and bull-board lists every shard
  const counts = await Promise.all(rig.t.otter.queue.shards.map((shard) => shard.getJobCounts('completed', 'failed')));
  for (const count of counts) expect(count.completed! + count.failed!).toBeGreaterThan(DEVICES / SHARDS / 2);
  const board = await rig.t.app.inject({ url: '/admin/queues/api/queues?page=1&jobsPerPage=10', headers: rig.t.auth });
  expect(board.statusCode).toBe(200);
  expect(board.json().queues.map((queue: { name: string }) => queue.name).sort()).toEqual([...names].sort());
});
