// The audit log: every state-changing request made with a key is recorded once answered, naming the
// key by its fingerprint and role (never the key); reads are not; the list filters and pages; old
// entries go after AUDIT_RETENTION_DAYS; only admins may read it.
import { createHash } from 'node:crypto';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { TEST_API_KEY } from '../helpers/env.ts';
import { apiKeyFingerprint, roleOfKey } from '../../core/api-keys.ts';
import { requireRole } from '../../api/plugins/auth.ts';
import errorHandler from '../../api/plugins/error-handler.ts';

const FINGERPRINT = createHash('sha256').update(TEST_API_KEY).digest('hex').slice(0, 12);
const DAY_MS = 86_400_000;

interface AuditEntry {
  at: string;
  keyFingerprint: string;
  role: string;
  method: string;
  path: string;
  targetType: string | null;
  targetId: string | null;
  status: number;
}

let t: TestApp;
let firmwareId: string;

beforeAll(async () => {
  t = await buildTestApp();
  // written before the first batch: that batch's retention sweep must delete the first, keep the second
  await sql`
    INSERT INTO audit_log (at, key_fingerprint, role, method, path, target_type, target_id, status)
    VALUES (now() - interval '91 days', 'aaaaaaaaaaaa', 'admin', 'DELETE', '/api/tasks/old', 'task', 'old-target', 204),
           (now() - interval '10 days', 'aaaaaaaaaaaa', 'admin', 'POST', '/api/tasks/recent', 'task', 'recent-target', 200)`.execute(t.database.db);

  const created = await t.app.inject({
    method: 'POST', url: '/api/firmware', headers: t.auth,
    payload: { productId: 'audit', name: 'fw', version: '2.0.0', versionOrder: 2, url: 'https://firmware.example.com/a.bin' },
  });
  expect(created.statusCode, created.body).toBe(201);
  firmwareId = created.json().id;
  const patched = await t.app.inject({ method: 'PATCH', url: `/api/firmware/${firmwareId}`, headers: t.auth, payload: { description: 'patched' } });
  expect(patched.statusCode, patched.body).toBe(200);
  const devices = await t.app.inject({ method: 'PUT', url: '/api/devices', headers: t.auth, payload: { devices: [{ id: 'audit-1', productId: 'audit' }] } });
  expect(devices.statusCode, devices.body).toBe(200);
  const refused = await t.app.inject({ method: 'PATCH', url: `/api/firmware/${firmwareId}`, headers: t.auth, payload: { verison: 'x' } });
  expect(refused.statusCode).toBe(400);
  expect((await t.app.inject({ method: 'DELETE', url: '/api/devices/audit-1', headers: t.auth })).statusCode).toBe(204);
  const board = await t.app.inject({ method: 'PUT', url: '/admin/queues/api/queues/upgrades/retry/failed', headers: t.auth });
  expect(board.statusCode, board.body).toBeLessThan(500);
  // not recorded: reads, and requests without a valid key
  expect((await t.app.inject({ url: `/api/firmware/${firmwareId}`, headers: t.auth })).statusCode).toBe(200);
  expect((await t.app.inject({ url: '/api/devices', headers: t.auth })).statusCode).toBe(200);
  expect((await t.app.inject({ method: 'DELETE', url: `/api/firmware/${firmwareId}`, headers: { authorization: 'Bearer wrong-key' } })).statusCode).toBe(401);
  expect((await t.app.inject({ method: 'POST', url: '/api/firmware', payload: {} })).statusCode).toBe(401);
  await t.app.audit.flush();
}, 60_000);

afterAll(async () => {
  await t?.close();
});

async function auditPage(query = ''): Promise<{ items: AuditEntry[]; total: number; page: number; pageSize: number }> {
  const response = await t.app.inject({ url: `/api/audit${query}`, headers: t.auth });
  expect(response.statusCode, response.body).toBe(200);
  return response.json();
}

describe('audit log', () => {
  it('records every state-changing request with the key fingerprint and role, newest first', async () => {
    const { items, total } = await auditPage('?pageSize=100');
    const recent = items.filter((entry) => entry.keyFingerprint === FINGERPRINT);
    expect(recent.map(({ method, path, targetType, targetId, status }) => ({ method, path, targetType, targetId, status }))).toEqual([
      { method: 'PUT', path: '/admin/queues/api/queues/upgrades/retry/failed', targetType: 'queue', targetId: 'upgrades', status: recent[0]!.status },
      { method: 'DELETE', path: '/api/devices/audit-1', targetType: 'device', targetId: 'audit-1', status: 204 },
      { method: 'PATCH', path: `/api/firmware/${firmwareId}`, targetType: 'firmware', targetId: firmwareId, status: 400 },
      { method: 'PUT', path: '/api/devices', targetType: 'device', targetId: null, status: 200 },
      { method: 'PATCH', path: `/api/firmware/${firmwareId}`, targetType: 'firmware', targetId: firmwareId, status: 200 },
      { method: 'POST', path: '/api/firmware', targetType: 'firmware', targetId: firmwareId, status: 201 },
    ]);
    for (const entry of recent) {
      expect(entry.role).toBe('admin');
      expect(Date.now() - Date.parse(entry.at)).toBeLessThan(60_000);
    }
    // the seeded 10-day-old entry is last; the 91-day-old one went with the first batch's sweep
    expect(items.at(-1)!.targetId).toBe('recent-target');
    expect(total).toBe(recent.length + 1);
    expect(items.some((entry) => entry.method === 'GET')).toBe(false);
  });

  it('never stores the key, nor a digest that could stand for it', async () => {
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM audit_log a
      WHERE a::text LIKE ${`%${TEST_API_KEY}%`} OR a::text LIKE ${`%${apiKeyFingerprint(TEST_API_KEY)}%`}
         OR a::text LIKE ${`%${createHash('sha256').update(TEST_API_KEY).digest('hex')}%`}`.execute(t.database.db);
    expect(rows[0]!.n).toBe(0);
    const { rows: all } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM audit_log WHERE key_fingerprint = ${FINGERPRINT}`.execute(t.database.db);
    expect(all[0]!.n).toBe(6);
  });

  it('filters by targetId and since, and pages', async () => {
    const byTarget = await auditPage(`?targetId=${firmwareId}`);
    expect(byTarget.total).toBe(3);
    expect(byTarget.items.every((entry) => entry.targetId === firmwareId)).toBe(true);

    const since = new Date(Date.now() - DAY_MS).toISOString();
    const sinceYesterday = await auditPage(`?since=${encodeURIComponent(since)}`);
    expect(sinceYesterday.total).toBe(6);
    const longAgo = await auditPage(`?since=${encodeURIComponent(new Date(Date.now() - 30 * DAY_MS).toISOString())}`);
    expect(longAgo.total).toBe(7);

    const second = await auditPage('?page=2&pageSize=2');
    expect(second).toMatchObject({ total: 7, page: 2, pageSize: 2 });
    expect(second.items.map((entry) => entry.method)).toEqual(['PATCH', 'PUT']);

    const bad = await t.app.inject({ url: '/api/audit?since=yesterday', headers: t.auth });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().code).toBe('validation_error');
    expect((await t.app.inject({ url: '/api/audit' })).statusCode).toBe(401);
  });

  it('deletes entries older than the retention', async () => {
    await sql`
      INSERT INTO audit_log (at, key_fingerprint, role, method, path, status)
      VALUES (now() - interval '95 days', 'bbbbbbbbbbbb', 'admin', 'POST', '/api/tasks', 201),
             (now() - interval '89 days', 'bbbbbbbbbbbb', 'admin', 'POST', '/api/tasks', 201)`.execute(t.database.db);
    expect(await t.app.audit.prune()).toBe(1);
    const { rows } = await sql<{ age: number }>`
      SELECT extract(day FROM now() - at)::int AS age FROM audit_log WHERE key_fingerprint = 'bbbbbbbbbbbb'`.execute(t.database.db);
    expect(rows.map((row) => row.age)).toEqual([89]);
  });

  it('a request is answered before its entry is written (batched)', async () => {
    const before = await auditPage();
    const response = await t.app.inject({ method: 'PUT', url: '/api/devices', headers: t.auth, payload: { devices: [{ id: 'audit-2', productId: 'audit' }] } });
    expect(response.statusCode).toBe(200);
    expect((await auditPage()).total).toBe(before.total);
    await t.app.audit.flush();
    expect((await auditPage()).total).toBe(before.total + 1);
  });
});

describe('roles', () => {
  it('every key is an admin today', () => {
    expect(roleOfKey(TEST_API_KEY)).toBe('admin');
  });

  it('a viewer is refused 403 where admin is required', async () => {
    const app = Fastify();
    await app.register(errorHandler);
    app.decorateRequest('role', null);
    app.addHook('onRequest', async (request) => {
      request.role = request.headers['x-role'] === 'viewer' ? 'viewer' : 'admin';
    });
    app.get('/audit', { preHandler: requireRole('admin') }, async () => ({ ok: true }));
    const viewer = await app.inject({ url: '/audit', headers: { 'x-role': 'viewer' } });
    expect(viewer.statusCode).toBe(403);
    expect(viewer.json().code).toBe('forbidden');
    expect((await app.inject({ url: '/audit' })).statusCode).toBe(200);
    await app.close();
  });
});
