// Roles (docs/operations.md#roles): `key:role` in API_KEYS. A viewer reads and is refused every other
// method, on every route of the OpenAPI document, with 403 `forbidden`; an operator may do all but
// bull-board's write actions; only an admin reads the audit log or writes through bull-board.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { TEST_API_KEY } from '../helpers/env.ts';

const OPERATOR = 'operator-key-abcdefghij';
const VIEWER = 'viewer-key-abcdefghij';
const as = (key: string) => ({ authorization: `Bearer ${key}` });

describe('roles', () => {
  let t: TestApp;

  beforeAll(async () => {
    t = await buildTestApp({ API_KEYS: `${TEST_API_KEY}, ${OPERATOR}:operator ,${VIEWER}:viewer` });
  });

  afterAll(async () => {
    await t?.close();
  });

  it('refuses a viewer every write route of the API with 403 forbidden, before reading its body', async () => {
    const document = (await t.app.inject({ url: '/docs/json' })).json() as { paths: Record<string, Record<string, unknown>> };
    const writes: Array<[string, string]> = [];
    for (const [path, operations] of Object.entries(document.paths)) {
      for (const method of Object.keys(operations)) {
        if (['post', 'put', 'patch', 'delete'].includes(method)) writes.push([method.toUpperCase(), path]);
      }
    }
    expect(writes.length).toBeGreaterThanOrEqual(15);
    for (const [method, path] of writes) {
      const url = path.replace(/\{[^}]+\}/g, '00000000-0000-4000-8000-000000000000');
      const response = await t.app.inject({ method: method as 'POST', url, headers: { ...as(VIEWER), 'content-type': 'application/json' }, payload: '{}' });
      expect(response.statusCode, `${method} ${path}: ${response.body}`).toBe(403);
      expect(response.json().code).toBe('forbidden');
    }
  });

  it('lets a viewer read: the API, /metrics and bull-board (read-only), but not the audit log', async () => {
    expect((await t.app.inject({ url: '/api/firmware', headers: as(VIEWER) })).statusCode).toBe(200);
    expect((await t.app.inject({ url: '/api/devices', headers: as(VIEWER) })).statusCode).toBe(200);
    expect((await t.app.inject({ url: '/metrics', headers: as(VIEWER) })).statusCode).toBe(200);
    expect((await t.app.inject({ url: '/api/audit', headers: as(VIEWER) })).statusCode).toBe(403);
    const board = await t.app.inject({ url: '/admin/queues/api/queues?activeQueue=upgrades', headers: as(VIEWER) });
    expect(board.statusCode).toBe(200);
    expect(board.json().queues.every((queue: { readOnlyMode: boolean; allowRetries: boolean }) => queue.readOnlyMode && !queue.allowRetries)).toBe(true);
  });

  it("lets an operator change things, but not use bull-board's write actions or read the audit log", async () => {
    const created = await t.app.inject({
      method: 'POST', url: '/api/firmware', headers: as(OPERATOR),
      payload: { productId: 'roles', name: 'fw', version: '1.0.0', versionOrder: 1, url: 'https://firmware.example.com/fw.bin' },
    });
    expect(created.statusCode).toBe(201);
    expect((await t.app.inject({ method: 'PUT', url: '/api/devices', headers: as(OPERATOR), payload: { devices: [{ id: 'r-1', productId: 'roles' }] } })).statusCode).toBe(200);
    for (const [method, url] of [['PUT', '/admin/queues/api/queues/upgrades/pause'], ['PUT', '/admin/queues/api/queues/upgrades/clean/failed'], ['PUT', '/admin/queues/api/queues/upgrades/retry/failed'], ['POST', '/admin/queues/api/queues/upgrades/add']] as const) {
      const refused = await t.app.inject({ method, url, headers: { ...as(OPERATOR), 'content-type': 'application/json' }, payload: '{}' });
      expect(refused.statusCode, `${method} ${url}`).toBe(403);
      expect(refused.json().code).toBe('forbidden');
    }
    const board = await t.app.inject({ url: '/admin/queues/api/queues?activeQueue=upgrades', headers: as(OPERATOR) });
    expect(board.json().queues[0].readOnlyMode).toBe(true);
    expect((await t.app.inject({ url: '/api/audit', headers: as(OPERATOR) })).statusCode).toBe(403);
  });

  it('lets an admin do everything: bull-board writes (its board is not read-only) and the audit log', async () => {
    const board = await t.app.inject({ url: '/admin/queues/api/queues?activeQueue=upgrades', headers: as(TEST_API_KEY) });
    expect(board.json().queues[0].readOnlyMode).toBe(false);
    const clean = await t.app.inject({ method: 'PUT', url: '/admin/queues/api/queues/upgrades/clean/completed', headers: as(TEST_API_KEY) });
    expect(clean.statusCode).toBe(200);
    expect((await t.app.inject({ url: '/api/audit', headers: as(TEST_API_KEY) })).statusCode).toBe(200);
  });

  it('records the role of each key in the audit log, refused writes included', async () => {
    await t.app.inject({ method: 'DELETE', url: '/api/devices/r-1', headers: as(VIEWER) });
    await t.app.audit.flush();
    const entries = (await t.app.inject({ url: '/api/audit?targetId=r-1', headers: as(TEST_API_KEY) })).json().items as Array<{ role: string; status: number; method: string }>;
    expect(entries).toContainEqual(expect.objectContaining({ role: 'viewer', status: 403, method: 'DELETE' }));
  });
});
