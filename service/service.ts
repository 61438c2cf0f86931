// Wires one Otter process together: services checked, database migrated, then the API and/or the
// workers of its ROLE. `stop()` undoes it all in reverse order. Tests start the same thing.
import type { FastifyInstance } from 'fastify';
import type { Config } from '../core/config.ts';
import { createDb, ensureDatabase, type Db } from '../db/connection.ts';
import { migrateToLatest } from '../db/migrate.ts';
import { buildApp } from '../api/app.ts';
import { FirmwareStorage } from '../services/firmware-storage.ts';
import type { Connector } from '../protocols/connector.ts';
import { loadConnector } from '../protocols/load-connector.ts';
import { RedisDispatchSignal } from '../services/dispatch-signal.ts';
import { FirmwareOffers } from '../workers/firmware-offers.ts';
import { DeviceMessageService } from '../services/device-messages.ts';
import { GatewayDirectory, routeThroughGateways } from '../workers/gateway-routes.ts';
import { JobWaker } from '../workers/job-waker.ts';
import { PullRequests } from '../workers/pull-requests.ts';
import { ReadReplyPublisher, ReadReplyWaiters } from '../services/read-replies.ts';
import { TaskSupervisor } from '../workers/task-supervisor.ts';
import { createRedis, type RedisClient } from '../services/redis-client.ts';
import { UpgradeQueues } from '../services/upgrade-queues.ts';
import { startWorkerRuntime, type WorkerRuntime } from '../workers/worker-runtime.ts';
import type { DispatcherOptions } from '../workers/dispatcher.ts';
import type { StrategyOptions } from '../workers/worker-runtime.ts';
import { checkPostgres, checkRedis } from './dependencies.ts';
import { createLogger, type Logger } from './logger.ts';
import { Metrics, registerStateGauges } from '../services/metrics.ts';
import { Readiness } from '../services/readiness.ts';

export interface Otter {
  config: Config;
  logger: Logger;
  db: Db;
  redis: RedisClient;
  queue: UpgradeQueues;
  metrics: Metrics;
  connector: Connector;
  app?: FastifyInstance;
  workers?: WorkerRuntime;
  messages: DeviceMessageService;
  stop(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  /** Listen on config.port (false: the app is only reachable through inject). */
  listen?: boolean;
  defaultMetrics?: boolean;
  dispatcher?: DispatcherOptions;
  /** Rollout strategies' pace and clock (tests move the clock through maintenance windows). */
  strategies?: StrategyOptions;
}

/** Connections of the lookup pool: firmware offers and gateway routes are cached, so few are needed. */
const LOOKUP_POOL_SIZE = 4;

export async function startOtter(config: Config, options: StartOptions = {}): Promise<Otter> {
  const logger = options.logger ?? createLogger(config.logLevel, { role: config.role });
  await checkPostgres(config.databaseUrl);
  await checkRedis(config);

  await ensureDatabase(config.databaseUrl);
  const { db, pool } = createDb(config.databaseUrl, config.databasePoolSize);
  const migrations = await migrateToLatest(db);
  if (migrations.length > 0) logger.info({ applied: migrations.map((m) => m.migrationName) }, 'database migrated');

  const redis = createRedis(config);
  redis.on('error', (err: Error) => logger.warn({ err: err.message }, 'redis connection error'));
  const queue = new UpgradeQueues(redis, config.queuePrefix, config.queueShards, Boolean(config.redisClusterNodes));
  const metrics = new Metrics({ defaultMetrics: options.defaultMetrics });
  registerStateGauges(metrics, db, queue);
  const runsWorkers = config.role !== 'api';
  // What a message needs (its firmware offer, its device's gateway) is read on connections of its
  // own: the dispatcher reads it while its claim holds records locked, and on the shared pool
  // that read would queue behind requests that wait for those very locks (pool exhausted, claim
  // stuck until the pool's timeout). Plain reads of firmware and devices never wait on record locks.
  const lookups = createDb(config.databaseUrl, LOOKUP_POOL_SIZE);
  // child devices are reached through their gateways, whatever the connector
  const routes = new GatewayDirectory(lookups.db);
  const connector = routeThroughGateways(await loadConnector({ config, logger, receive: runsWorkers }), routes);

  const readiness = new Readiness();
  readiness.add('postgres', () => pool.query('SELECT 1'));
  readiness.add('redis', () => redis.ping());
  readiness.add('connector', () => connector.ready?.() ?? Promise.resolve());

  if (config.urlSigningSecretGenerated) {
    logger.warn('URL_SIGNING_SECRET is not set: download URLs are signed with a random per-process key; set it when running several processes');
  }

  const offers = new FirmwareOffers(lookups.db, config);
  const waker = new JobWaker(queue, logger);
  const supervisor = new TaskSupervisor(db, queue, logger);
  const pulls = new PullRequests(db, queue, offers, logger);
  const readReplies = new ReadReplyPublisher(redis, config.queuePrefix);
  // device messages arrive through the connector (worker processes) and the REST API (any process)
  const messages = new DeviceMessageService({
    db,
    waker,
    supervisor,
    metrics,
    logger,
    connector,
    selfRegistration: config.deviceSelfRegistration,
    shards: config.deviceMessageShards,
    rateLimit: { ratePerSecond: config.deviceMessageRate, burst: config.deviceMessageBurst },
    handlers: {
      requestFirmware: (message) => pulls.answer(message),
      readReply: (message) =>
        readReplies.publish({ messageId: message.messageId, deviceId: message.deviceId, version: message.version, properties: message.properties }),
    },
  });

  let workers: WorkerRuntime | undefined;
  if (runsWorkers) {
    workers = await startWorkerRuntime({ config, logger, db, redis, queue, connector, metrics, offers, routes, messages, waker, supervisor, dispatcher: options.dispatcher, strategies: options.strategies });
  } else {
    await connector.start(async () => ({ accepted: false, code: 'not_receiving' }));
  }

  if (config.apiKeyGenerated && config.role !== 'worker') {
    logger.warn({ apiKey: config.apiKeys[0] }, 'API_KEYS is not set: generated this API key for this process');
  }
  const readWaiters = new ReadReplyWaiters(createRedis(config), config.queuePrefix);
  await readWaiters.start();
  const app: FastifyInstance = await buildApp({
    config,
    logger,
    db,
    readiness,
    storage: new FirmwareStorage(config.storageDir, config.firmwareMaxBytes),
    queue,
    dispatchSignal: new RedisDispatchSignal(redis, config.queuePrefix),
    messages,
    connector,
    readWaiters,
    metrics,
    clock: options.strategies?.clock,
  }, config.role === 'worker' ? 'ops' : 'full');
  if (options.listen !== false) await app.listen({ port: config.port, host: config.host });
  else await app.ready();

  return {
    config,
    logger,
    db,
    redis,
    queue,
    metrics,
    connector,
    app,
    workers,
    messages,
    async stop() {
      // in order: no new requests, no new jobs (running ones finish), no new device messages,
      // then what was received is applied before the connections close
      if (app) await app.close();
      await readWaiters?.stop();
      if (workers) await workers.stop();
      await connector.stop();
      await messages.drain();
      await waker.stop();
      await supervisor.stop();
      await queue.close();
      redis.disconnect();
      await db.destroy();
      await lookups.db.destroy();
    },
  };
}
