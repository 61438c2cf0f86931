// The one error shape of docs/rest-api.md#errors — { statusCode, code, error, message }, nothing more, never a
// stack trace — for the failures every route shares: unknown route, malformed or empty JSON,
// a body over the limit, a content type the API does not take.
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { STATUS_CODES } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { expectErrorKeys } from '../helpers/error-shape.ts';

const UUID = '0b6c2f6e-3f4a-4c1e-9d51-7a2e5c8b9f10';
const BODY_LIMIT = 2048;

interface OpenApiOperation {
  requestBody?: { content?: Record<string, unknown> };
}
interface OpenApiDocument {
  paths: Record<string, Record<string, OpenApiOperation | undefined>>;
}

interface BodyRoute {
  method: 'POST' | 'PUT' | 'PATCH';
  url: string;
}

/** Routes that take JSON, in order of preference for the single-route checks. */
const PREFERRED = ['POST /api/firmware', 'PUT /api/devices', 'POST /api/tasks'];

function jsonBodyRoutes(document: OpenApiDocument): BodyRoute[] {
  const routes: BodyRoute[] = [];
  for (const [path, operations] of Object.entries(document.paths)) {
    if (!path.startsWith('/api/')) continue;
    for (const [method, operation] of Object.entries(operations)) {
      const upper = method.toUpperCase();
      if (upper !== 'POST' && upper !== 'PUT' && upper !== 'PATCH') continue;
      if (!operation?.requestBody?.content?.['application/json']) continue;
      const url = path.replace(/\{[^}]+\}/g, () => (/\/devices\//.test(path) ? 'dev-1' : UUID));
      routes.push({ method: upper, url });
    }
  }
  const rank = (route: BodyRoute) => {
    const index = PREFERRED.indexOf(`${route.method} ${route.url}`);
    return index === -1 ? PREFERRED.length : index;
  };
  return routes.sort((a, b) => rank(a) - rank(b));
}

function expectErrorShape(response: LightMyRequestResponse, statusCode: number, code: string, label: string): void {
  expect(response.statusCode, `${label}: ${response.body}`).toBe(statusCode);
  expect(String(response.headers['content-type']), label).toMatch(/^application\/json/);
  const body = response.json() as Record<string, unknown>;
  expectErrorKeys(body, label);
  expect(body, label).toMatchObject({ statusCode, code, error: STATUS_CODES[statusCode], message: expect.any(String) });
  expect((body.message as string).length, label).toBeGreaterThan(0);
  expect(response.body, label).not.toMatch(/\bat .+:\d+:\d+|node_modules|"stack"/);
}

describe('API errors', () => {
  let test: TestApp;
  let routes: BodyRoute[];

  beforeAll(async () => {
    test = await buildTestApp({ BODY_LIMIT_BYTES: String(BODY_LIMIT) });
    const document = (await test.app.inject({ method: 'GET', url: '/docs/json' })).json() as OpenApiDocument;
    routes = jsonBodyRoutes(document);
  });

  afterAll(async () => {
    await test?.close();
  });

  function send(route: BodyRoute, contentType: string | undefined, payload: string): Promise<LightMyRequestResponse> {
    const options: InjectOptions = {
      method: route.method,
      url: route.url,
      headers: { ...test.auth, ...(contentType ? { 'content-type': contentType } : {}) },
      payload,
    };
    return test.app.inject(options);
  }

  it('has JSON routes to check', () => {
    expect(routes.length, 'no documented /api route takes a JSON body').toBeGreaterThan(0);
  });

  it('answers an unknown /api route with 404 not_found (with a key)', async () => {
    for (const [method, url] of [['GET', '/api/no-such-thing'], ['POST', '/api/no/such/thing?x=1'], ['DELETE', '/api/devices']] as const) {
      const response = await test.app.inject({ method, url, headers: test.auth });
      expectErrorShape(response, 404, 'not_found', `${method} ${url}`);
    }
  });

  it('answers an unknown route outside /api with 404 not_found', async () => {
    const response = await test.app.inject({ method: 'GET', url: '/no-such-page' });
    expectErrorShape(response, 404, 'not_found', 'GET /no-such-page');
  });

  it('answers malformed JSON with 400 validation_error on every JSON route', async () => {
    for (const route of routes) {
      const response = await send(route, 'application/json', '{bad');
      expectErrorShape(response, 400, 'validation_error', `${route.method} ${route.url} with {bad`);
    }
  });

  it('answers an empty JSON body with 400 validation_error', async () => {
    const route = routes[0]!;
    const response = await send(route, 'application/json', '');
    expectErrorShape(response, 400, 'validation_error', `${route.method} ${route.url} with an empty body`);
  });

  it('answers a body of the wrong type with 400 validation_error', async () => {
    const route = routes[0]!;
    for (const payload of ['[]', '"text"', '42', 'null']) {
      const response = await send(route, 'application/json', payload);
      expectErrorShape(response, 400, 'validation_error', `${route.method} ${route.url} with ${payload}`);
    }
  });

  it('answers a body over BODY_LIMIT_BYTES with 413 payload_too_large', async () => {
    const route = routes[0]!;
    const payload = JSON.stringify({ name: 'x'.repeat(BODY_LIMIT * 2) });
    expect(Buffer.byteLength(payload)).toBeGreaterThan(BODY_LIMIT);
    const response = await send(route, 'application/json', payload);
    expectErrorShape(response, 413, 'payload_too_large', `${route.method} ${route.url} with ${payload.length} bytes`);
  });

  it('takes a body just under the limit past the size check', async () => {
    const route = routes[0]!;
    const payload = JSON.stringify({ name: 'x'.repeat(BODY_LIMIT - 100) });
    expect(Buffer.byteLength(payload)).toBeLessThanOrEqual(BODY_LIMIT);
    const response = await send(route, 'application/json', payload);
    expect(response.statusCode, response.body).not.toBe(413);
  });

  it('answers an unsupported content type with 415 on every JSON route', async () => {
    for (const route of routes) {
      for (const contentType of ['application/xml', 'application/x-www-form-urlencoded']) {
        const response = await send(route, contentType, contentType === 'application/xml' ? '<a/>' : 'a=1');
        expectErrorShape(response, 415, 'unsupported_media_type', `${route.method} ${route.url} as ${contentType}`);
      }
    }
  });

  it('answers 401 in the same shape', async () => {
    const response = await test.app.inject({ method: 'GET', url: '/api/devices' });
    expectErrorShape(response, 401, 'unauthorized', 'GET /api/devices without a key');
  });
});
