// Everything a worker process runs: the BullMQ worker of upgrade jobs, the dispatcher, the device
// message intake, and the helpers they share (record store, job waker, task supervisor).
import { Worker } from 'bullmq';
import type { Logger } from 'pino';
import type { Config } from '../core/config.ts';
import type { UpgradeJobData } from '../core/jobs.ts';
import { isFinal } from '../core/record-machine.ts';
import type { Db } from '../db/connection.ts';
import type { Connector } from '../protocols/connector.ts';
import type { Metrics } from '../services/metrics.ts';
import type { DeviceMessageService } from '../services/device-messages.ts';
import { Dispatcher, dispatchStore, type DispatcherOptions } from './dispatcher.ts';
import { RolloutScheduler, type RolloutSchedulerOptions } from './rollout-scheduler.ts';
import { listenForDispatch } from '../services/dispatch-signal.ts';
import type { FirmwareOffers } from './firmware-offers.ts';
import type { GatewayDirectory } from './gateway-routes.ts';
import type { JobWaker } from './job-waker.ts';
import { RecordStore } from './record-store.ts';
import { Reconciler } from './reconciler.ts';
import { SendRateLimiter } from './send-rate-limiter.ts';
import type { TaskSupervisor } from './task-supervisor.ts';
import { createUpgradeProcessor, type UpgradeJobResult } from './upgrade-processor.ts';
import { UpgradeSender } from './upgrade-sender.ts';
import { DirectSends } from './direct-sends.ts';
import { UPGRADE_JOB_OPTIONS, type UpgradeQueues } from '../services/upgrade-queues.ts';
import { createRedis, type RedisClient } from '../services/redis-client.ts';
import { WebhookDeliverer } from './webhook-deliverer.ts';

export interface WorkerRuntimeDeps {
  config: Config;
  logger: Logger;
  db: Db;
  redis: RedisClient;
  queue: UpgradeQueues;
  connector: Connector;
  metrics: Metrics;
  offers: FirmwareOffers;
  /** Where child devices are reached: the sender reads a route before it writes the send. */
  routes: GatewayDirectory;
  messages: DeviceMessageService;
  waker: JobWaker;
  supervisor: TaskSupervisor;
  dispatcher?: DispatcherOptions;
  strategies?: StrategyOptions;
}

/** How rollout strategies are paced and timed (docs/strategies.md); tests shorten and move them. */
export interface StrategyOptions extends RolloutSchedulerOptions {
  /** The clock maintenance windows and soak times are read by. */
  clock?: () => number;
  /** A send held outside its windows looks again at least this often. */
  windowRecheckMs?: number;
}

export interface WorkerRuntime {
  dispatcher: Dispatcher;
  reconciler: Reconciler;
  /** One BullMQ worker per queue shard. */
  workers: Worker<UpgradeJobData, UpgradeJobResult>[];
  stop(): Promise<void>;
}

export async function startWorkerRuntime(deps: WorkerRuntimeDeps): Promise<WorkerRuntime> {
  const { config, logger, db, queue, metrics, supervisor } = deps;
  const store = new RecordStore(db);
  const rateLimiter = new SendRateLimiter(deps.redis, config.queuePrefix);
  const sender = new UpgradeSender({
    store,
    connector: deps.connector,
    offers: deps.offers,
    routes: deps.routes,
    logger,
    onSent: (_state, queuedAt) => {
      metrics.messagesSent.inc({ type: 'UPGRADE_FIRMWARE', result: 'ok' });
      if (queuedAt !== null) metrics.dispatchLatency.observe((Date.now() - queuedAt) / 1000);
    },
    onSendError: () => metrics.messagesSent.inc({ type: 'UPGRADE_FIRMWARE', result: 'error' }),
  });
  const strategies = deps.strategies ?? {};
  const dispatcher = new Dispatcher(dispatchStore(db), queue, rateLimiter, logger, { perTaskPerRound: config.dispatchBatchSize, clock: strategies.clock, ...deps.dispatcher }, {
    sends: new DirectSends(db, sender, queue, deps.waker),
    backlog: async () => deps.messages.pending + (await queue.getWaitingCount()),
    perRound: config.workerConcurrency,
  });

  store.onApplied = (changes) => {
    metrics.observeFinished(changes);
    supervisor.touch(changes.filter((change) => isFinal(change.record.state)).map((change) => change.taskId));
  };

  const processor = createUpgradeProcessor({ store, sender, rateLimiter, logger, clock: strategies.clock, windowRecheckMs: strategies.windowRecheckMs });

  const workerConnection = createRedis(config);
  // WORKER_CONCURRENCY is the process's, shared out over the shards' workers
  const perShard = Math.max(1, Math.ceil(config.workerConcurrency / queue.shards.length));
  const workers = queue.shards.map((shard) => new Worker<UpgradeJobData, UpgradeJobResult>(shard.name, processor, {
    connection: workerConnection,
    prefix: config.queuePrefix,
    concurrency: perShard,
    removeOnComplete: UPGRADE_JOB_OPTIONS.removeOnComplete as { age: number; count: number },
    removeOnFail: UPGRADE_JOB_OPTIONS.removeOnFail as { age: number; count: number },
    // a step never runs long; a job whose worker died is picked up again quickly
    lockDuration: 30_000,
    stalledInterval: 15_000,
    maxStalledCount: 100,
  }));
  for (const worker of workers) worker.on('error', (err) => logger.warn({ err: err.message, queue: worker.name }, 'upgrade worker error'));

  await deps.connector.start((incoming) => deps.messages.receive(incoming));

  const subscriber = createRedis(config);
  const unsubscribe = await listenForDispatch(subscriber, config.queuePrefix, () => dispatcher.poke());
  dispatcher.start();
  const reconciler = new Reconciler(db, queue, logger, config.reconcileIntervalMs);
  reconciler.start();
  const scheduler = new RolloutScheduler(db, queue, logger, () => dispatcher.poke(), {
    enrolLease: async (taskId, ms) => (await deps.redis.set(`${config.queuePrefix}:enrol:${taskId}`, '1', 'PX', Math.ceil(ms), 'NX')) === 'OK',
    ...strategies,
  });
  scheduler.start();
  // webhook deliveries: the outbox in Postgres, drained by every worker (docs/operations.md#webhooks)
  const webhooks = new WebhookDeliverer(db, logger, metrics, { retryBaseMs: config.webhookRetryBaseMs });
  webhooks.start();

  return {
    dispatcher,
    reconciler,
    workers,
    // stop taking work; jobs running now finish (they may still send through the connector)
    async stop() {
      await unsubscribe();
      await reconciler.stop();
      await scheduler.stop();
      await webhooks.stop();
      await dispatcher.stop();
      await Promise.all(workers.map((worker) => worker.close()));
      workerConnection.disconnect();
    },
  };
}
