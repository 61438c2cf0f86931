// The job waker's progress mirror (services/job-progress.ts): many jobs' progress in one script
// call, as BullMQ's own updateProgress sets it — the job's progress and a `progress` event — and
// nothing for a job that is gone.
import { randomUUID } from 'node:crypto';
import { Job, Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedis, type RedisClient } from '../../services/redis-client.ts';
import { PROGRESS_CHUNK, updateProgressMany } from '../../services/job-progress.ts';
import { UpgradeQueues } from '../../services/upgrade-queues.ts';
import { shardOfJob } from '../../core/queue-shards.ts';
import { TEST_REDIS_URL } from '../helpers/env.ts';
import { deleteQueueKeys } from '../helpers/queue-keys.ts';

const prefix = `test-progress-${randomUUID().slice(0, 8)}`;
let connection: RedisClient;
let queue: Queue;

beforeAll(async () => {
  connection = createRedis({ redisUrl: TEST_REDIS_URL, redisClusterNodes: undefined });
  queue = new Queue('progress', { connection, prefix });
});

afterAll(async () => {
  await queue?.close();
  connection?.disconnect();
  await deleteQueueKeys(TEST_REDIS_URL, prefix);
});

const keysOf = (q: Queue) => ({ events: q.keys.events!, meta: q.keys.meta!, job: (jobId: string) => q.toKey(jobId) });

describe('updateProgressMany', () => {
  it('sets each existing job\'s progress and emits its event, in chunks, and skips jobs that are gone', async () => {
    const count = PROGRESS_CHUNK + 20;
    const ids = Array.from({ length: count }, (_, i) => `job-${i}`);
    await queue.addBulk(ids.map((jobId) => ({ name: jobId, data: {}, opts: { jobId, delay: 60_000 } })));
    const entries = ids.map((jobId, i) => [jobId, i % 101] as const);
    const written = await updateProgressMany(connection, keysOf(queue), [...entries, ['gone-1', 50], ['gone-2', 70]]);
    expect(written).toBe(count);

    for (const i of [0, 1, PROGRESS_CHUNK - 1, PROGRESS_CHUNK, count - 1]) {
      expect((await Job.fromId(queue, ids[i]!))!.progress).toBe(i % 101);
    }
    // a job that is gone is not brought back as a bare hash
    expect(await connection.exists(queue.toKey('gone-1'), queue.toKey('gone-2'))).toBe(0);

    const events = await connection.xrange(queue.keys.events!, '-', '+');
    const progress = events.map(([, fields]) => Object.fromEntries(chunkPairs(fields))).filter((e) => e.event === 'progress');
    expect(progress).toHaveLength(count);
    expect(progress[PROGRESS_CHUNK + 3]).toEqual({ event: 'progress', jobId: ids[PROGRESS_CHUNK + 3], data: String((PROGRESS_CHUNK + 3) % 101) });
  });

  it('writes each shard\'s jobs in that shard (UpgradeQueues.updateProgress)', async () => {
    const queues = new UpgradeQueues(connection, prefix, 3, true);
    try {
      const jobIds = Array.from({ length: 30 }, (_, i) => `rec-${i + 1}-1`);
      for (const [i, jobId] of jobIds.entries()) await queues.shardOf(jobId).add(jobId, { recordId: i + 1, taskId: 't', deviceId: jobId }, { jobId, delay: 60_000 });
      await queues.updateProgress(jobIds.map((jobId, i) => [jobId, i]));
      const shardsUsed = new Set(jobIds.map((jobId) => shardOfJob(jobId, 3)));
      expect(shardsUsed.size).toBe(3);
      for (const [i, jobId] of jobIds.entries()) {
        const job = await Job.fromId(queues.shardOf(jobId), jobId);
        expect(job!.progress, jobId).toBe(i);
      }
    } finally {
      await queues.close();
    }
  });
});

function chunkPairs(fields: string[]): [string, string][] {
  const pairs: [string, string][] = [];
  for (let i = 0; i < fields.length; i += 2) pairs.push([fields[i]!, fields[i + 1]!]);
  return pairs;
}
