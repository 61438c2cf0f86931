// No one let in: nothing under /api, /metrics or /admin/queues answers 2xx without a key; a
// path-traversal firmware id, a forged or expired download signature and an oversized upload are
// all refused, and nothing in an error body leaks a stack trace or SQL.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signDownloadUrl } from '../../core/download-url.ts';
import { buildTestApp, type TestApp } from '../helpers/app.ts';

describe('security', () => {
  let t: TestApp;
  let firmwareId: string;

  beforeAll(async () => {
    t = await buildTestApp({ FIRMWARE_MAX_BYTES: '4096' });
    firmwareId = (await t.app.inject({ method: 'POST', url: '/api/firmware', headers: t.auth, payload: { productId: 'sec', name: 'fw', version: '1.0.0', versionOrder: 1 } })).json().id;
    const upload = await t.app.inject({ method: 'PUT', url: `/api/firmware/${firmwareId}/file`, headers: { ...t.auth, 'content-type': 'application/octet-stream' }, payload: Buffer.alloc(1024, 7) });
    expect(upload.statusCode).toBe(200);
  });

  afterAll(async () => t?.close());

  it('answers nothing 2xx under /api, /metrics or /admin/queues without a key', async () => {
    const spec = (await t.app.inject({ url: '/docs/json' })).json() as { paths: Record<string, Record<string, unknown>> };
    const probes: Array<[string, string]> = [['GET', '/metrics'], ['GET', '/admin/queues'], ['GET', '/admin/queues/api/queues']];
    for (const [path, methods] of Object.entries(spec.paths)) {
      if (!path.startsWith('/api')) continue;
      const concrete = path.replace(/\{id\}/g, firmwareId);
      for (const method of Object.keys(methods)) probes.push([method.toUpperCase(), concrete]);
    }
    expect(probes.length).toBeGreaterThan(20);
    for (const [method, url] of probes) {
      const response = await t.app.inject({ method: method as 'GET', url, payload: method === 'GET' || method === 'DELETE' ? undefined : {} });
      expect(response.statusCode, `${method} ${url}`).toBeGreaterThanOrEqual(400);
      expect(response.statusCode, `${method} ${url}`).toBeLessThan(500);
    }
  });

  it('refuses firmware ids that try to leave the storage directory', async () => {
    for (const id of ['..%2F..%2Fetc%2Fpasswd', '..', '%2e%2e', 'x%00y', `${firmwareId}%2F..%2F..%2Fpasswd`]) {
      const download = await t.app.inject({ url: `/files/firmware/${id}`, headers: t.auth });
      expect([400, 404], `download ${id}`).toContain(download.statusCode);
      expect(download.body).not.toContain('root:');
      const upload = await t.app.inject({ method: 'PUT', url: `/api/firmware/${id}/file`, headers: { ...t.auth, 'content-type': 'application/octet-stream' }, payload: Buffer.from('x') });
      expect([400, 404], `upload ${id}`).toContain(upload.statusCode);
    }
  });

  it('refuses forged and expired download signatures, and a signature for another firmware', async () => {
    const valid = new URL(signDownloadUrl('http://x', t.config.urlSigningSecret, firmwareId, 'sec-device', 60));
    const ok = await t.app.inject({ url: `${valid.pathname}${valid.search}` });
    expect(ok.statusCode).toBe(200);

    const forged = new URL(valid);
    forged.searchParams.set('signature', 'A'.repeat(valid.searchParams.get('signature')!.length));
    expect((await t.app.inject({ url: `${forged.pathname}${forged.search}` })).statusCode).toBe(403);

    const extended = new URL(valid);
    extended.searchParams.set('expires', String(Number(valid.searchParams.get('expires')) + 3600));
    expect((await t.app.inject({ url: `${extended.pathname}${extended.search}` })).statusCode).toBe(403);

    const expired = new URL(signDownloadUrl('http://x', t.config.urlSigningSecret, firmwareId, 'sec-device', 60, Date.now() - 3_600_000));
    const expiredAnswer = await t.app.inject({ url: `${expired.pathname}${expired.search}` });
    expect(expiredAnswer.statusCode).toBe(403);
    expect(expiredAnswer.json().code).toBe('signature_expired');

    const other = (await t.app.inject({ method: 'POST', url: '/api/firmware', headers: t.auth, payload: { productId: 'sec', name: 'fw2', version: '2.0.0', versionOrder: 2 } })).json().id;
    const borrowed = `/files/firmware/${other}${valid.search}`;
    expect((await t.app.inject({ url: borrowed })).statusCode).toBe(403);
  });

  it('refuses an oversized upload with 413 and keeps the stored file', async () => {
    const response = await t.app.inject({ method: 'PUT', url: `/api/firmware/${firmwareId}/file`, headers: { ...t.auth, 'content-type': 'application/octet-stream' }, payload: Buffer.alloc(8192, 1) });
    expect(response.statusCode).toBe(413);
    expect(response.json().code).toBe('payload_too_large');
    const firmware = (await t.app.inject({ url: `/api/firmware/${firmwareId}`, headers: t.auth })).json();
    expect(firmware.size).toBe(1024);
  });

  it('sends security headers and no stack trace or SQL in error bodies', async () => {
    const response = await t.app.inject({ url: '/api/firmware/not-a-uuid', headers: t.auth });
    expect(response.statusCode).toBe(400);
    expect(response.headers['x-content-type-options']).toBe('nosniff');
    expect(response.headers['x-frame-options']).toBeDefined();
    expect(response.body).not.toMatch(/\s+at\s|SELECT|INSERT|node_modules/);
  });
});
