// Idempotency-Key on POST /api/tasks, /release, /push and /retry: a repeated request with the same
// key returns the first answer and does nothing twice; the same key with another body is refused,
// a repeat while the first runs is told so, a 5xx gives the key back, keys expire, and each API
// key has keys of its own. Real app (ROLE api) against its own database.
import Fastify, { type FastifyInstance, type InjectOptions, type LightMyRequestResponse } from 'fastify';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import auth from '../../api/plugins/auth.ts';
import errorHandler from '../../api/plugins/error-handler.ts';
import idempotency from '../../api/plugins/idempotency.ts';
import validation from '../../api/plugins/validation.ts';
import { IdempotencyHeaders } from '../../api/schemas/common.ts';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { createFirmware, registerDevices } from '../helpers/rollout.ts';
import { expectErrorKeys } from '../helpers/error-shape.ts';

const K1 = { authorization: 'Bearer k1' };
const K2 = { authorization: 'Bearer k2' };

let t: TestApp;
let firmwareId: string;
const PRODUCT = 'idem-p';
const devices = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${i + 1}`);

beforeAll(async () => {
  t = await buildTestApp({ API_KEYS: 'k1,k2' });
  firmwareId = await createFirmware(t.app, K1, PRODUCT, '2.0.0', 2);
});

afterAll(async () => {
  await t?.close();
});

function post(url: string, payload: unknown, key: string | undefined, headers: Record<string, string> = K1): Promise<LightMyRequestResponse> {
  const options: InjectOptions = {
    method: 'POST',
    url,
    headers: { ...headers, ...(key === undefined ? {} : { 'idempotency-key': key }) },
  };
  if (payload !== undefined) options.payload = payload as InjectOptions['payload'];
  return t.app.inject(options);
}

async function count(table: 'upgrade_tasks' | 'upgrade_records' | 'idempotency_keys', where?: { taskId: string }): Promise<number> {
  let query = t.database.db.selectFrom(table).select((eb) => eb.fn.countAll<number>().as('n'));
  if (where) query = query.where('task_id' as never, '=', where.taskId as never);
  const row = await query.executeTakeFirstOrThrow();
  return Number(row.n);
}

async function newTask(name: string): Promise<string> {
  const response = await post('/api/tasks', { firmwareId, name }, undefined);
  expect(response.statusCode, response.body).toBe(201);
  return response.json().id as string;
}

function expectReplayOf(replay: LightMyRequestResponse, first: LightMyRequestResponse): void {
  expect(first.headers['idempotency-replayed']).toBeUndefined();
  expect(replay.statusCode, replay.body).toBe(first.statusCode);
  expect(replay.headers['idempotency-replayed']).toBe('true');
  expect(String(replay.headers['content-type'])).toMatch(/^application\/json/);
  expect(replay.body).toBe(first.body);
}

function expectError(response: LightMyRequestResponse, statusCode: number, code: string): void {
  expect(response.statusCode, response.body).toBe(statusCode);
  const body = response.json() as Record<string, unknown>;
  expectErrorKeys(body);
  expect(body).toMatchObject({ statusCode, code, error: expect.any(String), message: expect.any(String) });
}

describe('POST /api/tasks with Idempotency-Key', () => {
  it('creates the task once: the repeat answers the same task and creates nothing', async () => {
    const before = await count('upgrade_tasks');
    const body = { firmwareId, name: 'created once', mode: 'push' };
    const first = await post('/api/tasks', body, 'create-1');
    expect(first.statusCode, first.body).toBe(201);
    const second = await post('/api/tasks', body, 'create-1');
    expectReplayOf(second, first);
    expect(second.json().id).toBe(first.json().id);
    expect(await count('upgrade_tasks')).toBe(before + 1);
  });

  it('treats the same body in another key order as the same request', async () => {
    const first = await post('/api/tasks', { firmwareId, name: 'ordered', timeoutSeconds: 60 }, 'create-order');
    const second = await post('/api/tasks', { timeoutSeconds: 60, name: 'ordered', firmwareId }, 'create-order');
    expectReplayOf(second, first);
  });

  it('refuses the same key with a different body: 422 idempotency_key_reused, nothing created', async () => {
    const first = await post('/api/tasks', { firmwareId, name: 'first body' }, 'create-reused');
    expect(first.statusCode).toBe(201);
    const before = await count('upgrade_tasks');
    const other = await post('/api/tasks', { firmwareId, name: 'another body' }, 'create-reused');
    expectError(other, 422, 'idempotency_key_reused');
    expect(await count('upgrade_tasks')).toBe(before);
    // the first answer is still there for a true repeat
    expectReplayOf(await post('/api/tasks', { firmwareId, name: 'first body' }, 'create-reused'), first);
  });

  it('without a key, every request acts', async () => {
    const before = await count('upgrade_tasks');
    await newTask('no key 1');
    await newTask('no key 2');
    expect(await count('upgrade_tasks')).toBe(before + 2);
  });

  it('two identical requests at once create exactly one task; the other is a replay or 409 in progress', async () => {
    const before = await count('upgrade_tasks');
    const body = { firmwareId, name: 'concurrent' };
    const answers = await Promise.all([post('/api/tasks', body, 'create-race'), post('/api/tasks', body, 'create-race')]);
    expect(await count('upgrade_tasks')).toBe(before + 1);
    const created = answers.filter((answer) => answer.statusCode === 201);
    expect(created.length, answers.map((a) => `${a.statusCode} ${a.body}`).join('\n')).toBeGreaterThanOrEqual(1);
    const original = created.find((answer) => answer.headers['idempotency-replayed'] === undefined)!;
    expect(original).toBeDefined();
    for (const answer of answers) {
      if (answer === original) continue;
      if (answer.statusCode === 409) {
        expectError(answer, 409, 'idempotency_key_in_progress');
        expect(answer.headers['retry-after']).toBe('1');
      } else {
        expectReplayOf(answer, original);
      }
    }
    // afterwards, a repeat is a replay
    expectReplayOf(await post('/api/tasks', body, 'create-race'), original);
  });

  it('many identical requests at once still create one task', async () => {
    const before = await count('upgrade_tasks');
    const body = { firmwareId, name: 'stampede' };
    const answers = await Promise.all(Array.from({ length: 10 }, () => post('/api/tasks', body, 'create-stampede')));
    expect(await count('upgrade_tasks')).toBe(before + 1);
    const ids = new Set(answers.filter((a) => a.statusCode === 201).map((a) => a.json().id as string));
    expect(ids.size).toBe(1);
    for (const answer of answers) expect([201, 409]).toContain(answer.statusCode);
  });

  it('keys are per API key: another key with the same Idempotency-Key acts on its own', async () => {
    const before = await count('upgrade_tasks');
    const body = { firmwareId, name: 'per api key' };
    const one = await post('/api/tasks', body, 'shared-key', K1);
    const two = await post('/api/tasks', body, 'shared-key', K2);
    expect(one.statusCode).toBe(201);
    expect(two.statusCode).toBe(201);
    expect(two.headers['idempotency-replayed']).toBeUndefined();
    expect(two.json().id).not.toBe(one.json().id);
    expect(await count('upgrade_tasks')).toBe(before + 2);
    // each key replays its own answer; Basic with the same key is the same identity
    expectReplayOf(await post('/api/tasks', body, 'shared-key', K2), two);
    const basic = { authorization: `Basic ${Buffer.from('anyone:k1').toString('base64')}` };
    expectReplayOf(await post('/api/tasks', body, 'shared-key', basic), one);
  });

  it('stores a hash of the API key, never the key', async () => {
    await post('/api/tasks', { firmwareId, name: 'stored' }, 'stored-key');
    const rows = await t.database.db.selectFrom('idempotency_keys').selectAll().where('idempotency_key', '=', 'stored-key').execute();
    expect(rows).toHaveLength(1);
    const row = rows[0]!;
    expect(row).toMatchObject({ method: 'POST', path: '/api/tasks', state: 'done', response_status: 201 });
    expect(row.api_key_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(row)).not.toMatch(/"k1"|Bearer/);
    expect(row.expires_at.getTime() - row.created_at.getTime()).toBeCloseTo(24 * 3600 * 1000, -4);
  });

  it('refuses a malformed key with 400 validation_error before acting', async () => {
    const before = await count('upgrade_tasks');
    for (const key of ['k'.repeat(256), 'has space', '']) {
      const response = await post('/api/tasks', { firmwareId, name: 'bad key' }, key);
      expectError(response, 400, 'validation_error');
    }
    expect(await count('upgrade_tasks')).toBe(before);
    const longest = await post('/api/tasks', { firmwareId, name: 'longest key' }, 'k'.repeat(255));
    expect(longest.statusCode, longest.body).toBe(201);
  });

  it('a body refused by validation does not take the key', async () => {
    expectError(await post('/api/tasks', { firmwareId }, 'create-after-invalid'), 400, 'validation_error');
    const valid = await post('/api/tasks', { firmwareId, name: 'valid after invalid' }, 'create-after-invalid');
    expect(valid.statusCode, valid.body).toBe(201);
    expect(valid.headers['idempotency-replayed']).toBeUndefined();
  });

  it('replays a 4xx answer of the handler too', async () => {
    const missing = '0b6c2f6e-3f4a-4c1e-9d51-7a2e5c8b9f10';
    const first = await post('/api/tasks', { firmwareId: missing, name: 'no firmware' }, 'create-404');
    expectError(first, 404, 'not_found');
    expectReplayOf(await post('/api/tasks', { firmwareId: missing, name: 'no firmware' }, 'create-404'), first);
  });

  it('an expired key acts anew', async () => {
    const body = { firmwareId, name: 'expiring' };
    const first = await post('/api/tasks', body, 'create-expired');
    await t.database.db
      .updateTable('idempotency_keys')
      .set({ expires_at: sql<Date>`now() - interval '1 second'` })
      .where('idempotency_key', '=', 'create-expired')
      .execute();
    const again = await post('/api/tasks', body, 'create-expired');
    expect(again.statusCode).toBe(201);
    expect(again.headers['idempotency-replayed']).toBeUndefined();
    expect(again.json().id).not.toBe(first.json().id);
    expectReplayOf(await post('/api/tasks', body, 'create-expired'), again);
  });

  it('the same key on another path is another request', async () => {
    const taskId = await newTask('other path');
    const created = await post('/api/tasks', { firmwareId, name: 'path scope' }, 'path-scope');
    expect(created.statusCode).toBe(201);
    const pushed = await post(`/api/tasks/${taskId}/push`, undefined, 'path-scope');
    expect(pushed.statusCode, pushed.body).toBe(200);
    expect(pushed.json()).toEqual({ queued: 0 });
  });

  it('documents the header on the four routes', async () => {
    const document = (await t.app.inject({ method: 'GET', url: '/docs/json' })).json() as {
      paths: Record<string, Record<string, { parameters?: Array<{ name: string; in: string; required?: boolean }>; responses?: Record<string, unknown> }>>;
    };
    for (const path of ['/api/tasks', '/api/tasks/{id}/release', '/api/tasks/{id}/push', '/api/tasks/{id}/retry']) {
      const operation = document.paths[path]?.post;
      const header = operation?.parameters?.find((parameter) => parameter.in === 'header' && parameter.name === 'idempotency-key');
      expect(header, path).toBeDefined();
      expect(header?.required ?? false, path).toBe(false);
      expect(operation?.responses, path).toHaveProperty('422');
    }
  });
});

describe('release, push and retry with Idempotency-Key', () => {
  it('release twice: the second replays the same `added` and adds no records', async () => {
    const ids = devices('rel', 6);
    await registerDevices(t.app, K1, PRODUCT, ids, '1.0.0');
    const taskId = await newTask('release once');
    const first = await post(`/api/tasks/${taskId}/release`, { deviceIds: ids }, 'release-1');
    expect(first.statusCode, first.body).toBe(200);
    expect(first.json().added).toBe(6);
    const second = await post(`/api/tasks/${taskId}/release`, { deviceIds: ids }, 'release-1');
    expectReplayOf(second, first);
    expect(await count('upgrade_records', { taskId })).toBe(6);
    // what a repeat without the key would have said
    const unkeyed = await post(`/api/tasks/${taskId}/release`, { deviceIds: ids }, undefined);
    expect(unkeyed.json()).toMatchObject({ added: 0, skipped: { already_in_task: 6 } });
    expect(await count('upgrade_records', { taskId })).toBe(6);
  });

  it('push twice: the second replays `queued`', async () => {
    const ids = devices('push', 4);
    await registerDevices(t.app, K1, PRODUCT, ids, '1.0.0');
    const taskId = await newTask('push once');
    expect((await post(`/api/tasks/${taskId}/release`, { deviceIds: ids }, undefined)).json().added).toBe(4);
    const first = await post(`/api/tasks/${taskId}/push`, {}, 'push-1');
    expect(first.statusCode, first.body).toBe(200);
    expect(first.json()).toEqual({ queued: 4 });
    expectReplayOf(await post(`/api/tasks/${taskId}/push`, {}, 'push-1'), first);
    // an empty body and {} are the same request (the route reads no body as {})
    expectReplayOf(await post(`/api/tasks/${taskId}/push`, undefined, 'push-1'), first);
    expect((await post(`/api/tasks/${taskId}/push`, {}, undefined)).json()).toEqual({ queued: 0 });
    expectError(await post(`/api/tasks/${taskId}/push`, { deviceIds: ['push-1'] }, 'push-1'), 422, 'idempotency_key_reused');
  });

  it('retry twice: the second replays `retried` and records are reopened once', async () => {
    const ids = devices('retry', 3);
    await registerDevices(t.app, K1, PRODUCT, ids, '1.0.0');
    const taskId = await newTask('retry once');
    expect((await post(`/api/tasks/${taskId}/release`, { deviceIds: ids }, undefined)).json().added).toBe(3);
    expect((await post(`/api/tasks/${taskId}/cancel`, {}, undefined)).json().canceled).toBe(3);

    const first = await post(`/api/tasks/${taskId}/retry`, { states: ['canceled'] }, 'retry-1');
    expect(first.statusCode, first.body).toBe(200);
    expect(first.json()).toMatchObject({ retried: 3, task: { state: 'running' } });
    expectReplayOf(await post(`/api/tasks/${taskId}/retry`, { states: ['canceled'] }, 'retry-1'), first);

    const events = await t.database.db
      .selectFrom('record_events')
      .innerJoin('upgrade_records', 'upgrade_records.id', 'record_events.record_id')
      .select(['record_events.type'])
      .where('upgrade_records.task_id', '=', taskId)
      .where('record_events.type', '=', 'retry')
      .execute();
    expect(events).toHaveLength(3);
  });

  it('release to an unknown task is answered 404, and replayed', async () => {
    const url = '/api/tasks/0b6c2f6e-3f4a-4c1e-9d51-7a2e5c8b9f10/release';
    const first = await post(url, { allDevices: true }, 'release-404');
    expectError(first, 404, 'not_found');
    expectReplayOf(await post(url, { allDevices: true }, 'release-404'), first);
  });

  it('routes that do not take the header ignore it', async () => {
    const taskId = await newTask('pause twice');
    const one = await post(`/api/tasks/${taskId}/pause`, undefined, 'pause-1');
    const two = await post(`/api/tasks/${taskId}/pause`, undefined, 'pause-1');
    expect(one.statusCode).toBe(200);
    expect(two.statusCode).toBe(200);
    expect(two.headers['idempotency-replayed']).toBeUndefined();
  });
});

// The plugin on a small app of its own, to drive what the task routes cannot: a handler that
// fails with a 5xx, one that is held in progress, and the sweep of expired keys.
describe('the idempotency plugin', () => {
  let database: TestDatabase;
  let app: FastifyInstance;
  let calls = 0;
  let failNext = false;
  let hold: Promise<void> | undefined;

  beforeAll(async () => {
    database = await createTestDatabase();
    app = Fastify();
    app.decorate('db', database.db);
    await app.register(validation);
    await app.register(errorHandler);
    await app.register(auth, { apiKeys: ['k1'] });
    await app.register(idempotency, { sweepIntervalMs: 0 });
    app.post('/act', {
      onRequest: app.authenticate,
      config: { idempotent: true },
      schema: { headers: IdempotencyHeaders, body: { type: 'object', additionalProperties: true } },
    }, async () => {
      calls += 1;
      const n = calls;
      if (hold) await hold;
      if (failNext) {
        failNext = false;
        throw new Error('boom');
      }
      return { n };
    });
    await app.ready();
  });

  afterAll(async () => {
    await app?.close();
    await database?.drop();
  });

  const act = (key: string, payload: unknown = { a: 1 }) =>
    app.inject({ method: 'POST', url: '/act', headers: { ...K1, 'idempotency-key': key }, payload: payload as InjectOptions['payload'] });

  it('a 5xx gives the key back: the retry runs the handler again', async () => {
    failNext = true;
    const before = calls;
    const failed = await act('fails-once');
    expectError(failed, 500, 'internal_error');
    expect(await database.db.selectFrom('idempotency_keys').selectAll().where('idempotency_key', '=', 'fails-once').execute()).toEqual([]);
    const retried = await act('fails-once');
    expect(retried.statusCode).toBe(200);
    expect(retried.headers['idempotency-replayed']).toBeUndefined();
    expect(calls).toBe(before + 2);
    expectReplayOf(await act('fails-once'), retried);
    expect(calls).toBe(before + 2);
  });

  it('a repeat while the first is still running: 409 idempotency_key_in_progress, then the replay', async () => {
    let release!: () => void;
    hold = new Promise<void>((resolve) => {
      release = resolve;
    });
    const first = act('held');
    // wait until the first holds the key
    for (let i = 0; i < 100; i += 1) {
      const row = await database.db.selectFrom('idempotency_keys').select('state').where('idempotency_key', '=', 'held').executeTakeFirst();
      if (row) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const during = await act('held');
    expectError(during, 409, 'idempotency_key_in_progress');
    expect(during.headers['retry-after']).toBe('1');
    // a different body is refused as reused even while the first runs
    expectError(await act('held', { a: 2 }), 422, 'idempotency_key_reused');
    hold = undefined;
    release();
    const done = await first;
    expect(done.statusCode).toBe(200);
    expectReplayOf(await act('held'), done);
  });

  it('a key left in progress by a process that died is taken over once stale', async () => {
    const answered = await act('orphan');
    await database.db
      .updateTable('idempotency_keys')
      .set({ state: 'in_progress', response_status: null, response_body: null, created_at: sql<Date>`now() - interval '11 minutes'` })
      .where('idempotency_key', '=', 'orphan')
      .execute();
    const again = await act('orphan');
    expect(again.statusCode).toBe(200);
    expect(again.headers['idempotency-replayed']).toBeUndefined();
    expect(again.body).not.toBe(answered.body);
  });

  it('sweeps expired keys while serving requests', async () => {
    await act('to-expire-1');
    await act('to-expire-2');
    await database.db
      .updateTable('idempotency_keys')
      .set({ expires_at: sql<Date>`now() - interval '1 minute'` })
      .where('idempotency_key', 'in', ['to-expire-1', 'to-expire-2'])
      .execute();
    await act('sweeper');
    let left = -1;
    for (let i = 0; i < 100 && left !== 0; i += 1) {
      const rows = await database.db.selectFrom('idempotency_keys').select('idempotency_key').where('idempotency_key', 'like', 'to-expire-%').execute();
      left = rows.length;
      if (left !== 0) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(left).toBe(0);
  });
});
