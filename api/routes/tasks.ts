// Upgrade task routes (docs/rest-api.md#upgrade-tasks): create, read, list, update, delete, release,
// push, pause, resume, cancel, retry, and the task's records. Thin handlers over TaskService.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { preValidationHookHandler } from 'fastify';
import { Type } from 'typebox';
import { isDeepStrictEqual } from 'node:util';
import { conflict, notFound, preconditionFailed, validationError } from '../../core/errors.ts';
import { isValidTimeZone } from '../../core/maintenance-windows.ts';
import { waveProblems } from '../../core/waves.ts';
import type { TaskRow } from '../../db/database.ts';
import { findFirmware } from '../../db/queries/firmware.ts';
import { deleteIdleTask, findTaskWaves, insertTask, listTaskRecords, listTasks, updateTask } from '../../db/queries/tasks.ts';
import { ErrorReply, IdempotencyHeaders, IfMatchHeaders, Page, UuidParams, etagOf, ifMatchRevisions, paging } from '../schemas/common.ts';
import { UpgradeRecord, recordToJson } from '../schemas/records.ts';
import {
  CancelBody,
  CancelReply,
  PushBody,
  PushReply,
  ReleaseBody,
  ReleaseReply,
  RetryBody,
  RetryReply,
  Task,
  TaskCreateBody,
  TaskListQuery,
  TaskPatchBody,
  TaskRecordsQuery,
  taskToJson,
  type TaskJson,
  type TaskPatch,
} from '../schemas/tasks.ts';

const tags = ['tasks'];
const DEFAULT_TIMEOUT_SECONDS = 600;
const DEFAULT_RETRY = { maxAttempts: 3, backoffSeconds: 30, on: ['timeout', 'send_error'] as Array<'timeout' | 'send_error'> };

/** Lets an action be called with no body at all (`curl -X POST …/pause`). */
const emptyBodyIsObject: preValidationHookHandler = async (request) => {
  if (request.body === undefined || request.body === null) request.body = {};
};

const errors = { 400: ErrorReply, 404: ErrorReply, 409: ErrorReply };
/** Routes that honour Idempotency-Key also answer 422 `idempotency_key_reused`. */
const idempotentErrors = { ...errors, 422: ErrorReply };
const idempotent = { idempotent: true };

/**
 * Strategy settings the schema cannot check alone (docs/strategies.md): waves increasing, time
 * zones known to this runtime.
 */
function checkStrategy(body: Pick<TaskPatch, 'rollout' | 'windows'>): void {
  const problems = [
    ...(body.rollout?.waves ? waveProblems(body.rollout.waves).map((problem) => ({ ...problem, path: `/rollout${problem.path}` })) : []),
    ...(body.windows ?? []).flatMap((window, i) =>
      isValidTimeZone(window.timeZone) ? [] : [{ path: `/windows/${i}/timeZone`, message: `unknown time zone ${JSON.stringify(window.timeZone)}` }]),
  ];
  if (problems.length > 0) throw validationError(problems.map((problem) => `${problem.path}: ${problem.message}`).join('; '), problems);
}

const taskRoutes: FastifyPluginAsyncTypebox = async (app) => {
  /** The task as replies show it: with its waves, and windows read by the app's clock. */
  async function present(task: TaskRow): Promise<TaskJson> {
    const waves = task.open_wave === null ? undefined : (await findTaskWaves(app.db, [task.id])).get(task.id);
    return taskToJson(task, waves, app.clock());
  }

  /**
   * Waves are fixed once a task is released (its records are placed in them, or not): a change
   * that leaves them out keeps them, one that changes them is refused.
   */
  async function keepWaves(taskId: string, changes: TaskPatch): Promise<{ changes: TaskPatch; unreleased: boolean }> {
    if (!changes.rollout) return { changes, unreleased: false };
    const task = await app.tasks.get(taskId);
    const { waves, firstDeviceIds } = task.rollout;
    // a task never released has no records to place: its rollout is replaced as sent, as long as it
    // is still unreleased when the change is written (updateTask checks that in the same statement)
    if (task.open_wave === null && task.total === 0) {
      const same = isDeepStrictEqual(changes.rollout.waves, waves) && isDeepStrictEqual(changes.rollout.firstDeviceIds, firstDeviceIds);
      return { changes, unreleased: !same };
    }
    const rollout = { ...changes.rollout, waves: changes.rollout.waves ?? waves, firstDeviceIds: changes.rollout.firstDeviceIds ?? firstDeviceIds };
    if (!isDeepStrictEqual(rollout.waves, waves) || !isDeepStrictEqual(rollout.firstDeviceIds, firstDeviceIds)) throw wavesFixed(taskId);
    return { changes: { ...changes, rollout }, unreleased: false };
  }

  function wavesFixed(taskId: string) {
    return conflict('waves_fixed', `task ${taskId} is released: its waves and first devices are fixed; send them unchanged or leave them out`);
  }

  app.post('/tasks', {
    config: idempotent,
    schema: {
      tags,
      summary: 'Create an upgrade task for a firmware',
      description: 'The task starts in state `created`; release it to devices, then push it (push mode) or let devices ask (pull mode).',
      headers: IdempotencyHeaders,
      body: TaskCreateBody,
      response: { 201: Task, ...idempotentErrors },
    },
  }, async (request, reply) => {
    const body = request.body;
    checkStrategy(body);
    const firmware = await findFirmware(app.db, body.firmwareId);
    if (!firmware) throw notFound('firmware', body.firmwareId);
    if (!firmware.url && !firmware.has_file) {
      throw conflict('firmware_has_no_file', `firmware ${firmware.id} has neither a url nor an uploaded file`);
    }
    const task = await insertTask(app.db, {
      firmwareId: firmware.id,
      productId: firmware.product_id,
      firmwareVersion: firmware.version,
      name: body.name,
      description: body.description ?? null,
      mode: body.mode ?? 'push',
      timeoutSeconds: body.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS,
      responseTimeoutSeconds: body.responseTimeoutSeconds ?? null,
      retry: body.retry ?? DEFAULT_RETRY,
      rollout: body.rollout ?? {},
      abort: body.abort ?? null,
      startAt: body.startAt ?? null,
      windows: body.windows ?? null,
      continuous: body.continuous ?? false,
      endAt: body.endAt ?? null,
    });
    reply.code(201).header('etag', etagOf(task.revision));
    return present(task);
  });

  app.get('/tasks', {
    schema: { tags, summary: 'List tasks, newest first, each with its stats', querystring: TaskListQuery, response: { 200: Page(Task), 400: ErrorReply } },
  }, async (request) => {
    const { page, pageSize, offset } = paging(request.query);
    const { firmwareId, productId, state } = request.query;
    const { rows, total } = await listTasks(app.db, { firmwareId, productId, state }, { limit: pageSize, offset });
    const waves = await findTaskWaves(app.db, rows.filter((row) => row.open_wave !== null).map((row) => row.id));
    return { items: rows.map((row) => taskToJson(row, waves.get(row.id), app.clock())), total, page, pageSize };
  });

  app.get('/tasks/:id', {
    schema: { tags, summary: 'One task with its stats (constant time, whatever its size)', params: UuidParams, response: { 200: Task, ...errors } },
  }, async (request, reply) => {
    const task = await app.tasks.read(request.params.id);
    reply.header('etag', etagOf(task.revision));
    return present(task);
  });

  app.patch('/tasks/:id', {
    schema: {
      tags,
      summary: 'Change a task; applies to what is dispatched from then on',
      description: 'With If-Match, applies only if the task is still at that ETag (else 412 precondition_failed).',
      params: UuidParams,
      headers: IfMatchHeaders,
      body: TaskPatchBody,
      response: { 200: Task, ...errors, 412: ErrorReply },
    },
  }, async (request, reply) => {
    checkStrategy(request.body);
    const { changes, unreleased } = await keepWaves(request.params.id, request.body);
    const outcome = await updateTask(app.db, request.params.id, changes, ifMatchRevisions(request.headers['if-match']), unreleased);
    if (outcome.kind === 'not_found') throw notFound('task', request.params.id);
    if (outcome.kind === 'released') throw wavesFixed(request.params.id);
    if (outcome.kind === 'stale') throw preconditionFailed('task', request.params.id, outcome.revision);
    app.dispatchSignal.poke(outcome.row.id);
    reply.header('etag', etagOf(outcome.row.revision));
    return present(outcome.row);
  });

  app.delete('/tasks/:id', {
    schema: {
      tags,
      summary: 'Delete a task with no waiting or processing records',
      description: 'With If-Match, deletes only if the task is still at that ETag (else 412 precondition_failed).',
      params: UuidParams,
      headers: IfMatchHeaders,
      response: { 204: Type.Null(), ...errors, 412: ErrorReply },
    },
  }, async (request, reply) => {
    const result = await deleteIdleTask(app.db, request.params.id, ifMatchRevisions(request.headers['if-match']));
    if (result.kind === 'not_found') throw notFound('task', request.params.id);
    if (result.kind === 'stale') throw preconditionFailed('task', request.params.id, result.revision);
    if (result.kind === 'active') throw conflict('task_active', `task ${request.params.id} has waiting or processing records; cancel them first`);
    reply.code(204);
    return null;
  });

  app.post('/tasks/:id/release', {
    config: idempotent,
    schema: {
      tags,
      summary: 'Release the task to all devices of its product, to the devices having chosen tags, or to chosen devices',
      description: 'Creates one `waiting` record per device; skips (and counts by reason) devices already on the version, busy in another task, filtered by fromVersions, unknown, or already in this task. `push: true` pushes right away.',
      params: UuidParams,
      headers: IdempotencyHeaders,
      body: ReleaseBody,
      response: { 200: ReleaseReply, ...idempotentErrors },
    },
  }, async (request) => {
    const { push, ...selection } = request.body;
    return app.tasks.release(request.params.id, selection, push === true);
  });

  app.post('/tasks/:id/push', {
    config: idempotent,
    preValidation: emptyBodyIsObject,
    schema: {
      tags,
      summary: 'Push: send the waiting records (or some devices of them), within the rollout limits',
      params: UuidParams,
      headers: IdempotencyHeaders,
      body: PushBody,
      response: { 200: PushReply, ...idempotentErrors },
    },
  }, async (request) => ({ queued: await app.tasks.push(request.params.id, request.body.deviceIds) }));

  app.post('/tasks/:id/pause', {
    schema: { tags, summary: 'Stop dispatching new devices; in-flight upgrades finish', params: UuidParams, response: { 200: Task, ...errors } },
  }, async (request) => present(await app.tasks.pause(request.params.id)));

  app.post('/tasks/:id/resume', {
    schema: { tags, summary: 'Dispatch again after a pause', params: UuidParams, response: { 200: Task, ...errors } },
  }, async (request) => present(await app.tasks.resume(request.params.id)));

  app.post('/tasks/:id/waves/:n/approve', {
    schema: {
      tags,
      summary: "Approve the gate of wave n (from 1) of a task whose gate asks for approval",
      description: 'Allowed while the wave runs, soaks or awaits approval; the next wave opens once the gate has also met its success rate, finished share and soak time.',
      params: Type.Object({ id: UuidParams.properties.id, n: Type.Integer({ minimum: 1, maximum: 20 }) }),
      response: { 200: Task, ...errors },
    },
  }, async (request) => present(await app.tasks.approveWave(request.params.id, request.params.n)));

  app.post('/tasks/:id/cancel', {
    preValidation: emptyBodyIsObject,
    schema: {
      tags,
      summary: 'Cancel waiting (and, if asked, processing) records; without deviceIds, the whole task',
      params: UuidParams,
      body: CancelBody,
      response: { 200: CancelReply, ...errors },
    },
  }, async (request) => {
    const { canceled, task } = await app.tasks.cancel(request.params.id, request.body);
    return { canceled, task: await present(task) };
  });

  app.post('/tasks/:id/retry', {
    config: idempotent,
    preValidation: emptyBodyIsObject,
    schema: {
      tags,
      summary: 'Put failed (or canceled) records back to waiting with attempts reset; the task runs again',
      params: UuidParams,
      headers: IdempotencyHeaders,
      body: RetryBody,
      response: { 200: RetryReply, ...idempotentErrors },
    },
  }, async (request) => {
    const { retried, task } = await app.tasks.retry(request.params.id, request.body);
    return { retried, task: await present(task) };
  });

  app.get('/tasks/:id/records', {
    schema: {
      tags,
      summary: "The task's per-device upgrade records",
      params: UuidParams,
      querystring: TaskRecordsQuery,
      response: { 200: Page(UpgradeRecord), ...errors },
    },
  }, async (request) => {
    await app.tasks.get(request.params.id);
    const { page, pageSize, offset } = paging(request.query);
    const { state, deviceId, wave } = request.query;
    const { rows, total } = await listTaskRecords(app.db, request.params.id, { state, deviceId, wave }, { limit: pageSize, offset });
    return { items: rows.map(recordToJson), total, page, pageSize };
  });
};

export default taskRoutes;
