// Builds a real Otter (API, and workers with ROLE=all) against its own database, storage
// directory and queue prefix, in one call. The API is reached through app.inject.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { loadConfig, type Config, type Env } from '../../core/config.ts';
import { createLogger } from '../../service/logger.ts';
import { startOtter, type Otter, type StartOptions } from '../../service/service.ts';
import { createTestDatabase, uniqueName, type TestDatabase } from './database.ts';
import { TEST_API_KEY, TEST_MQTT_URL, TEST_REDIS_URL } from './env.ts';
import { deleteQueueKeys } from './queue-keys.ts';
import type { RedisClient } from '../../services/redis-client.ts';

export interface TestApp {
  app: FastifyInstance;
  otter: Otter;
  config: Config;
  database: TestDatabase;
  redis: RedisClient;
  storageDir: string;
  /** Headers that carry the test API key. */
  auth: { authorization: string };
  /** Stops this Otter and starts it again on the same database, Redis prefix and storage; `app`, `otter` and `redis` change. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

/** ROLE defaults to `api` (no workers); pass ROLE: 'all' and a broker's MQTT_URL for rollouts. */
export async function buildTestApp(env: Env = {}, options: StartOptions = {}): Promise<TestApp> {
  const database = await createTestDatabase();
  const storageDir = await mkdtemp(path.join(os.tmpdir(), 'otter-storage-'));
  const config = loadConfig({
    ROLE: 'api',
    DATABASE_URL: database.url,
    REDIS_URL: TEST_REDIS_URL,
    MQTT_URL: TEST_MQTT_URL,
    API_KEYS: TEST_API_KEY,
    STORAGE_DIR: storageDir,
    QUEUE_PREFIX: uniqueName('otter-test'),
    URL_SIGNING_SECRET: 'test-signing-secret',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    // tests send many wrong keys from one address; auth-limits.test.ts sets its own limit
    AUTH_FAILURE_LIMIT: '0',
    ...env,
  });
  const start = () => startOtter(config, {
    logger: createLogger(config.logLevel),
    listen: false,
    defaultMetrics: false,
    ...options,
  });
  const otter = await start();
  const testApp: TestApp = {
    app: otter.app!,
    otter,
    config,
    database,
    redis: otter.redis,
    storageDir,
    auth: { authorization: `Bearer ${TEST_API_KEY}` },
    async restart() {
      await testApp.otter.stop();
      const next = await start();
      Object.assign(testApp, { otter: next, app: next.app!, redis: next.redis });
    },
    async close() {
      const { otter } = testApp;
      await otter.stop();
      await deleteQueueKeys(otter.config.redisUrl, otter.config.queuePrefix);
      await database.drop();
      await rm(storageDir, { recursive: true, force: true });
    },
  };
  return testApp;
}
