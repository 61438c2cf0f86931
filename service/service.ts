// Wires one Otter process together: services checked, database migrated, then the API and/or the
// workers of its ROLE. `stop()` undoes it all in reverse order.
import { Redis } from 'ioredis';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../core/config.ts';
import { createDb, ensureDatabase } from '../db/connection.ts';
import { migrateToLatest } from '../db/migrate.ts';
import { buildApp } from '../api/app.ts';
import { FirmwareStorage } from '../api/services/firmware-storage.ts';
import { checkPostgres, checkRedis } from './dependencies.ts';
import { createLogger, type Logger } from './logger.ts';
import { Readiness } from './readiness.ts';

export interface RunningService {
  logger: Logger;
  app?: FastifyInstance;
  stop(): Promise<void>;
}

export async function startService(config: Config): Promise<RunningService> {
  const logger = createLogger(config.logLevel, { role: config.role });
  await checkPostgres(config.databaseUrl);
  await checkRedis(config.redisUrl);

  await ensureDatabase(config.databaseUrl);
  const { db, pool } = createDb(config.databaseUrl, 20);
  const migrations = await migrateToLatest(db);
  if (migrations.length > 0) logger.info({ applied: migrations.map((m) => m.migrationName) }, 'database migrated');

  const redis = new Redis(config.redisUrl, { maxRetriesPerRequest: null });
  redis.on('error', (err) => logger.warn({ err: err.message }, 'redis connection error'));

  const readiness = new Readiness();
  readiness.add('postgres', () => pool.query('SELECT 1'));
  readiness.add('redis', () => redis.ping());

  if (config.urlSigningSecretGenerated) {
    logger.warn('URL_SIGNING_SECRET is not set: download URLs are signed with a random per-process key; set it when running several processes');
  }

  let app: FastifyInstance | undefined;
  if (config.role !== 'worker') {
    if (config.apiKeyGenerated) {
      logger.warn({ apiKey: config.apiKeys[0] }, 'API_KEYS is not set: generated this API key for this process');
    }
    app = await buildApp({
      config,
      logger,
      db,
      readiness,
      storage: new FirmwareStorage(config.storageDir, config.firmwareMaxBytes),
    });
    await app.listen({ port: config.port, host: config.host });
  }

  return {
    logger,
    app,
    async stop() {
      if (app) await app.close();
      redis.disconnect();
      await db.destroy();
    },
  };
}
