// Builds the real API against its own database, storage directory and queue prefix, in one call.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { buildApp } from '../../api/app.ts';
import { FirmwareStorage } from '../../api/services/firmware-storage.ts';
import { loadConfig, type Config, type Env } from '../../core/config.ts';
import { createLogger } from '../../service/logger.ts';
import { Readiness } from '../../service/readiness.ts';
import { createTestDatabase, uniqueName, type TestDatabase } from './database.ts';
import { TEST_API_KEY, TEST_REDIS_URL } from './env.ts';

export interface TestApp {
  app: FastifyInstance;
  config: Config;
  database: TestDatabase;
  redis: Redis;
  storageDir: string;
  /** Headers that carry the test API key. */
  auth: { authorization: string };
  close(): Promise<void>;
}

export async function buildTestApp(env: Env = {}): Promise<TestApp> {
  const database = await createTestDatabase();
  const storageDir = await mkdtemp(path.join(os.tmpdir(), 'otter-storage-'));
  const config = loadConfig({
    DATABASE_URL: database.url,
    REDIS_URL: TEST_REDIS_URL,
    API_KEYS: TEST_API_KEY,
    STORAGE_DIR: storageDir,
    QUEUE_PREFIX: uniqueName('otter-test'),
    URL_SIGNING_SECRET: 'test-signing-secret',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    ...env,
  });
  const logger = createLogger(config.logLevel);
  const redis = new Redis(config.redisUrl, { maxRetriesPerRequest: null });
  const readiness = new Readiness();
  readiness.add('postgres', () => database.pool.query('SELECT 1'));
  readiness.add('redis', () => redis.ping());
  const app = await buildApp({
    config,
    logger,
    db: database.db,
    readiness,
    storage: new FirmwareStorage(config.storageDir, config.firmwareMaxBytes),
  });
  await app.ready();
  return {
    app,
    config,
    database,
    redis,
    storageDir,
    auth: { authorization: `Bearer ${TEST_API_KEY}` },
    async close() {
      await app.close();
      redis.disconnect();
      await database.drop();
      await rm(storageDir, { recursive: true, force: true });
    },
  };
}
