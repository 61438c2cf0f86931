// Many jobs' progress in one Redis call. BullMQ's Job.updateProgress is one script call per job;
// the job waker mirrors the progress of every device that reported in the last quarter second, so
// that was one call per device and report — a share of the worker's Redis commands for what
// bull-board only reads. This script does what BullMQ's updateProgress does (the `progress` field
// of a job that still exists, and a `progress` event in the queue's event stream) for a whole
// batch of one queue's jobs. The keys of one queue share a slot on a Redis Cluster (their hash tag).
import type { RedisClient } from './redis-client.ts';

/** KEYS: the queue's events and meta keys, then the jobs' keys. ARGV: the job ids, then their progress. */
const UPDATE_PROGRESS_MANY = `
local maxEvents = redis.call("HGET", KEYS[2], "opts.maxLenEvents")
if not maxEvents then
  maxEvents = 10000
  redis.call("HSET", KEYS[2], "opts.maxLenEvents", maxEvents)
end
local n = #KEYS - 2
local written = 0
for i = 1, n do
  local jobKey = KEYS[i + 2]
  if redis.call("EXISTS", jobKey) == 1 then
    redis.call("HSET", jobKey, "progress", ARGV[n + i])
    redis.call("XADD", KEYS[1], "MAXLEN", "~", maxEvents, "*", "event", "progress", "jobId", ARGV[i], "data", ARGV[n + i])
    written = written + 1
  end
end
return written`;

const COMMAND = 'otterUpdateProgressMany';
/** Jobs per call: a bounded script run, so Redis is never busy with one for long. */
export const PROGRESS_CHUNK = 500;

type WithCommand = RedisClient & { [COMMAND]: (...args: (string | number)[]) => Promise<number> };

/** The queue's keys the script needs, as BullMQ names them. */
export interface QueueKeys {
  events: string;
  meta: string;
  /** The key of a job's hash. */
  job: (jobId: string) => string;
}

/**
 * Sets the progress of each job of `entries` that still exists (a job finished and removed is
 * skipped, as BullMQ does); returns how many were written. All jobs must be of the one queue.
 */
export async function updateProgressMany(connection: RedisClient, keys: QueueKeys, entries: readonly (readonly [string, number])[]): Promise<number> {
  const client = connection as WithCommand;
  if (typeof client[COMMAND] !== 'function') connection.defineCommand(COMMAND, { lua: UPDATE_PROGRESS_MANY });
  let written = 0;
  for (let i = 0; i < entries.length; i += PROGRESS_CHUNK) {
    const chunk = entries.slice(i, i + PROGRESS_CHUNK);
    const jobKeys = chunk.map(([jobId]) => keys.job(jobId));
    written += await client[COMMAND](
      jobKeys.length + 2,
      keys.events, keys.meta, ...jobKeys,
      ...chunk.map(([jobId]) => jobId), ...chunk.map(([, progress]) => JSON.stringify(progress)),
    );
  }
  return written;
}
