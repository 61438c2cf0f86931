// Connections to Redis: one server (REDIS_URL), or a Redis Cluster (REDIS_CLUSTER_NODES, with
// REDIS_URL's user, password and TLS). BullMQ and Otter's own keys work on either.
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Config } from '../core/config.ts';

export type RedisClient = Redis | Cluster;

export type RedisTarget = Pick<Config, 'redisUrl' | 'redisClusterNodes'>;

/** What REDIS_URL gives a cluster's nodes: credentials, database-free TLS. */
function credentialsOf(redisUrl: string): RedisOptions {
  const url = new URL(redisUrl);
  return {
    username: url.username ? decodeURIComponent(url.username) : undefined,
    password: url.password ? decodeURIComponent(url.password) : undefined,
    tls: url.protocol === 'rediss:' ? {} : undefined,
  };
}

/**
 * A connection for BullMQ and Otter's own commands; commands issued in one tick share a write.
 * `options` override the defaults (maxRetriesPerRequest: null, which BullMQ's workers need).
 */
export function createRedis(target: RedisTarget, options: RedisOptions = {}): RedisClient {
  const redisOptions: RedisOptions = { maxRetriesPerRequest: null, enableReadyCheck: true, ...options };
  if (!target.redisClusterNodes) return new Redis(target.redisUrl, { enableAutoPipelining: true, ...redisOptions });
  return new Cluster(target.redisClusterNodes, {
    enableAutoPipelining: true,
    redisOptions: { ...credentialsOf(target.redisUrl), ...redisOptions },
  });
}
