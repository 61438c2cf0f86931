// The Fastify application: external plugins, then Otter's own plugins, then the routes.
// Everything it talks to arrives in `ApiContext`, so tests build it against their own services.
import type { UpgradeQueues } from '../services/upgrade-queues.ts';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import fastifyHelmet from '@fastify/helmet';
import type { Config } from '../core/config.ts';
import type { Db } from '../db/connection.ts';
import type { Logger } from 'pino';
import type { Readiness } from '../services/readiness.ts';
import type { FirmwareStorage } from '../services/firmware-storage.ts';
import validation from './plugins/validation.ts';
import errorHandler, { describeFrameworkError, errorBody } from './plugins/error-handler.ts';
import { OtterError } from '../core/errors.ts';
import auth from './plugins/auth.ts';
import idempotency from './plugins/idempotency.ts';
import audit from './plugins/audit.ts';
import swagger from './plugins/swagger.ts';
import healthRoutes from './routes/health.ts';
import firmwareRoutes from './routes/firmware.ts';
import firmwareFileRoutes from './routes/firmware-files.ts';
import deviceRoutes from './routes/devices.ts';
import deviceCredentialRoutes from './routes/device-credentials.ts';
import taskRoutes from './routes/tasks.ts';
import recordRoutes from './routes/records.ts';
import recordExportRoutes from './routes/record-export.ts';
import auditRoutes from './routes/audit.ts';
import webhookRoutes from './routes/webhooks.ts';
import deviceMessageRoutes from './routes/device-messages.ts';
import deviceFirmwareReadRoutes from './routes/device-firmware-read.ts';
import metricsRoutes from './routes/metrics.ts';
import { TaskService } from '../services/task-service.ts';
import { TaskSnapshots } from '../services/task-snapshots.ts';
import { findTask } from '../db/queries/tasks.ts';

const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
import { mountBullBoard } from '../dashboards/bull-board.ts';
import consolePlugin, { CONSOLE_PATH } from './console/plugin.ts';
import type { DispatchSignal } from '../services/dispatch-signal.ts';
import type { DeviceMessageService } from '../services/device-messages.ts';
import type { ReadReplyWaiters } from '../services/read-replies.ts';
import type { Connector } from '../protocols/connector.ts';
import type { Metrics } from '../services/metrics.ts';

export interface ApiContext {
  config: Config;
  logger: Logger;
  db: Db;
  readiness: Readiness;
  storage: FirmwareStorage;
  /** The upgrade queue: the API removes jobs of canceled records and shows it in bull-board. */
  queue: UpgradeQueues;
  dispatchSignal: DispatchSignal;
  /** Device messages posted by platforms that terminate device protocols themselves. */
  messages: DeviceMessageService;
  /** Sends ReadFirmwareMessage; its replies come back through readWaiters. */
  connector: Connector;
  readWaiters: ReadReplyWaiters;
  metrics: Metrics;
  /** The clock maintenance windows are shown by (nextWindowAt); Date.now unless a test moves it. */
  clock?: () => number;
}

declare module 'fastify' {
  interface FastifyInstance {
    config: Config;
    db: Db;
    readiness: Readiness;
    storage: FirmwareStorage;
    tasks: TaskService;
    dispatchSignal: DispatchSignal;
    messages: DeviceMessageService;
    connector: Connector;
    readWaiters: ReadReplyWaiters;
    metrics: Metrics;
    clock: () => number;
  }
}

/** `full`: the whole API; `ops`: only health, readiness and metrics (what a ROLE=worker process serves). */
export type AppSurface = 'full' | 'ops';

/** Paths behind the API key (docs/rest-api.md#authentication). */
function behindKey(path: string): boolean {
  return path === '/api' || path.startsWith('/api/') || path.startsWith('/metrics') || path.startsWith('/admin/queues');
}

/**
 * A URL Fastify cannot route (a path parameter longer than any id, bad percent-encoding) is
 * answered in the one error shape; behind the key, only once the key is checked (no probing).
 */
async function answerFrameworkError(error: FastifyError, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  let answer = describeFrameworkError(error);
  try {
    if (behindKey(request.url.split('?')[0] ?? '')) await request.server.authenticate(request, reply);
  } catch (refusal) {
    answer = refusal instanceof OtterError ? refusal : describeFrameworkError(refusal as FastifyError);
    if (answer.statusCode === 401) reply.header('www-authenticate', 'Basic realm="otter", charset="UTF-8"');
  }
  reply.code(answer.statusCode).send(errorBody(answer.statusCode, answer.code, answer.message));
}

export async function buildApp(context: ApiContext, surface: AppSurface = 'full'): Promise<FastifyInstance> {
  const app = Fastify({
    frameworkErrors: (error, request, reply) => {
      void answerFrameworkError(error, request, reply);
    },
    loggerInstance: context.logger as FastifyBaseLogger,
    // the onResponse hook below writes one line per request instead, at debug
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: context.config.bodyLimitBytes,
    trustProxy: true,
    ajv: { customOptions: { strict: false } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.decorate('config', context.config);
  app.decorate('db', context.db);
  app.decorate('readiness', context.readiness);
  app.decorate('storage', context.storage);
  // an API-only process serves task polls from recent snapshots (see TaskSnapshots); a process
  // that also runs workers reads Postgres every time, as its own workers change tasks all along
  const snapshots = context.config.role === 'api' ? new TaskSnapshots((id) => findTask(context.db, id)) : undefined;
  app.decorate('tasks', new TaskService(context.db, context.queue, context.dispatchSignal, snapshots));
  if (snapshots) {
    app.addHook('onSend', async (request) => {
      if (!READ_METHODS.has(request.method)) snapshots.clear();
    });
  }
  app.decorate('dispatchSignal', context.dispatchSignal);
  app.decorate('messages', context.messages);
  app.decorate('connector', context.connector);
  app.decorate('readWaiters', context.readWaiters);
  app.decorate('metrics', context.metrics);
  app.decorate('clock', context.clock ?? Date.now);

  // one log line per request, at debug (docs/operations.md#logs)
  app.addHook('onResponse', async (request, reply) => {
    request.log.debug(
      { method: request.method, url: request.url, statusCode: reply.statusCode, ms: Math.round(reply.elapsedTime) },
      'request',
    );
  });

  await app.register(fastifyHelmet, { contentSecurityPolicy: false, global: true });
  await app.register(validation);
  await app.register(errorHandler);
  await app.register(swagger);
  await app.register(auth, {
    apiKeys: context.config.apiKeyEntries,
    failedAttempts: { maxFailures: context.config.authFailureLimit, windowSeconds: context.config.authFailureWindowSeconds },
  });

  await app.register(healthRoutes);
  await app.register(metricsRoutes);
  if (surface === 'ops') return app;

  await app.register(idempotency);
  await app.register(audit, { db: context.db, logger: context.logger, retentionDays: context.config.auditRetentionDays });
  await mountBullBoard(app, context.queue.shards);
  await app.register(consolePlugin, { prefix: CONSOLE_PATH });
  await app.register(firmwareFileRoutes);
  await app.register(async (api) => {
    api.addHook('onRequest', api.authenticate);
    // an unknown path under /api still asks for the key first: no probing without one
    api.setNotFoundHandler({ preHandler: api.authenticate }, (request, reply) => {
      reply.code(404).send(errorBody(404, 'not_found', `route ${request.method} ${request.url.split('?')[0]} not found`));
    });
    await api.register(firmwareRoutes);
    // first: it gives the device routes app.deviceCredentials (deleting a device revokes its certificates)
    await api.register(deviceCredentialRoutes);
    await api.register(deviceRoutes);
    await api.register(taskRoutes);
    await api.register(recordRoutes);
    await api.register(recordExportRoutes);
    await api.register(auditRoutes);
    await api.register(webhookRoutes);
    await api.register(deviceMessageRoutes);
    await api.register(deviceFirmwareReadRoutes);
  }, { prefix: '/api' });

  return app;
}
