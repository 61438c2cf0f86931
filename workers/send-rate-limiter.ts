// rollout.maxPerMinute, enforced across every worker process: a sliding log of each task's sends
// in Redis, checked and appended atomically by one Lua script. A send is allowed only while fewer
// than the limit happened in the window; otherwise the caller learns how long to wait.
import type { RedisClient } from '../services/redis-client.ts';

// A little longer than a minute, so that the limit holds for any 60 s window of the recorded send
// times even though a send is recorded a few milliseconds after its slot was taken.
export const RATE_WINDOW_MS = 61_000;

const ACQUIRE = `
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local member = ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now, member .. '@' .. now)
  redis.call('PEXPIRE', key, window)
  return 0
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
`;

const AVAILABLE = `
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
return math.max(0, limit - redis.call('ZCARD', key))
`;

type RateRedis = RedisClient & {
  otterAcquireSend(key: string, limit: number, window: number, member: string): Promise<number>;
  otterAvailableSends(key: string, limit: number, window: number): Promise<number>;
};

export class SendRateLimiter {
  private readonly redis: RateRedis;
  private readonly prefix: string;

  constructor(redis: RedisClient, prefix: string) {
    redis.defineCommand('otterAcquireSend', { numberOfKeys: 1, lua: ACQUIRE });
    redis.defineCommand('otterAvailableSends', { numberOfKeys: 1, lua: AVAILABLE });
    this.redis = redis as RateRedis;
    this.prefix = prefix;
  }

  private key(taskId: string): string {
    return `${this.prefix}:rate:${taskId}`;
  }

  /** 0 when a send may go now (and it is counted), else milliseconds to wait. */
  async acquire(taskId: string, maxPerMinute: number | undefined, member: string): Promise<number> {
    if (!maxPerMinute) return 0;
    return Number(await this.redis.otterAcquireSend(this.key(taskId), maxPerMinute, RATE_WINDOW_MS, member));
  }

  /** How many sends the task may make right now (for the dispatcher's budget). */
  async available(taskId: string, maxPerMinute: number | undefined): Promise<number> {
    if (!maxPerMinute) return Number.POSITIVE_INFINITY;
    return Number(await this.redis.otterAvailableSends(this.key(taskId), maxPerMinute, RATE_WINDOW_MS));
  }
}
