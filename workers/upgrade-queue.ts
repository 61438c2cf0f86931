// The upgrade queue: one BullMQ queue for every task's per-device jobs. Jobs never retry by
// BullMQ's own means (Otter counts attempts in Postgres); finished jobs are kept for a while so an
// operator can see them in bull-board, then trimmed to bound Redis memory.
import { Queue, type JobsOptions } from 'bullmq';
import { Redis } from 'ioredis';
import { UPGRADE_QUEUE, type UpgradeJobData } from '../core/jobs.ts';

export const UPGRADE_JOB_OPTIONS: JobsOptions = {
  attempts: 1,
  removeOnComplete: { age: 24 * 3600, count: 5_000 },
  removeOnFail: { age: 7 * 24 * 3600, count: 50_000 },
};

/** A connection for BullMQ and Otter's own commands; commands issued in one tick share a write. */
export function createRedis(url: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true, enableAutoPipelining: true });
}

export function createUpgradeQueue(connection: Redis, prefix: string): Queue<UpgradeJobData> {
  return new Queue<UpgradeJobData>(UPGRADE_QUEUE, { connection, prefix, defaultJobOptions: UPGRADE_JOB_OPTIONS });
}
