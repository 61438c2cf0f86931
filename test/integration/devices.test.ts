// The device routes against real Postgres: bulk upsert at fleet size, validation, listing,
// detail with the active upgrade, deletion rules and the device's upgrade history.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { RecordState } from '../../db/database.ts';
import { buildTestApp, type TestApp } from '../helpers/app.ts';

let t: TestApp;

beforeAll(async () => {
  t = await buildTestApp();
});

afterAll(async () => {
  await t?.close();
});

async function putDevices(devices: unknown[]) {
  return t.app.inject({ method: 'PUT', url: '/api/devices', headers: t.auth, payload: { devices } });
}

async function get(url: string) {
  return t.app.inject({ method: 'GET', url, headers: t.auth });
}

async function countDevices(): Promise<number> {
  const row = await t.database.db
    .selectFrom('devices')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** A firmware and an upgrade task of it, inserted directly; answers their ids. */
async function insertTask(productId: string, version: string, versionOrder: number) {
  const firmware = await t.database.db
    .insertInto('firmware')
    .values({ product_id: productId, name: `fw ${version}`, version, version_order: versionOrder, properties: '{}' })
    .returning('id')
    .executeTakeFirstOrThrow();
  const task = await t.database.db
    .insertInto('upgrade_tasks')
    .values({
      firmware_id: firmware.id,
      product_id: productId,
      firmware_version: version,
      name: `to ${version}`,
      mode: 'push',
      timeout_seconds: 600,
      retry: JSON.stringify({ maxAttempts: 1, backoffSeconds: 30, on: ['timeout'] }),
      rollout: '{}',
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return { firmwareId: firmware.id, taskId: task.id };
}

async function insertRecord(
  task: { firmwareId: string; taskId: string },
  deviceId: string,
  productId: string,
  targetVersion: string,
  state: RecordState,
) {
  return t.database.db
    .insertInto('upgrade_records')
    .values({
      task_id: task.taskId,
      firmware_id: task.firmwareId,
      device_id: deviceId,
      product_id: productId,
      from_version: '1.0.0',
      target_version: targetVersion,
      state,
      progress: state === 'success' ? 100 : 0,
      attempts: state === 'waiting' ? 0 : 1,
      error_reason: state === 'failed' ? 'timeout' : null,
      started_at: state === 'waiting' ? null : new Date(),
      completed_at: state === 'success' || state === 'failed' ? new Date() : null,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

describe('PUT /api/devices', () => {
  it('upserts 10,000 devices with one INSERT statement', async () => {
    const devices = Array.from({ length: 10_000 }, (_, i) => ({
      id: `bulk-${String(i).padStart(5, '0')}`,
      productId: i % 2 === 0 ? 'bulk-even' : 'bulk-odd',
      name: `Device ${i}`,
      ...(i % 3 === 0 ? { firmwareVersion: '1.0.0' } : {}),
    }));

    // every statement kysely runs goes through a pooled pg.Client
    const query = vi.spyOn(pg.Client.prototype, 'query');
    const started = performance.now();
    const response = await putDevices(devices);
    const elapsed = performance.now() - started;
    const inserts = query.mock.calls.filter(([text]) => typeof text === 'string' && /^\s*insert\b/i.test(text));
    query.mockRestore();
    process.stdout.write(`upsert of 10,000 devices: ${elapsed.toFixed(0)} ms\n`);

    expect(response.statusCode, response.body).toBe(200);
    expect(response.json()).toEqual({ upserted: 10_000 });
    expect(inserts).toHaveLength(1);
    expect(await countDevices()).toBe(10_000);

    const rows = await t.database.db
      .selectFrom('devices')
      .selectAll()
      .where('id', 'in', ['bulk-00000', 'bulk-00001', 'bulk-09999'])
      .orderBy('id')
      .execute();
    expect(rows.map((row) => [row.id, row.product_id, row.name, row.firmware_version])).toEqual([
      ['bulk-00000', 'bulk-even', 'Device 0', '1.0.0'],
      ['bulk-00001', 'bulk-odd', 'Device 1', null],
      ['bulk-09999', 'bulk-odd', 'Device 9999', '1.0.0'],
    ]);
    expect(rows[0]!.firmware_reported_at).toBeInstanceOf(Date);
    expect(rows[1]!.firmware_reported_at).toBeNull();
  });

  it('updates on re-upsert, keeping name and firmware version when omitted', async () => {
    const first = await putDevices([{ id: 'keep-1', productId: 'p-keep', name: 'Pump', firmwareVersion: '1.0.0' }]);
    expect(first.statusCode).toBe(200);
    const before = await t.database.db.selectFrom('devices').selectAll().where('id', '=', 'keep-1').executeTakeFirstOrThrow();

    const second = await putDevices([{ id: 'keep-1', productId: 'p-keep-2' }]);
    expect(second.statusCode).toBe(200);
    expect(second.json()).toEqual({ upserted: 1 });
    const after = await t.database.db.selectFrom('devices').selectAll().where('id', '=', 'keep-1').executeTakeFirstOrThrow();
    expect(after.product_id).toBe('p-keep-2');
    expect(after.name).toBe('Pump');
    expect(after.firmware_version).toBe('1.0.0');
    expect(after.firmware_reported_at).toEqual(before.firmware_reported_at);
    expect(after.created_at).toEqual(before.created_at);
    expect(after.updated_at.getTime()).toBeGreaterThan(before.updated_at.getTime());

    const third = await putDevices([{ id: 'keep-1', productId: 'p-keep-2', name: 'Valve', firmwareVersion: '2.0.0' }]);
    expect(third.statusCode).toBe(200);
    const updated = await t.database.db.selectFrom('devices').selectAll().where('id', '=', 'keep-1').executeTakeFirstOrThrow();
    expect(updated.name).toBe('Valve');
    expect(updated.firmware_version).toBe('2.0.0');
    expect(updated.firmware_reported_at!.getTime()).toBeGreaterThan(before.firmware_reported_at!.getTime());
  });

  it('takes the last entry of a device listed twice in one call', async () => {
    const response = await putDevices([
      { id: 'dup-1', productId: 'p-dup', name: 'first', firmwareVersion: '1.0.0' },
      { id: 'dup-2', productId: 'p-dup' },
      { id: 'dup-1', productId: 'p-dup-b', name: 'last' },
    ]);
    expect(response.statusCode, response.body).toBe(200);
    expect(response.json()).toEqual({ upserted: 2 });
    const row = await t.database.db.selectFrom('devices').selectAll().where('id', '=', 'dup-1').executeTakeFirstOrThrow();
    expect(row.product_id).toBe('p-dup-b');
    expect(row.name).toBe('last');
    // the last entry omitted the version and the device is new: nothing to keep
    expect(row.firmware_version).toBeNull();
  });

  it('refuses more than 10,000 devices and writes nothing', async () => {
    const before = await countDevices();
    const devices = Array.from({ length: 10_001 }, (_, i) => ({ id: `over-${i}`, productId: 'p-over' }));
    const response = await putDevices(devices);
    expect(response.statusCode).toBe(400);
    expect(response.json()).toMatchObject({ statusCode: 400, code: 'validation_error' });
    expect(response.json().message).toContain('devices');
    expect(await countDevices()).toBe(before);
  });

  it('refuses an empty list', async () => {
    const response = await putDevices([]);
    expect(response.statusCode).toBe(400);
    expect(response.json().code).toBe('validation_error');
  });

  it.each([
    ['a space', 'bad id'],
    ['a slash', 'bad/id'],
    ['a non-ASCII letter', 'gerät-1'],
    ['65 characters', 'x'.repeat(65)],
    ['nothing', ''],
  ])('refuses a device id with %s and writes nothing', async (_what, badId) => {
    const before = await countDevices();
    const response = await putDevices([
      { id: 'valid-neighbour', productId: 'p-valid' },
      { id: badId, productId: 'p-valid' },
    ]);
    expect(response.statusCode).toBe(400);
    const body = response.json();
    expect(body).toMatchObject({ statusCode: 400, code: 'validation_error', error: 'Bad Request' });
    expect(body.message).toContain('devices/1/id');
    expect(await countDevices()).toBe(before);
    expect((await get('/api/devices/valid-neighbour')).statusCode).toBe(404);
  });

  it('refuses a bad product id, an over-long name or version, and a missing product id', async () => {
    const cases: Array<[unknown, string]> = [
      [{ id: 'ok-1', productId: 'p q' }, 'productId'],
      [{ id: 'ok-1', productId: 'p', name: 'n'.repeat(129) }, 'name'],
      [{ id: 'ok-1', productId: 'p', firmwareVersion: 'v'.repeat(65) }, 'firmwareVersion'],
      [{ id: 'ok-1' }, 'productId'],
      [{ id: 'ok-1', productId: 'p', name: 42 }, 'name'],
    ];
    const before = await countDevices();
    for (const [device, field] of cases) {
      const response = await putDevices([device]);
      expect(response.statusCode, JSON.stringify(device)).toBe(400);
      expect(response.json().code).toBe('validation_error');
      expect(response.json().message).toContain(field);
    }
    expect(await countDevices()).toBe(before);
  });

  it('accepts the edges: 64-character ids of every allowed character, a 128-character name', async () => {
    const id = ('Az09_-.:'.repeat(8)).slice(0, 64);
    const response = await putDevices([{ id, productId: 'P_1-a.b:c', name: 'n'.repeat(128), firmwareVersion: 'v'.repeat(64) }]);
    expect(response.statusCode, response.body).toBe(200);
    const device = await get(`/api/devices/${encodeURIComponent(id)}`);
    expect(device.statusCode).toBe(200);
    expect(device.json()).toMatchObject({ id, productId: 'P_1-a.b:c', name: 'n'.repeat(128) });
  });

  it('needs the API key', async () => {
    const response = await t.app.inject({ method: 'PUT', url: '/api/devices', payload: { devices: [{ id: 'x', productId: 'p' }] } });
    expect(response.statusCode).toBe(401);
  });
});

describe('GET /api/devices', () => {
  beforeAll(async () => {
    const devices = [
      { id: 'list-01', productId: 'p-list', firmwareVersion: '1.0.0' },
      { id: 'list-02', productId: 'p-list', firmwareVersion: '2.0.0-list' },
      { id: 'list-03', productId: 'p-list', firmwareVersion: '1.0.0' },
      { id: 'list-04', productId: 'p-list' },
      { id: 'list-05', productId: 'p-list', firmwareVersion: '1.0.0' },
      { id: 'list-06', productId: 'p-list-other', firmwareVersion: '1.0.0' },
    ];
    expect((await putDevices(devices)).statusCode).toBe(200);
  });

  it('filters by product and orders by id', async () => {
    const response = await get('/api/devices?productId=p-list');
    expect(response.statusCode).toBe(200);
    const body = response.json();
    expect(body.total).toBe(5);
    expect(body.page).toBe(1);
    expect(body.pageSize).toBe(20);
    expect(body.items.map((d: { id: string }) => d.id)).toEqual(['list-01', 'list-02', 'list-03', 'list-04', 'list-05']);
    expect(body.items[3]).toEqual({
      id: 'list-04',
      productId: 'p-list',
      name: null,
      firmwareVersion: null,
      firmwareProperties: null,
      firmwareReportedAt: null,
      gatewayId: null,
      tags: {},
      createdAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      updatedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    });
    expect(body.items[0].firmwareReportedAt).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  it('filters by product and firmware version together', async () => {
    const body = (await get('/api/devices?productId=p-list&firmwareVersion=1.0.0')).json();
    expect(body.total).toBe(3);
    expect(body.items.map((d: { id: string }) => d.id)).toEqual(['list-01', 'list-03', 'list-05']);
  });

  it('filters by firmware version alone', async () => {
    const body = (await get('/api/devices?firmwareVersion=2.0.0-list')).json();
    expect(body.items.map((d: { id: string }) => d.id)).toEqual(['list-02']);
    expect(body.total).toBe(1);
  });

  it('pages', async () => {
    const second = (await get('/api/devices?productId=p-list&page=2&pageSize=2')).json();
    expect(second).toMatchObject({ total: 5, page: 2, pageSize: 2 });
    expect(second.items.map((d: { id: string }) => d.id)).toEqual(['list-03', 'list-04']);
    const past = (await get('/api/devices?productId=p-list&page=4&pageSize=2')).json();
    expect(past).toMatchObject({ items: [], total: 5, page: 4, pageSize: 2 });
  });

  it('counts the whole fleet and defaults the page size', async () => {
    const body = (await get('/api/devices?productId=bulk-even')).json();
    expect(body.total).toBe(5_000);
    expect(body.items).toHaveLength(20);
    expect(body.items[0].id).toBe('bulk-00000');
  });

  it('refuses a page size over 500 and a bad filter', async () => {
    const big = await get('/api/devices?pageSize=501');
    expect(big.statusCode).toBe(400);
    expect(big.json().code).toBe('validation_error');
    expect(big.json().message).toContain('pageSize');
    const bad = await get('/api/devices?productId=bad%20id');
    expect(bad.statusCode).toBe(400);
    expect(bad.json().message).toContain('productId');
  });
});

describe('GET and DELETE /api/devices/{id}, GET /api/devices/{id}/records', () => {
  let task1: { firmwareId: string; taskId: string };
  let task2: { firmwareId: string; taskId: string };
  let task3: { firmwareId: string; taskId: string };

  beforeAll(async () => {
    expect((await putDevices([
      { id: 'idle-1', productId: 'p-rec', name: 'idle', firmwareVersion: '1.0.0' },
      { id: 'busy-1', productId: 'p-rec', name: 'busy', firmwareVersion: '1.0.0' },
      { id: 'hist-1', productId: 'p-rec' },
    ])).statusCode).toBe(200);
    task1 = await insertTask('p-rec', '2.0.0', 2);
    task2 = await insertTask('p-rec', '3.0.0', 3);
    task3 = await insertTask('p-rec', '4.0.0', 4);
  });

  it('shows a device without an active upgrade', async () => {
    await t.database.db.updateTable('devices')
      .set({ firmware_properties: JSON.stringify({ board: 'rev-b', slots: 2 }) })
      .where('id', '=', 'idle-1')
      .execute();
    await insertRecord(task1, 'idle-1', 'p-rec', '2.0.0', 'failed');
    const response = await get('/api/devices/idle-1');
    expect(response.statusCode).toBe(200);
    expect(response.json()).toMatchObject({
      id: 'idle-1',
      productId: 'p-rec',
      name: 'idle',
      firmwareVersion: '1.0.0',
      firmwareProperties: { board: 'rev-b', slots: 2 },
      activeRecord: null,
    });
    expect(response.json().firmwareReportedAt).toMatch(/^\d{4}-\d\d-\d\dT.*Z$/);
  });

  it('shows a device with its active upgrade record', async () => {
    const record = await insertRecord(task2, 'busy-1', 'p-rec', '3.0.0', 'processing');
    const response = await get('/api/devices/busy-1');
    expect(response.statusCode).toBe(200);
    expect(response.json().activeRecord).toEqual({
      id: record.id,
      taskId: task2.taskId,
      firmwareId: task2.firmwareId,
      deviceId: 'busy-1',
      productId: 'p-rec',
      fromVersion: '1.0.0',
      targetVersion: '3.0.0',
      state: 'processing',
      progress: 0,
      attempts: 1,
      wave: null,
      errorReason: null,
      ignoredEvents: 0,
      createdAt: record.created_at.toISOString(),
      startedAt: record.started_at!.toISOString(),
      completedAt: null,
      updatedAt: record.updated_at.toISOString(),
    });
    expect(typeof response.json().activeRecord.id).toBe('number');
  });

  it('answers 404 not_found for an unknown device, 400 for a malformed id', async () => {
    const missing = await get('/api/devices/nobody');
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toEqual({ statusCode: 404, code: 'not_found', error: 'Not Found', message: 'device nobody not found' });
    const malformed = await get(`/api/devices/${'x'.repeat(65)}`);
    expect(malformed.statusCode).toBe(400);
    expect(malformed.json().code).toBe('validation_error');
  });

  it('lists a device\'s records newest first, paged', async () => {
    const old = await insertRecord(task1, 'hist-1', 'p-rec', '2.0.0', 'success');
    const middle = await insertRecord(task2, 'hist-1', 'p-rec', '3.0.0', 'failed');
    const newest = await insertRecord(task3, 'hist-1', 'p-rec', '4.0.0', 'waiting');

    const all = await get('/api/devices/hist-1/records');
    expect(all.statusCode).toBe(200);
    const body = all.json();
    expect(body).toMatchObject({ total: 3, page: 1, pageSize: 20 });
    expect(body.items.map((r: { id: number }) => r.id)).toEqual([newest.id, middle.id, old.id]);
    expect(body.items.map((r: { state: string }) => r.state)).toEqual(['waiting', 'failed', 'success']);
    expect(body.items[1]).toMatchObject({ taskId: task2.taskId, errorReason: 'timeout', targetVersion: '3.0.0' });
    expect(body.items[2]).toMatchObject({ progress: 100, completedAt: old.completed_at!.toISOString() });

    const second = (await get('/api/devices/hist-1/records?page=2&pageSize=2')).json();
    expect(second).toMatchObject({ total: 3, page: 2, pageSize: 2 });
    expect(second.items.map((r: { id: number }) => r.id)).toEqual([old.id]);

    const none = (await get('/api/devices/list-04/records')).json();
    expect(none).toEqual({ items: [], total: 0, page: 1, pageSize: 20 });
  });

  it('answers 404 for the records of an unknown device', async () => {
    const response = await get('/api/devices/nobody/records');
    expect(response.statusCode).toBe(404);
    expect(response.json().code).toBe('not_found');
  });

  it('refuses to delete a device with an active upgrade (409 device_busy), then deletes it once canceled', async () => {
    const busy = await t.app.inject({ method: 'DELETE', url: '/api/devices/busy-1', headers: t.auth });
    expect(busy.statusCode).toBe(409);
    expect(busy.json()).toMatchObject({ statusCode: 409, code: 'device_busy', error: 'Conflict' });
    expect((await get('/api/devices/busy-1')).statusCode).toBe(200);

    await t.database.db.updateTable('upgrade_records').set({ state: 'canceled' }).where('device_id', '=', 'busy-1').execute();
    const deleted = await t.app.inject({ method: 'DELETE', url: '/api/devices/busy-1', headers: t.auth });
    expect(deleted.statusCode).toBe(204);
    expect(deleted.body).toBe('');
    expect((await get('/api/devices/busy-1')).statusCode).toBe(404);
    // its finished records remain in their task's history
    const kept = await t.database.db.selectFrom('upgrade_records').select('id').where('device_id', '=', 'busy-1').execute();
    expect(kept).toHaveLength(1);
  });

  it('deletes an idle device (204) and answers 404 for an unknown one', async () => {
    const deleted = await t.app.inject({ method: 'DELETE', url: '/api/devices/idle-1', headers: t.auth });
    expect(deleted.statusCode).toBe(204);
    const gone = await t.database.db.selectFrom('devices').select('id').where('id', '=', 'idle-1').executeTakeFirst();
    expect(gone).toBeUndefined();

    const again = await t.app.inject({ method: 'DELETE', url: '/api/devices/idle-1', headers: t.auth });
    expect(again.statusCode).toBe(404);
    expect(again.json().code).toBe('not_found');
  });
});

describe('OpenAPI', () => {
  it('describes every device route under the devices tag', async () => {
    const response = await t.app.inject({ method: 'GET', url: '/docs/json' });
    expect(response.statusCode).toBe(200);
    const paths = response.json().paths as Record<string, Record<string, { tags?: string[]; summary?: string }>>;
    const routes = [
      ['/api/devices', 'put'],
      ['/api/devices', 'get'],
      ['/api/devices/{id}', 'get'],
      ['/api/devices/{id}', 'delete'],
      ['/api/devices/{id}/records', 'get'],
    ] as const;
    for (const [path, method] of routes) {
      const operation = paths[path]?.[method];
      expect(operation, `${method} ${path}`).toBeDefined();
      expect(operation!.tags).toEqual(['devices']);
      expect(operation!.summary).toBeTruthy();
    }
  });
});
