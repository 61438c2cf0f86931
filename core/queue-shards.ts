// How device jobs are spread over QUEUE_SHARDS BullMQ queues (docs/scaling.md#redis-cluster).
// A BullMQ queue lives in one Redis Cluster slot, so each shard's name carries its own hash tag.
// The tag is chosen so that shard i of n falls in the i-th n-th of the slot space: a cluster made
// with `redis-cli --cluster create` splits slots in equal ranges, so the shards land on different
// masters. Every process derives the same names from QUEUE_SHARDS alone, with no cluster at hand.
import calculateSlot from 'cluster-key-slot';
import { UPGRADE_QUEUE, parseUpgradeJobId } from './jobs.ts';

export const CLUSTER_SLOTS = 16_384;

/** The slot range [from, to) shard `index` of `shards` aims for. */
export function shardSlotRange(index: number, shards: number): { from: number; to: number } {
  return { from: Math.floor((index * CLUSTER_SLOTS) / shards), to: Math.floor(((index + 1) * CLUSTER_SLOTS) / shards) };
}

/**
 * The queue names of `shards` shards. One shard without a cluster keeps the plain name (the keys
 * Otter has always used); otherwise each name is `upgrades-<i>{<i>.<k>}`, `k` the first suffix
 * whose slot falls in the shard's range.
 */
export function shardQueueNames(shards: number, hashTagged: boolean): string[] {
  if (shards === 1 && !hashTagged) return [UPGRADE_QUEUE];
  return Array.from({ length: shards }, (_, index) => {
    const { from, to } = shardSlotRange(index, shards);
    for (let k = 0; ; k += 1) {
      const tag = `${index}.${k}`;
      const slot = calculateSlot(tag);
      if (slot >= from && slot < to) return `${UPGRADE_QUEUE}-${index}{${tag}}`;
    }
  });
}

/** The shard that holds a record's jobs: records are spread evenly by id. */
export function shardOfRecord(recordId: number, shards: number): number {
  return recordId % shards;
}

/** The shard of a job id (`rec-<record>-<n>`); an id of another shape goes to shard 0. */
export function shardOfJob(jobId: string, shards: number): number {
  const parsed = parseUpgradeJobId(jobId);
  return parsed ? shardOfRecord(parsed.recordId, shards) : 0;
}
