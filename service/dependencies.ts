// Start-up checks of the services Otter needs. A failure becomes a DependencyError that names the
// service, its URL without password and how to start it, so main can print one clear line.
import pg from 'pg';
import { Redis } from 'ioredis';
import type { RedisTarget } from '../services/redis-client.ts';
import { DependencyError } from '../core/errors.ts';
import { redactUrl } from '../core/config.ts';

export const START_HINTS = {
  postgres: 'start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` or `docker compose up -d postgres`',
  redis: 'start it with `redis-server --daemonize yes --port 6379` or `docker compose up -d redis`',
  mqtt: 'start it with `docker compose up -d mosquitto` (the closed broker of mosquitto.conf), or `mosquitto -d` for a local development broker',
} as const;

function reason(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) return reason(error.errors[0]);
  if (error instanceof Error) return (error as { code?: string }).code ?? error.message;
  return String(error);
}

/** Connects to the server (not the database, which migrate may create) and runs one query. */
export async function checkPostgres(databaseUrl: string): Promise<void> {
  const admin = new URL(databaseUrl);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString(), connectionTimeoutMillis: 5_000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
  } catch (error) {
    throw new DependencyError('PostgreSQL', `${redactUrl(databaseUrl)} (${reason(error)})`, START_HINTS.postgres, error);
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Pings Redis; on a cluster, the first node that answers must also report the cluster healthy
 * (every slot served), since BullMQ's scripts fail on a slot without a master.
 */
export async function checkRedis(target: RedisTarget | string): Promise<void> {
  const { redisUrl, redisClusterNodes } = typeof target === 'string' ? { redisUrl: target, redisClusterNodes: undefined } : target;
  if (!redisClusterNodes) return pingRedis(redisUrl);
  let lastError: unknown;
  for (const node of redisClusterNodes) {
    const nodeUrl = new URL(redisUrl);
    nodeUrl.hostname = node.host.includes(':') ? `[${node.host}]` : node.host;
    nodeUrl.port = String(node.port);
    try {
      const info = await pingRedis(nodeUrl.toString(), (client) => client.cluster('INFO') as Promise<string>);
      if (/cluster_state:ok/.test(info ?? '')) return;
      lastError = new Error(`cluster_state is not ok at ${node.host}:${node.port}`);
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError instanceof DependencyError ? lastError : new DependencyError('Redis Cluster', `${(lastError as Error).message}`, START_HINTS.redis, lastError);
}

async function pingRedis<T = void>(redisUrl: string, then?: (client: Redis) => Promise<T>): Promise<T | undefined> {
  const client = new Redis(redisUrl, {
    lazyConnect: true,
    connectTimeout: 5_000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
  });
  // connect() rejects with a bare "Connection is closed."; the socket's own error says why
  let socketError: unknown;
  client.on('error', (error) => {
    socketError ??= error;
  });
  try {
    await client.connect();
    await client.ping();
    return await then?.(client);
  } catch (error) {
    const cause = socketError ?? error;
    throw new DependencyError('Redis', `${redactUrl(redisUrl)} (${reason(cause)})`, START_HINTS.redis, cause);
  } finally {
    client.disconnect();
  }
}
