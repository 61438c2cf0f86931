// Authentication (docs/rest-api.md#authentication): every /api route described in the OpenAPI document, and every
// route of docs/rest-api.md, refuses a request without a valid key with 401
// `unauthorized`; a key works as Bearer token and as Basic password; health and docs stay open.
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { TEST_API_KEY } from '../helpers/env.ts';

type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'OPTIONS';

interface OpenApiParameter {
  name: string;
  in: string;
  schema?: { format?: string; type?: string };
}
interface OpenApiDocument {
  openapi: string;
  paths: Record<string, Record<string, { parameters?: OpenApiParameter[] } | undefined>>;
}

const UUID = '0b6c2f6e-3f4a-4c1e-9d51-7a2e5c8b9f10';
const METHODS: Method[] = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

/** The routes of docs/rest-api.md, checked whether or not they are in the document yet. */
const DOCUMENTED_ROUTES: [Method, string][] = [
  ['POST', '/api/firmware'],
  ['GET', '/api/firmware'],
  ['GET', '/api/firmware/{id}'],
  ['PATCH', '/api/firmware/{id}'],
  ['DELETE', '/api/firmware/{id}'],
  ['PUT', '/api/firmware/{id}/file'],
  ['PUT', '/api/devices'],
  ['GET', '/api/devices'],
  ['GET', '/api/devices/{deviceId}'],
  ['DELETE', '/api/devices/{deviceId}'],
  ['GET', '/api/devices/{deviceId}/records'],
  ['POST', '/api/devices/{deviceId}/firmware/read'],
  ['POST', '/api/tasks'],
  ['GET', '/api/tasks'],
  ['GET', '/api/tasks/{id}'],
  ['PATCH', '/api/tasks/{id}'],
  ['DELETE', '/api/tasks/{id}'],
  ['POST', '/api/tasks/{id}/release'],
  ['POST', '/api/tasks/{id}/push'],
  ['POST', '/api/tasks/{id}/pause'],
  ['POST', '/api/tasks/{id}/resume'],
  ['POST', '/api/tasks/{id}/cancel'],
  ['POST', '/api/tasks/{id}/retry'],
  ['GET', '/api/tasks/{id}/records'],
  ['GET', '/api/records/{id}'],
  ['POST', '/api/device-messages'],
];

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

const WRONG_CREDENTIALS: [string, Record<string, string>][] = [
  ['no Authorization header', {}],
  ['a wrong Bearer key', { authorization: 'Bearer wrong-key' }],
  ['a wrong Basic password', { authorization: basic('admin', 'wrong-key') }],
  ['the key as Basic user name', { authorization: basic(TEST_API_KEY, 'wrong-key') }],
  ['an empty Bearer key', { authorization: 'Bearer ' }],
  ['the key under an unknown scheme', { authorization: `Token ${TEST_API_KEY}` }],
  ['the bare key', { authorization: TEST_API_KEY }],
];

/** A plausible value for a path parameter: a UUID where the schema says so or the path is of firmware, tasks or records. */
function parameterValue(path: string, name: string, parameters: OpenApiParameter[]): string {
  const declared = parameters.find((parameter) => parameter.in === 'path' && parameter.name === name);
  if (declared?.schema?.format === 'uuid') return UUID;
  if (/\/devices\//.test(path)) return 'dev-1';
  if (/\/(firmware|tasks|records)\//.test(path)) return UUID;
  return 'dev-1';
}

function concretePath(path: string, parameters: OpenApiParameter[] = []): string {
  return path.replace(/\{([^}]+)\}/g, (_whole, name: string) => encodeURIComponent(parameterValue(path, name, parameters)));
}

function request(method: Method, url: string, headers: Record<string, string>): InjectOptions {
  const options: InjectOptions = { method, url, headers: { ...headers } };
  if (method === 'POST' || method === 'PUT' || method === 'PATCH') {
    options.payload = '{}';
    options.headers = { ...options.headers, 'content-type': 'application/json' };
  }
  return options;
}

function expectUnauthorized(response: LightMyRequestResponse, method: Method, url: string, what: string): void {
  const label = `${method} ${url} with ${what}`;
  expect(response.statusCode, `${label}: ${response.body}`).toBe(401);
  expect(String(response.headers['www-authenticate']), label).toMatch(/^Basic\b/i);
  if (method === 'HEAD') return;
  const body = response.json() as Record<string, unknown>;
  expect(body, label).toEqual({
    statusCode: 401,
    code: 'unauthorized',
    error: 'Unauthorized',
    message: expect.any(String),
  });
}

describe('authentication', () => {
  let test: TestApp;
  let document: OpenApiDocument;
  let documented: [Method, string, OpenApiParameter[]][];

  beforeAll(async () => {
    test = await buildTestApp();
    const response = await test.app.inject({ method: 'GET', url: '/docs/json' });
    expect(response.statusCode).toBe(200);
    document = response.json() as OpenApiDocument;
    documented = [];
    for (const [path, operations] of Object.entries(document.paths)) {
      if (path !== '/api' && !path.startsWith('/api/')) continue;
      for (const [method, operation] of Object.entries(operations)) {
        const upper = method.toUpperCase() as Method;
        if (!METHODS.includes(upper)) continue;
        documented.push([upper, path, operation?.parameters ?? []]);
      }
    }
  });

  afterAll(async () => {
    await test?.close();
  });

  it('serves an OpenAPI 3 document', () => {
    expect(document.openapi).toMatch(/^3\./);
    expect(document.paths).toHaveProperty(['/health/live']);
  });

  it('refuses every documented /api route without a valid key', async () => {
    for (const [method, path, parameters] of documented) {
      const url = concretePath(path, parameters);
      for (const [what, headers] of WRONG_CREDENTIALS) {
        const response = await test.app.inject(request(method, url, headers));
        expectUnauthorized(response, method, url, what);
      }
    }
  });

  it('refuses every route of the contract without a valid key, written or not', async () => {
    for (const [method, path] of DOCUMENTED_ROUTES) {
      const url = concretePath(path);
      for (const [what, headers] of WRONG_CREDENTIALS) {
        const response = await test.app.inject(request(method, url, headers));
        expectUnauthorized(response, method, url, what);
      }
    }
  });

  it('refuses unknown /api paths without a key: no probing for routes', async () => {
    for (const url of ['/api', '/api/', '/api/nothing-here', '/api/firmware/x/y/z?page=1']) {
      const response = await test.app.inject({ method: 'GET', url });
      expectUnauthorized(response, 'GET', url, 'no Authorization header');
    }
  });

  it('never answers /metrics or /admin/queues without a key', async () => {
    for (const url of ['/metrics', '/admin/queues']) {
      const response = await test.app.inject({ method: 'GET', url });
      // 404 until the route exists; once it does, it must ask for the key
      expect([401, 404], `${url}: ${response.statusCode}`).toContain(response.statusCode);
    }
  });

  it.each([
    ['Bearer', `Bearer ${TEST_API_KEY}`],
    ['Basic password, any user name', basic('anyone', TEST_API_KEY)],
    ['Basic password, empty user name', basic('', TEST_API_KEY)],
  ])('accepts the key as %s', async (_name, authorization) => {
    for (const path of ['/api/firmware', '/api/devices']) {
      const response = await test.app.inject({ method: 'GET', url: path, headers: { authorization } });
      expect(response.statusCode, `${path}: ${response.body}`).not.toBe(401);
      // a route still being written answers 404 behind the key check, which proves the key passed
      const written = document.paths[path]?.get !== undefined;
      expect(response.statusCode, `${path}: ${response.body}`).toBe(written ? 200 : 404);
      if (!written) expect(response.json()).toMatchObject({ code: 'not_found' });
    }
  });

  it('accepts any of several configured keys', async () => {
    const several = await buildTestApp({ API_KEYS: 'first-key,second-key' });
    try {
      for (const key of ['first-key', 'second-key']) {
        const response = await several.app.inject({ method: 'GET', url: '/api/devices', headers: { authorization: `Bearer ${key}` } });
        expect(response.statusCode).not.toBe(401);
      }
      const other = await several.app.inject({ method: 'GET', url: '/api/devices', headers: { authorization: `Bearer ${TEST_API_KEY}` } });
      expect(other.statusCode).toBe(401);
    } finally {
      await several.close();
    }
  });

  it('keeps health and docs open without a key', async () => {
    const live = await test.app.inject({ method: 'GET', url: '/health/live' });
    expect(live.statusCode).toBe(200);
    expect(live.json()).toEqual({ status: 'ok' });

    const ready = await test.app.inject({ method: 'GET', url: '/health/ready' });
    expect([200, 503]).toContain(ready.statusCode);

    const json = await test.app.inject({ method: 'GET', url: '/docs/json' });
    expect(json.statusCode).toBe(200);
    expect((json.json() as OpenApiDocument).openapi).toMatch(/^3\./);

    const ui = await test.app.inject({ method: 'GET', url: '/docs' });
    expect(ui.statusCode).toBeLessThan(400);
  });

  it('ignores a wrong key on open routes', async () => {
    const live = await test.app.inject({ method: 'GET', url: '/health/live', headers: { authorization: 'Bearer wrong-key' } });
    expect(live.statusCode).toBe(200);
  });
});
