// Optimistic concurrency on firmware and tasks: `revision` in the JSON and the ETag, If-Match on
// PATCH and DELETE (stale → 412 precondition_failed, current or `*` passes, none works as before),
// and of many concurrent PATCHes made with one ETag exactly one wins.
import type { InjectOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { expectErrorKeys } from '../helpers/error-shape.ts';
import { createFirmware, registerDevices } from '../helpers/rollout.ts';

const MISSING_UUID = '0b6c2f6e-3f4a-4c1e-9d51-7a2e5c8b9f10';
const CONCURRENT = 20;

let t: TestApp;
let nextOrder = 10;

beforeAll(async () => {
  t = await buildTestApp();
});

afterAll(async () => {
  await t?.close();
});

async function call(method: InjectOptions['method'], url: string, options: { payload?: unknown; ifMatch?: string } = {}) {
  return t.app.inject({
    method,
    url,
    headers: { ...t.auth, ...(options.ifMatch === undefined ? {} : { 'if-match': options.ifMatch }) },
    ...(options.payload === undefined ? {} : { payload: options.payload as InjectOptions['payload'] }),
  });
}

function expect412(response: Awaited<ReturnType<typeof call>>): void {
  expect(response.statusCode, response.body).toBe(412);
  const body = response.json() as Record<string, unknown>;
  expect(body.code).toBe('precondition_failed');
  expect(body.statusCode).toBe(412);
  expectErrorKeys(body);
}

async function newFirmware(): Promise<{ id: string; etag: string; revision: number }> {
  const order = nextOrder++;
  const response = await call('POST', '/api/firmware', {
    payload: { productId: 'prod-oc', name: 'fw', version: `3.0.${order}`, versionOrder: order },
  });
  expect(response.statusCode, response.body).toBe(201);
  const body = response.json() as { id: string; revision: number };
  return { id: body.id, etag: response.headers.etag as string, revision: body.revision };
}

async function newTask(productId = 'prod-oc-task'): Promise<{ id: string; etag: string; revision: number }> {
  const firmwareId = await createFirmware(t.app, t.auth, productId, `4.0.${nextOrder}`, nextOrder++);
  const response = await call('POST', '/api/tasks', { payload: { firmwareId, name: 'oc task' } });
  expect(response.statusCode, response.body).toBe(201);
  const body = response.json() as { id: string; revision: number };
  return { id: body.id, etag: response.headers.etag as string, revision: body.revision };
}

async function read(kind: 'firmware' | 'tasks', id: string): Promise<{ etag: string; body: Record<string, unknown> }> {
  const response = await call('GET', `/api/${kind}/${id}`);
  expect(response.statusCode, response.body).toBe(200);
  return { etag: response.headers.etag as string, body: response.json() };
}

describe('firmware', () => {
  it('starts at revision 1 with the ETag "1" on POST and GET', async () => {
    const created = await newFirmware();
    expect(created.revision).toBe(1);
    expect(created.etag).toBe('"1"');
    const got = await read('firmware', created.id);
    expect(got.etag).toBe('"1"');
    expect(got.body.revision).toBe(1);
  });

  it('PATCH with the current ETag passes, raises the revision by one, and GET shows the new ETag', async () => {
    const created = await newFirmware();
    const patched = await call('PATCH', `/api/firmware/${created.id}`, { payload: { name: 'renamed' }, ifMatch: created.etag });
    expect(patched.statusCode, patched.body).toBe(200);
    expect(patched.json().revision).toBe(2);
    expect(patched.headers.etag).toBe('"2"');
    expect((await read('firmware', created.id)).etag).toBe('"2"');
    // a frozen column (checked under the row lock) too
    const again = await call('PATCH', `/api/firmware/${created.id}`, { payload: { version: '9.9.9' }, ifMatch: '"2"' });
    expect(again.statusCode, again.body).toBe(200);
    expect(again.json().revision).toBe(3);
    expect(again.headers.etag).toBe('"3"');
  });

  it('PATCH with a stale ETag → 412 and nothing written, on either update path', async () => {
    const created = await newFirmware();
    expect((await call('PATCH', `/api/firmware/${created.id}`, { payload: { name: 'first' }, ifMatch: created.etag })).statusCode).toBe(200);
    expect412(await call('PATCH', `/api/firmware/${created.id}`, { payload: { name: 'second' }, ifMatch: created.etag }));
    expect412(await call('PATCH', `/api/firmware/${created.id}`, { payload: { version: '8.8.8' }, ifMatch: created.etag }));
    const got = await read('firmware', created.id);
    expect(got.body).toMatchObject({ name: 'first', revision: 2 });
    expect(got.etag).toBe('"2"');
  });

  it('without If-Match, or with `*`, PATCH works as before and still raises the revision', async () => {
    const created = await newFirmware();
    const plain = await call('PATCH', `/api/firmware/${created.id}`, { payload: { name: 'a' } });
    expect(plain.statusCode, plain.body).toBe(200);
    expect(plain.json().revision).toBe(2);
    const star = await call('PATCH', `/api/firmware/${created.id}`, { payload: { name: 'b' }, ifMatch: '*' });
    expect(star.statusCode, star.body).toBe(200);
    expect(star.json().revision).toBe(3);
  });

  it('compares strongly: a weak tag never matches; a list with the current tag does', async () => {
    const created = await newFirmware();
    expect412(await call('PATCH', `/api/firmware/${created.id}`, { payload: { name: 'weak' }, ifMatch: `W/${created.etag}` }));
    const listed = await call('PATCH', `/api/firmware/${created.id}`, { payload: { name: 'listed' }, ifMatch: `"7", ${created.etag}` });
    expect(listed.statusCode, listed.body).toBe(200);
  });

  it('refuses a malformed If-Match with 400 rather than treating it as a mismatch', async () => {
    const created = await newFirmware();
    const response = await call('PATCH', `/api/firmware/${created.id}`, { payload: { name: 'x' }, ifMatch: '1' });
    expect(response.statusCode, response.body).toBe(400);
    expect(response.json().code).toBe('validation_error');
  });

  it('DELETE with a stale ETag → 412 and the firmware stays; with the current one it is deleted', async () => {
    const created = await newFirmware();
    await call('PATCH', `/api/firmware/${created.id}`, { payload: { name: 'moved on' } });
    expect412(await call('DELETE', `/api/firmware/${created.id}`, { ifMatch: created.etag }));
    expect((await call('GET', `/api/firmware/${created.id}`)).statusCode).toBe(200);
    const deleted = await call('DELETE', `/api/firmware/${created.id}`, { ifMatch: '"2"' });
    expect(deleted.statusCode, deleted.body).toBe(204);
    expect((await call('GET', `/api/firmware/${created.id}`)).statusCode).toBe(404);
  });

  it('a missing firmware is 404 whatever the If-Match', async () => {
    expect((await call('PATCH', `/api/firmware/${MISSING_UUID}`, { payload: { name: 'x' }, ifMatch: '"1"' })).statusCode).toBe(404);
    expect((await call('DELETE', `/api/firmware/${MISSING_UUID}`, { ifMatch: '"1"' })).statusCode).toBe(404);
  });

  it.each([
    ['a free column', { name: 'racer' }],
    ['a frozen column', { version: '7.7.7' }],
  ])(`${CONCURRENT} concurrent PATCHes of %s with one ETag: exactly one wins`, async (_label, payload) => {
    const created = await newFirmware();
    const responses = await Promise.all(Array.from({ length: CONCURRENT }, (_, i) =>
      call('PATCH', `/api/firmware/${created.id}`, { payload: { ...payload, description: `writer ${i}` }, ifMatch: created.etag })));
    const statuses = responses.map((response) => response.statusCode);
    expect(statuses.filter((status) => status === 200)).toHaveLength(1);
    expect(statuses.filter((status) => status === 412)).toHaveLength(CONCURRENT - 1);
    const winner = responses.find((response) => response.statusCode === 200)!;
    const got = await read('firmware', created.id);
    expect(got.body.revision).toBe(2);
    expect(got.body.description).toBe(winner.json().description);
    expect(got.etag).toBe(winner.headers.etag);
  });
});

describe('tasks', () => {
  it('starts at revision 1 with the ETag on POST and GET', async () => {
    const created = await newTask();
    expect(created.revision).toBe(1);
    expect(created.etag).toBe('"1"');
    expect((await read('tasks', created.id)).etag).toBe('"1"');
  });

  it('PATCH with the current ETag passes and GET shows the new ETag; a stale one → 412 and nothing written', async () => {
    const created = await newTask();
    const patched = await call('PATCH', `/api/tasks/${created.id}`, { payload: { name: 'renamed' }, ifMatch: created.etag });
    expect(patched.statusCode, patched.body).toBe(200);
    expect(patched.json().revision).toBe(2);
    expect(patched.headers.etag).toBe('"2"');
    expect((await read('tasks', created.id)).etag).toBe('"2"');

    expect412(await call('PATCH', `/api/tasks/${created.id}`, { payload: { rollout: { maxPerMinute: 5 } }, ifMatch: created.etag }));
    const got = await read('tasks', created.id);
    expect(got.body).toMatchObject({ name: 'renamed', rollout: {}, revision: 2 });
  });

  it('without If-Match, or with `*`, PATCH works as before', async () => {
    const created = await newTask();
    expect((await call('PATCH', `/api/tasks/${created.id}`, { payload: { name: 'a' } })).json().revision).toBe(2);
    expect((await call('PATCH', `/api/tasks/${created.id}`, { payload: { name: 'b' }, ifMatch: '*' })).json().revision).toBe(3);
  });

  it('a state change raises the revision; record counters moving (a release) do not', async () => {
    const productId = 'prod-oc-release';
    await registerDevices(t.app, t.auth, productId, ['oc-d1', 'oc-d2', 'oc-d3']);
    const created = await newTask(productId);
    const released = await call('POST', `/api/tasks/${created.id}/release`, { payload: { allDevices: true } });
    expect(released.statusCode, released.body).toBe(200);
    expect(released.json().added).toBe(3);
    const afterRelease = await read('tasks', created.id);
    expect(afterRelease.body).toMatchObject({ revision: 1, stats: { total: 3, waiting: 3 } });
    expect(afterRelease.etag).toBe(created.etag);

    const paused = await call('POST', `/api/tasks/${created.id}/pause`);
    expect(paused.statusCode, paused.body).toBe(200);
    expect(paused.json()).toMatchObject({ state: 'paused', revision: 2 });
    // the operator who read the task before the pause cannot change it unawares
    expect412(await call('PATCH', `/api/tasks/${created.id}`, { payload: { name: 'x' }, ifMatch: created.etag }));

    // a task with active records: a current ETag gets past the check to the 409, a stale one does not
    expect412(await call('DELETE', `/api/tasks/${created.id}`, { ifMatch: created.etag }));
    const active = await call('DELETE', `/api/tasks/${created.id}`, { ifMatch: '"2"' });
    expect(active.statusCode, active.body).toBe(409);
    expect(active.json().code).toBe('task_active');
  });

  it('DELETE with a stale ETag → 412 and the task stays; with the current one it is deleted', async () => {
    const created = await newTask();
    await call('PATCH', `/api/tasks/${created.id}`, { payload: { name: 'moved on' } });
    expect412(await call('DELETE', `/api/tasks/${created.id}`, { ifMatch: created.etag }));
    expect((await call('GET', `/api/tasks/${created.id}`)).statusCode).toBe(200);
    const deleted = await call('DELETE', `/api/tasks/${created.id}`, { ifMatch: '"2"' });
    expect(deleted.statusCode, deleted.body).toBe(204);
    expect((await call('GET', `/api/tasks/${created.id}`)).statusCode).toBe(404);
  });

  it('a missing task is 404 whatever the If-Match', async () => {
    expect((await call('PATCH', `/api/tasks/${MISSING_UUID}`, { payload: { name: 'x' }, ifMatch: '"1"' })).statusCode).toBe(404);
    expect((await call('DELETE', `/api/tasks/${MISSING_UUID}`, { ifMatch: '"1"' })).statusCode).toBe(404);
  });

  it(`${CONCURRENT} concurrent PATCHes with one ETag: exactly one wins, the others get 412`, async () => {
    const created = await newTask();
    const responses = await Promise.all(Array.from({ length: CONCURRENT }, (_, i) =>
      call('PATCH', `/api/tasks/${created.id}`, { payload: { name: `writer ${i}` }, ifMatch: created.etag })));
    const statuses = responses.map((response) => response.statusCode);
    expect(statuses.filter((status) => status === 200)).toHaveLength(1);
    expect(statuses.filter((status) => status === 412)).toHaveLength(CONCURRENT - 1);
    const winner = responses.find((response) => response.statusCode === 200)!;
    const got = await read('tasks', created.id);
    expect(got.body).toMatchObject({ revision: 2, name: winner.json().name });
    expect(got.etag).toBe(winner.headers.etag);
  });
});

describe('OpenAPI', () => {
  it('declares the if-match header and the 412 answer on PATCH and DELETE of firmware and tasks', async () => {
    const document = (await t.app.inject({ method: 'GET', url: '/docs/json' })).json() as {
      paths: Record<string, Record<string, { parameters?: Array<{ in: string; name: string }>; responses: Record<string, unknown> }>>;
    };
    for (const path of ['/api/firmware/{id}', '/api/tasks/{id}']) {
      for (const method of ['patch', 'delete']) {
        const operation = document.paths[path]?.[method];
        expect(operation, `${method} ${path}`).toBeDefined();
        expect(operation!.parameters?.some((parameter) => parameter.in === 'header' && parameter.name === 'if-match'), `${method} ${path}`).toBe(true);
        expect(operation!.responses['412'], `${method} ${path}`).toBeDefined();
      }
    }
  });
});
