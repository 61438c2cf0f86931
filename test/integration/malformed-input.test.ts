// Malformed input the API fuzzing found answered with a 5xx, a hang or a misleading "send it again",
// now refused in the one error shape: text holding U+0000 and absurd nesting, URLs Fastify cannot
// route, multipart bodies cut short, device message timestamps beyond what can be stored.
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { createFirmware, createTask } from '../helpers/rollout.ts';
import { expectErrorKeys } from '../helpers/error-shape.ts';

let t: TestApp;
let firmwareId: string;
let taskId: string;

beforeAll(async () => {
  t = await buildTestApp();
  firmwareId = await createFirmware(t.app, t.auth, 'mal-p', '2.0.0', 2);
  taskId = await createTask(t.app, t.auth, { firmwareId });
});

afterAll(async () => {
  await t?.close();
});

function expectError(response: LightMyRequestResponse, statusCode: number, code: string, message?: RegExp): void {
  expect(response.statusCode, response.body).toBe(statusCode);
  const body = response.json() as Record<string, unknown>;
  expectErrorKeys(body);
  expect(body).toMatchObject({ statusCode, code });
  if (message) expect(body.message).toMatch(message);
}

async function count(table: 'firmware' | 'devices'): Promise<number> {
  const row = await t.database.db.selectFrom(table).select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  return Number(row.n);
}

describe('text PostgreSQL cannot store', () => {
  it('refuses U+0000 in a query string, a path parameter or a body with 400 validation_error', async () => {
    expectError(await t.app.inject({ method: 'GET', url: '/api/firmware?q=%00', headers: t.auth }), 400, 'validation_error', /querystring\/q: .*NUL/);
    expectError(await t.app.inject({ method: 'GET', url: '/api/devices/a%00b', headers: t.auth }), 400, 'validation_error', /params\/id/);
    const before = await count('firmware');
    const body = { productId: 'mal-p', name: 'fw\u0000', version: '3', versionOrder: 3 };
    expectError(await t.app.inject({ method: 'POST', url: '/api/firmware', headers: t.auth, payload: body }), 400, 'validation_error', /body\/name/);
    const key = { productId: 'mal-p', name: 'fw', version: '3', versionOrder: 3, properties: { 'k\u0000': 'v' } };
    expectError(await t.app.inject({ method: 'POST', url: '/api/firmware', headers: t.auth, payload: key }), 400, 'validation_error', /body\/properties/);
    const patch = await t.app.inject({ method: 'PATCH', url: `/api/tasks/${taskId}`, headers: t.auth, payload: { description: 'a\u0000' } });
    expectError(patch, 400, 'validation_error');
    expect(await count('firmware')).toBe(before);
  });

  it('refuses a body nested absurdly deep with 400, without overflowing the stack', async () => {
    const deep = `{"productId":"mal-p","name":"n","version":"4","versionOrder":4,"properties":{"x":${'{"a":'.repeat(50_000)}1${'}'.repeat(50_000)}}}`;
    const response = await t.app.inject({ method: 'POST', url: '/api/firmware', headers: { ...t.auth, 'content-type': 'application/json' }, payload: deep });
    expectError(response, 400, 'validation_error', /nested/);
  });

  it('refuses such a device message on its own; the others of the batch are applied', async () => {
    const before = await count('devices');
    const nested = JSON.parse(`${'{"a":'.repeat(1_000)}1${'}'.repeat(1_000)}`) as unknown;
    const response = await t.app.inject({
      method: 'POST',
      url: '/api/device-messages',
      headers: t.auth,
      payload: [
        { messageType: 'REPORT_FIRMWARE', deviceId: 'mal-1', productId: 'mal-p', version: '1.0\u0000' },
        { messageType: 'REPORT_FIRMWARE', deviceId: 'mal-2', productId: 'mal-p', version: '1.0', properties: { a: ['\u0000'] } },
        { messageType: 'REPORT_FIRMWARE', deviceId: 'mal-3', productId: 'mal-p', version: '1.0', properties: { a: nested } },
        { messageType: 'REPORT_FIRMWARE', deviceId: 'mal-4', productId: 'mal-p', version: '1.0', timestamp: 1e20 },
        { messageType: 'REPORT_FIRMWARE', deviceId: 'mal-5', productId: 'mal-p', version: '1.0', timestamp: 1_767_268_800_000 },
      ],
    });
    expect(response.statusCode, response.body).toBe(200);
    const results = (response.json() as { results: Array<{ index: number; accepted: boolean; code?: string; message?: string }> }).results;
    expect(results.map((result) => [result.accepted, result.code])).toEqual([
      [false, 'invalid_message'],
      [false, 'invalid_message'],
      [false, 'invalid_message'],
      [false, 'invalid_message'],
      [true, undefined],
    ]);
    expect(results[0]!.message).toMatch(/^version: .*NUL/);
    expect(results[1]!.message).toMatch(/^properties\.a\.0: .*NUL/);
    expect(results[2]!.message).toMatch(/nested/);
    expect(results[3]!.message).toMatch(/^timestamp: /);
    expect(await count('devices')).toBe(before + 1);
  });
});

describe('URLs Fastify cannot route', () => {
  it('answers a path parameter longer than any id with 414 uri_too_long', async () => {
    const url = `/api/tasks/${'x'.repeat(200)}`;
    expectError(await t.app.inject({ method: 'GET', url, headers: t.auth }), 414, 'uri_too_long');
  });

  it('answers bad percent-encoding in a path parameter with 400 validation_error', async () => {
    expectError(await t.app.inject({ method: 'GET', url: '/api/devices/%zz', headers: t.auth }), 400, 'validation_error');
  });

  it('asks for the key first under /api: no probing', async () => {
    for (const url of [`/api/tasks/${'x'.repeat(200)}`, '/api/devices/%zz']) {
      const response = await t.app.inject({ method: 'GET', url });
      expectError(response, 401, 'unauthorized');
      expect(String(response.headers['www-authenticate'])).toMatch(/^Basic\b/);
    }
  });

  it('outside /api, answers without a key', async () => {
    expectError(await t.app.inject({ method: 'GET', url: `/files/firmware/${'x'.repeat(200)}` }), 414, 'uri_too_long');
  });
});

describe('multipart uploads cut short', () => {
  const url = () => `/api/firmware/${firmwareId}/file`;
  const headers = () => ({ ...t.auth, 'content-type': 'multipart/form-data; boundary=x' });
  const part = '--x\r\nContent-Disposition: form-data; name="file"; filename="f.bin"\r\n\r\n';

  it('refuses a body that is not multipart at all with 400, not 500', async () => {
    for (const payload of [' ', '{', '--x\r\n\r\n']) {
      expectError(await t.app.inject({ method: 'PUT', url: url(), headers: headers(), payload }), 400, 'validation_error', /multipart/);
    }
  });

  it('refuses a file part that never ends with 400 upload_aborted, instead of hanging', async () => {
    for (const payload of [`${part}abc`, `${part}${'a'.repeat(200_000)}`]) {
      const response = await t.app.inject({ method: 'PUT', url: url(), headers: headers(), payload });
      expectError(response, 400, 'upload_aborted');
    }
    const firmware = (await t.app.inject({ method: 'GET', url: `/api/firmware/${firmwareId}`, headers: t.auth })).json() as { hasFile: boolean };
    expect(firmware.hasFile).toBe(false);
  }, 10_000);

  it('still takes a well-formed multipart body', async () => {
    const response = await t.app.inject({ method: 'PUT', url: url(), headers: headers(), payload: `${part}abc\r\n--x--\r\n` });
    expect(response.statusCode, response.body).toBe(200);
    expect(response.json()).toMatchObject({ size: 3, hasFile: true });
  });
});
