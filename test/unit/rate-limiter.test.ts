// The per-device token buckets: a burst, then the rate; keys apart from each other; idle buckets
// dropped and the number of keys capped, whatever ids come in.
import { describe, expect, it } from 'vitest';
import { KeyedRateLimiter } from '../../core/rate-limiter.ts';

/** How many of `n` calls for `key` at time `now` pass. */
function passing(limiter: KeyedRateLimiter, key: string, n: number, now: number): number {
  let passed = 0;
  for (let i = 0; i < n; i += 1) if (limiter.take(key, now)) passed += 1;
  return passed;
}

describe('KeyedRateLimiter', () => {
  it('lets a burst through at once, then nothing until tokens come back', () => {
    const limiter = new KeyedRateLimiter({ ratePerSecond: 20, burst: 40 });
    expect(passing(limiter, 'd1', 100, 1_000)).toBe(40);
    expect(limiter.take('d1', 1_000)).toBe(false);
    // 50 ms at 20/s is one token
    expect(passing(limiter, 'd1', 5, 1_050)).toBe(1);
  });

  it('holds a device to its rate over time, whatever it sends', () => {
    const limiter = new KeyedRateLimiter({ ratePerSecond: 20, burst: 40 });
    let passed = 0;
    // 5,000 messages over 2.5 s: one every 0.5 ms
    for (let i = 0; i < 5_000; i += 1) if (limiter.take('flood', 10_000 + i * 0.5)) passed += 1;
    // the burst, plus 20 a second for 2.5 s (rounding: one either way)
    expect(passed).toBeGreaterThanOrEqual(40 + 49);
    expect(passed).toBeLessThanOrEqual(40 + 51);
  });

  it('never holds more than the burst, however long a device was quiet', () => {
    const limiter = new KeyedRateLimiter({ ratePerSecond: 20, burst: 40 });
    expect(passing(limiter, 'd1', 40, 0)).toBe(40);
    expect(passing(limiter, 'd1', 100, 3_600_000)).toBe(40);
  });

  it('keeps devices apart: one device over its rate does not slow another', () => {
    const limiter = new KeyedRateLimiter({ ratePerSecond: 20, burst: 40 });
    expect(passing(limiter, 'noisy', 1_000, 0)).toBe(40);
    expect(passing(limiter, 'quiet', 4, 0)).toBe(4);
  });

  it('with a rate of 0 lets everything through and tracks nothing', () => {
    const limiter = new KeyedRateLimiter({ ratePerSecond: 0, burst: 1 });
    expect(limiter.enabled).toBe(false);
    expect(passing(limiter, 'd1', 10_000, 0)).toBe(10_000);
    expect(limiter.size).toBe(0);
  });

  it('drops buckets that have filled up again (they are the same as none)', () => {
    const limiter = new KeyedRateLimiter({ ratePerSecond: 20, burst: 40 });
    for (let i = 0; i < 1_000; i += 1) limiter.take(`d${i}`, 0);
    expect(limiter.size).toBe(1_000);
    // not yet full 1 s later: they stay
    for (let i = 0; i < 100; i += 1) limiter.take('active', 1_000);
    expect(limiter.size).toBe(1_001);
    // 2 s later every one of them is full again; each call sweeps two from the front
    for (let i = 0; i < 100; i += 1) limiter.take('active', 2_000);
    expect(limiter.size).toBe(1_001 - 200);
    for (let i = 0; i < 500; i += 1) limiter.take('active', 2_000);
    expect(limiter.size).toBe(1);
  });

  it('keeps at most maxKeys buckets, even for a flood of distinct ids at one instant', () => {
    const limiter = new KeyedRateLimiter({ ratePerSecond: 20, burst: 40, maxKeys: 500 });
    for (let i = 0; i < 100_000; i += 1) limiter.take(`fake-${i}`, 0);
    expect(limiter.size).toBe(500);
    // a device that keeps sending keeps its bucket (least recently used ones go first)
    const small = new KeyedRateLimiter({ ratePerSecond: 20, burst: 2, maxKeys: 3 });
    expect(passing(small, 'flooder', 5, 0)).toBe(2);
    small.take('a', 0);
    small.take('flooder', 0);
    small.take('b', 0);
    expect(small.take('flooder', 0)).toBe(false);
  });
});
