// Queue shards (core/queue-shards.ts): each shard's hash tag lands in its own share of the cluster's
// slots, so equal-range masters get one shard each; a record's jobs always go to one shard.
import calculateSlot from 'cluster-key-slot';
import { describe, expect, it } from 'vitest';
import { upgradeJobId } from '../../core/jobs.ts';
import { CLUSTER_SLOTS, shardOfJob, shardOfRecord, shardQueueNames, shardSlotRange } from '../../core/queue-shards.ts';

describe('shardQueueNames', () => {
  it('keeps the plain name for one shard on one Redis', () => {
    expect(shardQueueNames(1, false)).toEqual(['upgrades']);
  });

  it.each([1, 2, 3, 5, 8, 16, 64])('puts each of %i shards in its own slot range, every key of a queue in one slot', (shards) => {
    const names = shardQueueNames(shards, true);
    expect(names).toHaveLength(shards);
    expect(new Set(names).size).toBe(shards);
    for (const [i, name] of names.entries()) {
      expect(name).toMatch(new RegExp(`^upgrades-${i}\\{${i}\\.\\d+\\}$`));
      expect(name).not.toContain(':');
      const slot = calculateSlot(`otter:${name}:wait`);
      const { from, to } = shardSlotRange(i, shards);
      expect(slot).toBeGreaterThanOrEqual(from);
      expect(slot).toBeLessThan(to);
      // BullMQ's keys of one queue share the tag, so its scripts never cross slots
      for (const suffix of ['id', 'delayed', 'active', 'meta', 'rec-1-0']) expect(calculateSlot(`otter:${name}:${suffix}`)).toBe(slot);
    }
  });

  it('names the same shards in every process (no state, no cluster needed)', () => {
    expect(shardQueueNames(3, true)).toEqual(shardQueueNames(3, true));
    expect(shardQueueNames(3, false)).toEqual(shardQueueNames(3, true));
  });

  it('covers the slot space with the ranges, without gaps or overlaps', () => {
    for (const shards of [1, 3, 7, 64]) {
      let next = 0;
      for (let i = 0; i < shards; i += 1) {
        const { from, to } = shardSlotRange(i, shards);
        expect(from).toBe(next);
        expect(to).toBeGreaterThan(from);
        next = to;
      }
      expect(next).toBe(CLUSTER_SLOTS);
    }
  });
});

describe('routing', () => {
  it('sends every job of a record to the record\'s shard, and spreads records evenly', () => {
    const perShard = [0, 0, 0];
    for (let recordId = 1; recordId <= 3_000; recordId += 1) {
      const shard = shardOfRecord(recordId, 3);
      perShard[shard]! += 1;
      for (const dispatches of [0, 1, 7]) expect(shardOfJob(upgradeJobId(recordId, dispatches), 3)).toBe(shard);
    }
    expect(perShard).toEqual([1_000, 1_000, 1_000]);
  });

  it('sends a job id of another shape to shard 0, and everything to shard 0 of one', () => {
    expect(shardOfJob('not-a-record-job', 4)).toBe(0);
    expect(shardOfJob(upgradeJobId(12_345, 2), 1)).toBe(0);
  });
});
