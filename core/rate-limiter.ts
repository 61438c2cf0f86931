// Token buckets per key (a device id), in memory: `ratePerSecond` tokens a second up to `burst`,
// one per message. O(1) per call and bounded memory: buckets are kept in least-recently-used
// order, a bucket that has refilled completely is the same as none and is dropped, and beyond
// `maxKeys` the least recently used one goes (which only ever lets its key through sooner).

export interface RateLimiterOptions {
  /** Tokens added per second; 0 turns the limit off. */
  ratePerSecond: number;
  /** Most tokens a bucket holds: how many messages may come at once after a quiet spell. */
  burst: number;
  /** Most keys tracked at once. */
  maxKeys?: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export const DEFAULT_MAX_KEYS = 100_000;
/** Idle buckets dropped per call, at most: spreads the sweep over calls. */
const SWEEP_PER_CALL = 2;

export class KeyedRateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly perMs: number;
  private readonly burst: number;
  private readonly maxKeys: number;
  /** How long an untouched bucket takes to fill up again. */
  private readonly refillMs: number;

  constructor(options: RateLimiterOptions) {
    this.perMs = Math.max(0, options.ratePerSecond) / 1000;
    this.burst = Math.max(1, options.burst);
    this.maxKeys = Math.max(1, options.maxKeys ?? DEFAULT_MAX_KEYS);
    this.refillMs = this.perMs > 0 ? this.burst / this.perMs : 0;
  }

  get enabled(): boolean {
    return this.perMs > 0;
  }

  /** Keys currently tracked. */
  get size(): number {
    return this.buckets.size;
  }

  /** Takes a token for `key`: true if it had one (the message may pass), false if it is over its rate. */
  take(key: string, now = Date.now()): boolean {
    if (this.perMs === 0) return true;
    let bucket = this.buckets.get(key);
    if (bucket) {
      bucket.tokens = Math.min(this.burst, bucket.tokens + (now - bucket.at) * this.perMs);
      bucket.at = now;
      // to the back: the map's order is least recently used first
      this.buckets.delete(key);
    } else {
      bucket = { tokens: this.burst, at: now };
    }
    this.buckets.set(key, bucket);
    const allowed = bucket.tokens >= 1;
    if (allowed) bucket.tokens -= 1;
    this.sweep(now);
    return allowed;
  }

  /** Drops idle buckets from the front, and the least recently used beyond maxKeys. */
  private sweep(now: number): void {
    let dropped = 0;
    for (const [key, bucket] of this.buckets) {
      const over = this.buckets.size > this.maxKeys;
      if (!over && (dropped >= SWEEP_PER_CALL || now - bucket.at < this.refillMs)) break;
      this.buckets.delete(key);
      dropped += 1;
    }
  }
}
