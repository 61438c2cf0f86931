// The upgrade task routes against real Postgres (docs/rest-api.md#upgrade-tasks): create with its
// defaults and refusals, list, patch, delete, release with every skip reason, push, pause/resume,
// cancel, retry, the task's records and one record's timeline. ROLE api: nothing is dispatched.
import type { InjectOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { createFirmware, registerDevices } from '../helpers/rollout.ts';

const MISSING_UUID = '0b6c2f6e-3f4a-4c1e-9d51-7a2e5c8b9f10';
const ZERO_STATS = { total: 0, waiting: 0, processing: 0, success: 0, failed: 0, canceled: 0 };

interface TaskBody {
  id: string;
  state: string;
  mode: string;
  stats: typeof ZERO_STATS;
  [key: string]: unknown;
}

interface RecordBody {
  id: number;
  deviceId: string;
  state: string;
  attempts: number;
  [key: string]: unknown;
}

let t: TestApp;

beforeAll(async () => {
  t = await buildTestApp();
});

afterAll(async () => {
  await t?.close();
});

async function call(method: InjectOptions['method'], url: string, payload?: unknown) {
  return t.app.inject({ method, url, headers: t.auth, ...(payload === undefined ? {} : { payload: payload as InjectOptions['payload'] }) });
}

async function newTask(body: Record<string, unknown>): Promise<TaskBody> {
  const response = await call('POST', '/api/tasks', { name: 'a task', ...body });
  expect(response.statusCode, response.body).toBe(201);
  return response.json();
}

async function getTask(id: string): Promise<TaskBody> {
  const response = await call('GET', `/api/tasks/${id}`);
  expect(response.statusCode, response.body).toBe(200);
  return response.json();
}

async function release(taskId: string, body: Record<string, unknown>) {
  const response = await call('POST', `/api/tasks/${taskId}/release`, body);
  expect(response.statusCode, response.body).toBe(200);
  return response.json() as { added: number; skipped: Record<string, number>; skippedDevices: Array<{ deviceId: string; reason: string }>; queued?: number };
}

async function records(taskId: string, query = ''): Promise<{ items: RecordBody[]; total: number; page: number; pageSize: number }> {
  const response = await call('GET', `/api/tasks/${taskId}/records${query}`);
  expect(response.statusCode, response.body).toBe(200);
  return response.json();
}

function expectError(response: { statusCode: number; json(): unknown }, statusCode: number, code: string) {
  expect(response.statusCode).toBe(statusCode);
  expect(response.json()).toMatchObject({ statusCode, code });
}

const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${i + 1}`);
const byDevice = (list: Array<{ deviceId: string; reason: string }>) =>
  Object.fromEntries(list.map((entry) => [entry.deviceId, entry.reason]));

describe('POST /api/tasks', () => {
  it('creates a task in state created with the contract defaults', async () => {
    const firmwareId = await createFirmware(t.app, t.auth, 'create-p', '3.1.0', 31);
    const response = await call('POST', '/api/tasks', { firmwareId, name: 'spring rollout' });
    expect(response.statusCode, response.body).toBe(201);
    const task = response.json();
    expect(task).toMatchObject({
      firmwareId,
      productId: 'create-p',
      firmwareVersion: '3.1.0',
      name: 'spring rollout',
      description: null,
      mode: 'push',
      timeoutSeconds: 600,
      responseTimeoutSeconds: null,
      retry: { maxAttempts: 3, backoffSeconds: 30, on: ['timeout', 'send_error'] },
      rollout: {},
      abort: null,
      startAt: null,
      state: 'created',
      stats: ZERO_STATS,
    });
    expect(task.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(new Date(task.createdAt).toISOString()).toBe(task.createdAt);
    expect(await getTask(task.id)).toEqual(task);
  });

  it('keeps every field it is given', async () => {
    const firmwareId = await createFirmware(t.app, t.auth, 'create-p', '3.2.0', 32);
    const body = {
      firmwareId,
      name: 'full',
      description: 'every field',
      mode: 'pull',
      timeoutSeconds: 120,
      responseTimeoutSeconds: 15,
      retry: { maxAttempts: 5, backoffSeconds: 2, on: ['timeout', 'device_failure', 'rejected'] },
      rollout: { maxPerMinute: 100, maxInFlight: 10 },
      abort: { failureRate: 0.25, minFinished: 8 },
      startAt: '2030-01-02T03:04:05.000Z',
    };
    const task = await newTask(body);
    const { firmwareId: _f, ...rest } = body;
    expect(task).toMatchObject({ ...rest, firmwareId, state: 'created', stats: ZERO_STATS });
  });

  it('answers 404 for an unknown firmware', async () => {
    expectError(await call('POST', '/api/tasks', { firmwareId: MISSING_UUID, name: 'x' }), 404, 'not_found');
  });

  it('answers 409 firmware_has_no_file for a firmware with neither url nor file', async () => {
    const created = await call('POST', '/api/firmware', { productId: 'create-p', name: 'no file', version: '9.9.9', versionOrder: 999 });
    expect(created.statusCode, created.body).toBe(201);
    expect(created.json()).toMatchObject({ url: null, hasFile: false });
    expectError(await call('POST', '/api/tasks', { firmwareId: created.json().id, name: 'x' }), 409, 'firmware_has_no_file');
    const list = (await call('GET', `/api/tasks?firmwareId=${created.json().id}`)).json();
    expect(list.total).toBe(0);
  });

  it('refuses invalid bodies with validation_error', async () => {
    const firmwareId = await createFirmware(t.app, t.auth, 'create-p', '3.3.0', 33);
    const invalid: Array<Record<string, unknown>> = [
      { mode: 'broadcast' },
      { retry: { maxAttempts: 3, backoffSeconds: 30, on: ['timeout', 'solar_flare'] } },
      { retry: { maxAttempts: 0, backoffSeconds: 30, on: ['timeout'] } },
      { abort: { failureRate: 2, minFinished: 10 } },
      { timeoutSeconds: 0 },
      { name: '' },
      { firmwareId: 'not-a-uuid' },
    ];
    for (const patch of invalid) {
      const response = await call('POST', '/api/tasks', { firmwareId, name: 'bad', ...patch });
      expect(response.statusCode, JSON.stringify(patch)).toBe(400);
      expect(response.json()).toMatchObject({ statusCode: 400, code: 'validation_error', error: 'Bad Request' });
    }
    expect((await call('GET', `/api/tasks?firmwareId=${firmwareId}`)).json().total).toBe(0);
  });
});

describe('GET /api/tasks', () => {
  let fwA: string;
  let fwB: string;
  const created: TaskBody[] = [];

  beforeAll(async () => {
    fwA = await createFirmware(t.app, t.auth, 'list-a', '1.1.0', 11);
    fwB = await createFirmware(t.app, t.auth, 'list-b', '1.2.0', 12);
    for (let i = 0; i < 3; i += 1) created.push(await newTask({ firmwareId: fwA, name: `a-${i}` }));
    for (let i = 0; i < 2; i += 1) created.push(await newTask({ firmwareId: fwB, name: `b-${i}` }));
    const paused = await call('POST', `/api/tasks/${created[4]!.id}/pause`);
    expect(paused.statusCode, paused.body).toBe(200);
  });

  it('filters by firmwareId and productId, newest first, each with stats', async () => {
    const byFirmware = (await call('GET', `/api/tasks?firmwareId=${fwA}`)).json();
    expect(byFirmware.total).toBe(3);
    expect(byFirmware.items.map((x: TaskBody) => x.name)).toEqual(['a-2', 'a-1', 'a-0']);
    for (const item of byFirmware.items) expect(item.stats).toEqual(ZERO_STATS);

    const byProduct = (await call('GET', '/api/tasks?productId=list-b')).json();
    expect(byProduct.total).toBe(2);
    expect(byProduct.items.map((x: TaskBody) => x.name)).toEqual(['b-1', 'b-0']);
  });

  it('filters by state', async () => {
    const paused = (await call('GET', '/api/tasks?productId=list-b&state=paused')).json();
    expect(paused.items.map((x: TaskBody) => x.id)).toEqual([created[4]!.id]);
    const createdState = (await call('GET', '/api/tasks?productId=list-b&state=created')).json();
    expect(createdState.items.map((x: TaskBody) => x.id)).toEqual([created[3]!.id]);
  });

  it('pages', async () => {
    const first = (await call('GET', `/api/tasks?firmwareId=${fwA}&pageSize=2`)).json();
    expect(first).toMatchObject({ total: 3, page: 1, pageSize: 2 });
    expect(first.items.map((x: TaskBody) => x.name)).toEqual(['a-2', 'a-1']);
    const second = (await call('GET', `/api/tasks?firmwareId=${fwA}&pageSize=2&page=2`)).json();
    expect(second).toMatchObject({ total: 3, page: 2, pageSize: 2 });
    expect(second.items.map((x: TaskBody) => x.name)).toEqual(['a-0']);
    const beyond = (await call('GET', `/api/tasks?firmwareId=${fwA}&pageSize=2&page=3`)).json();
    expect(beyond).toMatchObject({ total: 3, items: [] });
    const defaults = (await call('GET', '/api/tasks')).json();
    expect(defaults).toMatchObject({ page: 1, pageSize: 20 });
  });

  it('refuses an unknown state filter and bad paging with validation_error', async () => {
    expectError(await call('GET', '/api/tasks?state=sleeping'), 400, 'validation_error');
    expectError(await call('GET', '/api/tasks?pageSize=501'), 400, 'validation_error');
    expectError(await call('GET', '/api/tasks?page=0'), 400, 'validation_error');
    expectError(await call('GET', '/api/tasks?firmwareId=nope'), 400, 'validation_error');
  });
});

describe('GET, PATCH, DELETE /api/tasks/{id}', () => {
  it('answers 404 for an unknown task and 400 for an id that is not a uuid', async () => {
    expectError(await call('GET', `/api/tasks/${MISSING_UUID}`), 404, 'not_found');
    expectError(await call('PATCH', `/api/tasks/${MISSING_UUID}`, { name: 'x' }), 404, 'not_found');
    expectError(await call('DELETE', `/api/tasks/${MISSING_UUID}`), 404, 'not_found');
    expectError(await call('GET', '/api/tasks/not-a-uuid'), 400, 'validation_error');
  });

  it('patches the changeable fields and leaves the others', async () => {
    const firmwareId = await createFirmware(t.app, t.auth, 'patch-p', '2.0.0', 2);
    const task = await newTask({ firmwareId, name: 'before' });
    const response = await call('PATCH', `/api/tasks/${task.id}`, {
      name: 'after',
      description: 'now described',
      timeoutSeconds: 90,
      responseTimeoutSeconds: 10,
      retry: { maxAttempts: 1, backoffSeconds: 0, on: [] },
      rollout: { maxInFlight: 3 },
      abort: { failureRate: 0.5, minFinished: 2 },
    });
    expect(response.statusCode, response.body).toBe(200);
    const patched = response.json();
    expect(patched).toMatchObject({
      id: task.id,
      firmwareId,
      mode: 'push',
      state: 'created',
      name: 'after',
      description: 'now described',
      timeoutSeconds: 90,
      responseTimeoutSeconds: 10,
      retry: { maxAttempts: 1, backoffSeconds: 0, on: [] },
      rollout: { maxInFlight: 3 },
      abort: { failureRate: 0.5, minFinished: 2 },
    });
    expect(await getTask(task.id)).toEqual(patched);

    const cleared = (await call('PATCH', `/api/tasks/${task.id}`, { description: null, abort: null, responseTimeoutSeconds: null })).json();
    expect(cleared).toMatchObject({ name: 'after', description: null, abort: null, responseTimeoutSeconds: null, timeoutSeconds: 90 });

    expectError(await call('PATCH', `/api/tasks/${task.id}`, {}), 400, 'validation_error');
    expectError(await call('PATCH', `/api/tasks/${task.id}`, { retry: { maxAttempts: 0, backoffSeconds: 1, on: [] } }), 400, 'validation_error');
    expect((await getTask(task.id)).name).toBe('after');
  });

  it('deletes an idle task (204) and refuses one with waiting records (409 task_active)', async () => {
    const firmwareId = await createFirmware(t.app, t.auth, 'delete-p', '2.0.0', 2);
    await registerDevices(t.app, t.auth, 'delete-p', ['del-1', 'del-2']);

    const idle = await newTask({ firmwareId, name: 'idle' });
    const deleted = await call('DELETE', `/api/tasks/${idle.id}`);
    expect(deleted.statusCode).toBe(204);
    expect(deleted.body).toBe('');
    expectError(await call('GET', `/api/tasks/${idle.id}`), 404, 'not_found');

    const busy = await newTask({ firmwareId, name: 'busy' });
    expect((await release(busy.id, { deviceIds: ['del-1', 'del-2'] })).added).toBe(2);
    expectError(await call('DELETE', `/api/tasks/${busy.id}`), 409, 'task_active');
    expect((await getTask(busy.id)).stats).toMatchObject({ total: 2, waiting: 2 });

    // once its records are canceled it may go, records and all
    expect((await call('POST', `/api/tasks/${busy.id}/cancel`)).statusCode).toBe(200);
    const recordId = (await records(busy.id)).items[0]!.id;
    expect((await call('DELETE', `/api/tasks/${busy.id}`)).statusCode).toBe(204);
    expectError(await call('GET', `/api/tasks/${busy.id}`), 404, 'not_found');
    expectError(await call('GET', `/api/records/${recordId}`), 404, 'not_found');
  });
});

describe('POST /api/tasks/{id}/release', () => {
  const PRODUCT = 'rel-p';
  let firmwareId: string;

  beforeAll(async () => {
    firmwareId = await createFirmware(t.app, t.auth, PRODUCT, '2.0.0', 2);
    await registerDevices(t.app, t.auth, PRODUCT, ids('rel-old', 4), '1.0.0');
    await registerDevices(t.app, t.auth, PRODUCT, ids('rel-mid', 3), '1.5.0');
    await registerDevices(t.app, t.auth, PRODUCT, ids('rel-new', 2), '2.0.0');
    await registerDevices(t.app, t.auth, 'rel-other', ['rel-foreign'], '1.0.0');
    // a device with no reported version at all
    const put = await call('PUT', '/api/devices', { devices: [{ id: 'rel-unreported', productId: PRODUCT }] });
    expect(put.statusCode, put.body).toBe(200);
  });

  it('releases to chosen devices, skipping and counting each reason', async () => {
    // rel-mid-1 is busy in another task of the same product
    const other = await newTask({ firmwareId, name: 'other' });
    expect((await release(other.id, { deviceIds: ['rel-mid-1'] })).added).toBe(1);

    const task = await newTask({ firmwareId, name: 'chosen' });
    const result = await release(task.id, {
      deviceIds: ['rel-old-1', 'rel-old-2', 'rel-old-2', 'rel-mid-1', 'rel-mid-2', 'rel-new-1', 'rel-foreign', 'rel-ghost', 'rel-unreported'],
    });
    expect(result.added).toBe(4);
    expect(result.skipped).toEqual({ busy: 1, already_on_version: 1, unknown_device: 2 });
    expect(byDevice(result.skippedDevices)).toEqual({
      'rel-mid-1': 'busy',
      'rel-new-1': 'already_on_version',
      'rel-foreign': 'unknown_device',
      'rel-ghost': 'unknown_device',
    });
    expect(result.queued).toBeUndefined();

    const task2 = await getTask(task.id);
    expect(task2.stats).toEqual({ ...ZERO_STATS, total: 4, waiting: 4 });
    // released without push: a push task stays created until it is pushed
    expect(task2.state).toBe('created');

    const list = await records(task.id, '?pageSize=100');
    expect(list.total).toBe(4);
    expect(list.items.map((r) => r.deviceId).sort()).toEqual(['rel-mid-2', 'rel-old-1', 'rel-old-2', 'rel-unreported']);
    const mid = list.items.find((r) => r.deviceId === 'rel-mid-2')!;
    expect(mid).toMatchObject({
      taskId: task.id,
      firmwareId,
      productId: PRODUCT,
      fromVersion: '1.5.0',
      targetVersion: '2.0.0',
      state: 'waiting',
      progress: 0,
      attempts: 0,
      errorReason: null,
      startedAt: null,
      completedAt: null,
    });
    expect(list.items.find((r) => r.deviceId === 'rel-unreported')!.fromVersion).toBeNull();

    // a second release of the same devices: already in the task
    const again = await release(task.id, { deviceIds: ['rel-old-1', 'rel-old-2', 'rel-new-1'] });
    expect(again.added).toBe(0);
    expect(again.skipped).toEqual({ already_in_task: 2, already_on_version: 1 });
    expect((await getTask(task.id)).stats.total).toBe(4);

    // cleanup for the next tests: free every device again
    for (const id of [task.id, other.id]) expect((await call('POST', `/api/tasks/${id}/cancel`)).statusCode).toBe(200);
  });

  it('releases to all devices of the product with fromVersions', async () => {
    const task = await newTask({ firmwareId, name: 'filtered' });
    const result = await release(task.id, { allDevices: true, fromVersions: ['1.5.0'] });
    expect(result.added).toBe(3);
    // rel-old-* and rel-unreported are filtered; rel-new-* are already on the version; rel-foreign is
    // another product's and never a candidate
    expect(result.skipped).toEqual({ version_filtered: 5, already_on_version: 2 });
    expect(byDevice(result.skippedDevices)).toEqual({
      'rel-old-1': 'version_filtered',
      'rel-old-2': 'version_filtered',
      'rel-old-3': 'version_filtered',
      'rel-old-4': 'version_filtered',
      'rel-unreported': 'version_filtered',
      'rel-new-1': 'already_on_version',
      'rel-new-2': 'already_on_version',
    });
    expect((await getTask(task.id)).stats).toEqual({ ...ZERO_STATS, total: 3, waiting: 3 });

    // now the rest: the mid devices are already in the task; everyone else is added
    const rest = await release(task.id, { allDevices: true });
    expect(rest.added).toBe(5);
    expect(rest.skipped).toEqual({ already_in_task: 3, already_on_version: 2 });
    expect((await getTask(task.id)).stats).toEqual({ ...ZERO_STATS, total: 8, waiting: 8 });

    // another task of the product now finds every device busy (or on the version)
    const other = await newTask({ firmwareId, name: 'late' });
    const late = await release(other.id, { allDevices: true });
    expect(late).toMatchObject({ added: 0, skipped: { busy: 8, already_on_version: 2 } });
    expect(late.skippedDevices).toHaveLength(10);
    expect((await getTask(other.id)).stats).toEqual(ZERO_STATS);

    expect((await call('POST', `/api/tasks/${task.id}/cancel`)).statusCode).toBe(200);
  });

  it('with push: true marks the records for push and runs the task', async () => {
    const task = await newTask({ firmwareId, name: 'pushed' });
    const result = await release(task.id, { deviceIds: ['rel-old-1', 'rel-old-2'], push: true });
    expect(result).toMatchObject({ added: 2, queued: 2, skipped: {} });
    expect((await getTask(task.id)).state).toBe('running');
    expect((await call('POST', `/api/tasks/${task.id}/cancel`)).statusCode).toBe(200);
  });

  it('refuses bad selections, unknown tasks and closed tasks', async () => {
    const task = await newTask({ firmwareId, name: 'refusals' });
    expectError(await call('POST', `/api/tasks/${task.id}/release`, {}), 400, 'validation_error');
    expectError(await call('POST', `/api/tasks/${task.id}/release`, { deviceIds: [] }), 400, 'validation_error');
    expectError(await call('POST', `/api/tasks/${task.id}/release`, { allDevices: false }), 400, 'validation_error');
    expectError(await call('POST', `/api/tasks/${task.id}/release`, { deviceIds: ['bad id with spaces'] }), 400, 'validation_error');
    expectError(await call('POST', `/api/tasks/${MISSING_UUID}/release`, { allDevices: true }), 404, 'not_found');
    expect((await call('POST', `/api/tasks/${task.id}/cancel`)).json().task.state).toBe('canceled');
    expectError(await call('POST', `/api/tasks/${task.id}/release`, { allDevices: true }), 409, 'task_closed');
    expect((await getTask(task.id)).stats).toEqual(ZERO_STATS);
  });
});

describe('push, pause and resume', () => {
  const PRODUCT = 'mode-p';
  let firmwareId: string;

  beforeAll(async () => {
    firmwareId = await createFirmware(t.app, t.auth, PRODUCT, '2.0.0', 2);
    await registerDevices(t.app, t.auth, PRODUCT, ids('mode-d', 6), '1.0.0');
  });

  it('refuses push and release with push on a pull task (409 task_mode_pull), and releases it without', async () => {
    const task = await newTask({ firmwareId, name: 'pull', mode: 'pull' });
    expectError(await call('POST', `/api/tasks/${task.id}/release`, { deviceIds: ['mode-d-1'], push: true }), 409, 'task_mode_pull');
    expect((await getTask(task.id)).stats.total).toBe(0);

    const released = await release(task.id, { deviceIds: ['mode-d-1'] });
    expect(released.added).toBe(1);
    // a pull task runs as soon as devices may ask
    expect((await getTask(task.id)).state).toBe('running');
    expectError(await call('POST', `/api/tasks/${task.id}/push`), 409, 'task_mode_pull');
    expectError(await call('POST', `/api/tasks/${task.id}/push`, { deviceIds: ['mode-d-1'] }), 409, 'task_mode_pull');
    expect((await call('POST', `/api/tasks/${task.id}/cancel`)).statusCode).toBe(200);
  });

  it('pushes the waiting records of a push task, or some devices of them', async () => {
    const task = await newTask({ firmwareId, name: 'push' });
    expect((await release(task.id, { deviceIds: ['mode-d-2', 'mode-d-3', 'mode-d-4'] })).added).toBe(3);
    const some = await call('POST', `/api/tasks/${task.id}/push`, { deviceIds: ['mode-d-2', 'mode-unknown'] });
    expect(some.statusCode, some.body).toBe(200);
    expect(some.json()).toEqual({ queued: 1 });
    expect((await getTask(task.id)).state).toBe('running');
    const rest = await call('POST', `/api/tasks/${task.id}/push`);
    expect(rest.json()).toEqual({ queued: 2 });
    expect((await call('POST', `/api/tasks/${task.id}/push`)).json()).toEqual({ queued: 0 });
    expectError(await call('POST', `/api/tasks/${MISSING_UUID}/push`), 404, 'not_found');
    expect((await call('POST', `/api/tasks/${task.id}/cancel`)).statusCode).toBe(200);
  });

  it('moves created → paused → running, a resume of a running task changes nothing', async () => {
    const task = await newTask({ firmwareId, name: 'pausing' });
    const paused = await call('POST', `/api/tasks/${task.id}/pause`);
    expect(paused.statusCode, paused.body).toBe(200);
    expect(paused.json().state).toBe('paused');
    // pausing again is harmless
    expect((await call('POST', `/api/tasks/${task.id}/pause`)).json().state).toBe('paused');

    const resumed = await call('POST', `/api/tasks/${task.id}/resume`);
    expect(resumed.statusCode, resumed.body).toBe(200);
    expect(resumed.json().state).toBe('running');

    const again = await call('POST', `/api/tasks/${task.id}/resume`);
    expect(again.statusCode).toBe(200);
    expect(again.json()).toMatchObject({ state: 'running', updatedAt: resumed.json().updatedAt });
    expect((await getTask(task.id)).state).toBe('running');

    expect((await call('POST', `/api/tasks/${task.id}/pause`)).json().state).toBe('paused');
    expect((await getTask(task.id)).state).toBe('paused');
  });

  it('refuses to resume a created task and to pause a completed or canceled one', async () => {
    const fresh = await newTask({ firmwareId, name: 'fresh' });
    expectError(await call('POST', `/api/tasks/${fresh.id}/resume`), 409, 'task_not_paused');
    expect((await getTask(fresh.id)).state).toBe('created');

    const canceled = await newTask({ firmwareId, name: 'canceled' });
    expect((await call('POST', `/api/tasks/${canceled.id}/cancel`)).json().task.state).toBe('canceled');
    expectError(await call('POST', `/api/tasks/${canceled.id}/pause`), 409, 'task_not_running');
    expectError(await call('POST', `/api/tasks/${canceled.id}/resume`), 409, 'task_not_paused');
    expect((await getTask(canceled.id)).state).toBe('canceled');

    // completed: every record final. Cancel one device's record, the only one: the task completes
    const done = await newTask({ firmwareId, name: 'done' });
    expect((await release(done.id, { deviceIds: ['mode-d-5'], push: true })).added).toBe(1);
    const cancel = await call('POST', `/api/tasks/${done.id}/cancel`, { deviceIds: ['mode-d-5'] });
    expect(cancel.statusCode, cancel.body).toBe(200);
    expect(cancel.json()).toMatchObject({ canceled: 1, task: { state: 'completed', stats: { total: 1, canceled: 1, waiting: 0 } } });
    expectError(await call('POST', `/api/tasks/${done.id}/pause`), 409, 'task_not_running');
    expect((await getTask(done.id)).state).toBe('completed');

    expectError(await call('POST', `/api/tasks/${MISSING_UUID}/pause`), 404, 'not_found');
    expectError(await call('POST', `/api/tasks/${MISSING_UUID}/resume`), 404, 'not_found');
  });
});

describe('cancel and retry', () => {
  const PRODUCT = 'cancel-p';
  let firmwareId: string;

  beforeAll(async () => {
    firmwareId = await createFirmware(t.app, t.auth, PRODUCT, '2.0.0', 2);
    await registerDevices(t.app, t.auth, PRODUCT, ids('cx', 8), '1.0.0');
  });

  it('cancels some devices only, then the whole task, then retries the canceled records', async () => {
    const task = await newTask({ firmwareId, name: 'cancel me' });
    expect((await release(task.id, { deviceIds: ids('cx', 5) })).added).toBe(5);

    const some = await call('POST', `/api/tasks/${task.id}/cancel`, { deviceIds: ['cx-1', 'cx-2', 'cx-7'] });
    expect(some.statusCode, some.body).toBe(200);
    expect(some.json().canceled).toBe(2);
    expect(some.json().task).toMatchObject({ state: 'created', stats: { ...ZERO_STATS, total: 5, waiting: 3, canceled: 2 } });
    expect((await records(task.id, '?state=canceled')).items.map((r) => r.deviceId)).toEqual(['cx-1', 'cx-2']);

    // the canceled devices are free for another task
    const other = await newTask({ firmwareId, name: 'other' });
    expect((await release(other.id, { deviceIds: ['cx-1', 'cx-3'] })).skipped).toEqual({ busy: 1 });
    expect((await call('POST', `/api/tasks/${other.id}/cancel`)).json().canceled).toBe(1);

    const all = await call('POST', `/api/tasks/${task.id}/cancel`, {});
    expect(all.statusCode, all.body).toBe(200);
    expect(all.json()).toMatchObject({ canceled: 3, task: { state: 'canceled', stats: { ...ZERO_STATS, total: 5, canceled: 5 } } });
    const canceledRecords = await records(task.id, '?state=canceled&pageSize=10');
    expect(canceledRecords.total).toBe(5);
    for (const record of canceledRecords.items) {
      expect(record.completedAt).not.toBeNull();
      const detail = (await call('GET', `/api/records/${record.id}`)).json();
      expect(detail.events.map((e: { type: string }) => e.type)).toEqual(['released', 'canceled']);
      expect(detail.events[1]).toMatchObject({ attempt: 0, message: 'canceled by an operator' });
    }
    // a canceled task cannot be canceled again
    expectError(await call('POST', `/api/tasks/${task.id}/cancel`), 409, 'task_closed');

    // retry of failed records only (the default): none
    const none = await call('POST', `/api/tasks/${task.id}/retry`);
    expect(none.statusCode, none.body).toBe(200);
    expect(none.json()).toMatchObject({ retried: 0, task: { state: 'canceled' } });

    // retry of some canceled devices, then the rest
    const one = await call('POST', `/api/tasks/${task.id}/retry`, { states: ['canceled'], deviceIds: ['cx-4'] });
    expect(one.json()).toMatchObject({ retried: 1, task: { state: 'running', stats: { ...ZERO_STATS, total: 5, waiting: 1, canceled: 4 } } });
    const retried = await call('POST', `/api/tasks/${task.id}/retry`, { states: ['canceled'] });
    expect(retried.statusCode, retried.body).toBe(200);
    expect(retried.json()).toMatchObject({ retried: 4, task: { state: 'running', stats: { ...ZERO_STATS, total: 5, waiting: 5 } } });

    const reopened = await records(task.id, '?pageSize=10');
    for (const record of reopened.items) {
      expect(record).toMatchObject({ state: 'waiting', attempts: 0, progress: 0, errorReason: null, completedAt: null });
      const detail = (await call('GET', `/api/records/${record.id}`)).json();
      expect(detail.events.map((e: { type: string }) => e.type)).toEqual(['released', 'canceled', 'retry']);
      expect(detail.events[2]).toMatchObject({ attempt: 0, message: 'reopened by an operator (was canceled)' });
    }
    expect((await call('POST', `/api/tasks/${task.id}/cancel`, { includeProcessing: true })).json().canceled).toBe(5);
  });

  it('does not reopen a record whose device is busy in another task', async () => {
    const first = await newTask({ firmwareId, name: 'first' });
    expect((await release(first.id, { deviceIds: ['cx-6'] })).added).toBe(1);
    expect((await call('POST', `/api/tasks/${first.id}/cancel`)).json().canceled).toBe(1);
    const second = await newTask({ firmwareId, name: 'second' });
    expect((await release(second.id, { deviceIds: ['cx-6'] })).added).toBe(1);

    const retry = await call('POST', `/api/tasks/${first.id}/retry`, { states: ['canceled'] });
    expect(retry.json()).toMatchObject({ retried: 0, task: { state: 'canceled', stats: { total: 1, canceled: 1, waiting: 0 } } });
  });

  it('refuses bad retry and cancel bodies and unknown tasks', async () => {
    const task = await newTask({ firmwareId, name: 'bodies' });
    expectError(await call('POST', `/api/tasks/${task.id}/retry`, { states: ['success'] }), 400, 'validation_error');
    expectError(await call('POST', `/api/tasks/${task.id}/retry`, { states: [] }), 400, 'validation_error');
    expectError(await call('POST', `/api/tasks/${task.id}/cancel`, { deviceIds: [] }), 400, 'validation_error');
    expectError(await call('POST', `/api/tasks/${MISSING_UUID}/retry`), 404, 'not_found');
    expectError(await call('POST', `/api/tasks/${MISSING_UUID}/cancel`), 404, 'not_found');
  });
});

describe('records of a task', () => {
  const PRODUCT = 'recs-p';
  let taskId: string;

  beforeAll(async () => {
    const firmwareId = await createFirmware(t.app, t.auth, PRODUCT, '2.0.0', 2);
    await registerDevices(t.app, t.auth, PRODUCT, ids('rd', 7), '1.0.0');
    taskId = (await newTask({ firmwareId, name: 'records' })).id;
    expect((await release(taskId, { allDevices: true })).added).toBe(7);
    expect((await call('POST', `/api/tasks/${taskId}/cancel`, { deviceIds: ['rd-2', 'rd-5'] })).json().canceled).toBe(2);
  });

  it('filters by state and deviceId, and pages in id order', async () => {
    const all = await records(taskId);
    expect(all).toMatchObject({ total: 7, page: 1, pageSize: 20 });
    const sortedIds = all.items.map((r) => r.id);
    expect([...sortedIds].sort((a, b) => a - b)).toEqual(sortedIds);

    const waiting = await records(taskId, '?state=waiting');
    expect(waiting.total).toBe(5);
    expect(waiting.items.every((r) => r.state === 'waiting')).toBe(true);
    expect((await records(taskId, '?state=canceled')).items.map((r) => r.deviceId).sort()).toEqual(['rd-2', 'rd-5']);
    expect((await records(taskId, '?state=success')).total).toBe(0);

    const one = await records(taskId, '?deviceId=rd-5');
    expect(one.total).toBe(1);
    expect(one.items[0]).toMatchObject({ deviceId: 'rd-5', state: 'canceled' });
    expect((await records(taskId, '?deviceId=rd-5&state=waiting')).total).toBe(0);
    expect((await records(taskId, '?deviceId=nobody')).total).toBe(0);

    const page1 = await records(taskId, '?pageSize=3');
    const page3 = await records(taskId, '?pageSize=3&page=3');
    expect(page1.items.map((r) => r.id)).toEqual(sortedIds.slice(0, 3));
    expect(page3).toMatchObject({ total: 7, page: 3, pageSize: 3 });
    expect(page3.items.map((r) => r.id)).toEqual(sortedIds.slice(6));
  });

  it('refuses a bad filter and an unknown task', async () => {
    expectError(await call('GET', `/api/tasks/${taskId}/records?state=done`), 400, 'validation_error');
    expectError(await call('GET', `/api/tasks/${taskId}/records?deviceId=has%20space`), 400, 'validation_error');
    expectError(await call('GET', `/api/tasks/${MISSING_UUID}/records`), 404, 'not_found');
  });

  it('shows one record with its events timeline', async () => {
    const record = (await records(taskId, '?deviceId=rd-2')).items[0]!;
    const response = await call('GET', `/api/records/${record.id}`);
    expect(response.statusCode, response.body).toBe(200);
    const detail = response.json();
    expect(detail).toMatchObject({ ...record, updatedAt: expect.any(String) });
    expect(detail.events).toHaveLength(2);
    expect(detail.events[0]).toEqual({ at: expect.any(String), type: 'released', attempt: 0 });
    expect(detail.events[1]).toEqual({ at: expect.any(String), type: 'canceled', attempt: 0, message: 'canceled by an operator' });
    expect(Date.parse(detail.events[1].at)).toBeGreaterThanOrEqual(Date.parse(detail.events[0].at));

    expectError(await call('GET', '/api/records/999999999'), 404, 'not_found');
    expectError(await call('GET', '/api/records/abc'), 400, 'validation_error');
    expectError(await call('GET', '/api/records/0'), 400, 'validation_error');
  });
});

describe('OpenAPI document', () => {
  it('describes every task and record route', async () => {
    const response = await t.app.inject({ method: 'GET', url: '/docs/json' });
    expect(response.statusCode).toBe(200);
    const paths = response.json().paths as Record<string, Record<string, unknown>>;
    const expected: Record<string, string[]> = {
      '/api/tasks': ['get', 'post'],
      '/api/tasks/{id}': ['delete', 'get', 'patch'],
      '/api/tasks/{id}/release': ['post'],
      '/api/tasks/{id}/push': ['post'],
      '/api/tasks/{id}/pause': ['post'],
      '/api/tasks/{id}/resume': ['post'],
      '/api/tasks/{id}/cancel': ['post'],
      '/api/tasks/{id}/retry': ['post'],
      '/api/tasks/{id}/records': ['get'],
      '/api/records/{id}': ['get'],
    };
    for (const [path, methods] of Object.entries(expected)) {
      expect(paths[path], path).toBeDefined();
      for (const method of methods) {
        const operation = paths[path]![method] as { tags?: string[]; summary?: string; responses?: Record<string, unknown> } | undefined;
        expect(operation, `${method} ${path}`).toBeDefined();
        expect(operation!.tags).toContain('tasks');
        expect(operation!.summary, `${method} ${path}`).toBeTruthy();
        expect(Object.keys(operation!.responses ?? {}), `${method} ${path}`).toContain(method === 'post' && path === '/api/tasks' ? '201' : method === 'delete' ? '204' : '200');
      }
    }
    const create = (paths['/api/tasks']!.post as { requestBody: { content: Record<string, { schema: { properties: Record<string, unknown> } }> } }).requestBody;
    expect(Object.keys(create.content['application/json']!.schema.properties)).toEqual(
      expect.arrayContaining(['firmwareId', 'name', 'mode', 'timeoutSeconds', 'responseTimeoutSeconds', 'retry', 'rollout', 'abort', 'startAt']),
    );
  });
});
