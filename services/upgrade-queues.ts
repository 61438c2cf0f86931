// The upgrade queues: every task's per-device jobs, in QUEUE_SHARDS BullMQ queues (one by default).
// A record's jobs always go to the same shard (core/queue-shards.ts), so each call below is routed
// by job id, and counts add up over the shards. Jobs never retry by BullMQ's own means (Otter
// counts attempts in Postgres); finished jobs are kept for a while so an operator can see them in
// bull-board, then trimmed to bound Redis memory.
import { Queue, type JobsOptions, type JobType } from 'bullmq';
import type { UpgradeJob, UpgradeJobData } from '../core/jobs.ts';
import { shardOfJob, shardQueueNames } from '../core/queue-shards.ts';
import type { RedisClient } from './redis-client.ts';
import { updateProgressMany } from './job-progress.ts';

export const UPGRADE_JOB_OPTIONS: JobsOptions = {
  attempts: 1,
  removeOnComplete: { age: 24 * 3600, count: 5_000 },
  removeOnFail: { age: 7 * 24 * 3600, count: 50_000 },
};

export type UpgradeQueue = Queue<UpgradeJobData>;

export class UpgradeQueues {
  /** One BullMQ queue per shard, in shard order. */
  readonly shards: readonly UpgradeQueue[];
  private readonly connection: RedisClient;

  /** `hashTagged`: the names carry hash tags (always on a Redis Cluster). */
  constructor(connection: RedisClient, prefix: string, shards = 1, hashTagged = false) {
    this.connection = connection;
    this.shards = shardQueueNames(shards, hashTagged).map(
      (name) => new Queue<UpgradeJobData>(name, { connection, prefix, defaultJobOptions: UPGRADE_JOB_OPTIONS }),
    );
  }

  /** The queue that holds the job `jobId`. */
  shardOf(jobId: string): UpgradeQueue {
    return this.shards[shardOfJob(jobId, this.shards.length)]!;
  }

  async add(job: UpgradeJob): Promise<void> {
    await this.shardOf(job.opts.jobId).add(job.name, job.data, job.opts);
  }

  /** Adds jobs in one call per shard (the shards in parallel). */
  async addBulk(jobs: readonly UpgradeJob[]): Promise<unknown> {
    const byShard = this.groupByShard(jobs, (job) => job.opts.jobId);
    return Promise.all([...byShard].map(([queue, group]) => queue.addBulk(group)));
  }

  /** Runs a parked job now; rejects when it is not parked (running, waiting or gone). */
  async promote(jobId: string): Promise<void> {
    await this.shardOf(jobId).backend.promote(jobId);
  }

  /** Sets the progress of the jobs that still exist: one script call per shard (services/job-progress.ts). */
  async updateProgress(entries: readonly (readonly [string, number])[]): Promise<void> {
    const byShard = this.groupByShard(entries, ([jobId]) => jobId);
    await Promise.all([...byShard].map(([queue, group]) =>
      updateProgressMany(this.connection, { events: queue.keys.events!, meta: queue.keys.meta!, job: (jobId) => queue.toKey(jobId) }, group)));
  }

  async remove(jobId: string): Promise<number> {
    return this.shardOf(jobId).remove(jobId);
  }

  async getJobState(jobId: string): Promise<string> {
    return this.shardOf(jobId).getJobState(jobId);
  }

  /** Whether each job exists: one pipeline per shard (a cluster pipeline must stay in one slot). */
  async exist(jobIds: readonly string[]): Promise<boolean[]> {
    const found = new Map<string, boolean>();
    const byShard = this.groupByShard(jobIds, (jobId) => jobId);
    await Promise.all(
      [...byShard].map(async ([queue, group]) => {
        const pipeline = this.connection.pipeline();
        for (const jobId of group) pipeline.exists(queue.toKey(jobId));
        const answers = (await pipeline.exec()) ?? [];
        group.forEach((jobId, i) => found.set(jobId, answers[i]?.[1] === 1));
      }),
    );
    return jobIds.map((jobId) => found.get(jobId) ?? false);
  }

  async getWaitingCount(): Promise<number> {
    const counts = await Promise.all(this.shards.map((queue) => queue.getWaitingCount()));
    return counts.reduce((sum, count) => sum + count, 0);
  }

  /** Job counts by state, summed over the shards. */
  async getJobCounts(...states: JobType[]): Promise<Record<string, number>> {
    const total: Record<string, number> = {};
    for (const counts of await Promise.all(this.shards.map((queue) => queue.getJobCounts(...states)))) {
      for (const [state, count] of Object.entries(counts)) total[state] = (total[state] ?? 0) + count;
    }
    return total;
  }

  async close(): Promise<void> {
    await Promise.all(this.shards.map((queue) => queue.close()));
  }

  private groupByShard<T>(items: readonly T[], jobIdOf: (item: T) => string): Map<UpgradeQueue, T[]> {
    const groups = new Map<UpgradeQueue, T[]>();
    for (const item of items) {
      const queue = this.shardOf(jobIdOf(item));
      const group = groups.get(queue);
      if (group) group.push(item);
      else groups.set(queue, [item]);
    }
    return groups;
  }
}
