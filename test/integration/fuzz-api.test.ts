// Fuzzing the real API (ROLE api) with fast-check, fixed seeds: 2,000 requests with random methods,
// paths of the OpenAPI document with garbage parameters (traversal, very long, unicode, %00),
// random query strings and random or non-JSON bodies, with and without the key. Never a 5xx, every
// error in the one shape of docs/rest-api.md#errors without a stack trace, and a refused request changes nothing.
import fc from 'fast-check';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { TEST_API_KEY } from '../helpers/env.ts';
import { createFirmware, createTask, registerDevices } from '../helpers/rollout.ts';
import { expectErrorKeys } from '../helpers/error-shape.ts';

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'HEAD';

interface JsonSchema {
  type?: string | string[];
  nullable?: boolean;
  enum?: unknown[];
  const?: unknown;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  properties?: Record<string, JsonSchema>;
}

interface OpenApiOperation {
  parameters?: Array<{ name: string; in: string }>;
  requestBody?: { content?: Record<string, { schema?: JsonSchema }> };
}

interface OpenApiDocument {
  paths: Record<string, Record<string, OpenApiOperation>>;
}

interface Route {
  method: Method;
  path: string;
  jsonBody?: JsonSchema;
}

interface FuzzRequest {
  method: Method;
  url: string;
  headers: Record<string, string>;
  payload?: string;
}

// fixed, so a run is reproducible; FUZZ_SEED explores other inputs
const SEED = Number(process.env.FUZZ_SEED ?? 20_260_101);
const TABLES = ['firmware', 'devices', 'upgrade_tasks', 'upgrade_records', 'record_events', 'idempotency_keys'] as const;
const PRODUCT = 'fuzz-p';
const DEVICES = ['fuzz-1', 'fuzz-2', 'fuzz-3'];
const READ_PATH = '/api/devices/{id}/firmware/read';

/** Field names of the API's bodies, messages and queries (docs/rest-api.md), given values of any type. */
const API_FIELDS = [
  'productId', 'name', 'version', 'versionOrder', 'url', 'sign', 'signMethod', 'size', 'properties', 'description',
  'firmwareId', 'mode', 'timeoutSeconds', 'responseTimeoutSeconds', 'retry', 'rollout', 'abort', 'startAt',
  'allDevices', 'fromVersions', 'deviceIds', 'push', 'states', 'includeProcessing', 'devices', 'id', 'firmwareVersion',
  'messageType', 'deviceId', 'messageId', 'progress', 'complete', 'success', 'timestamp', 'timestampe', 'timeoutMs',
  'maxAttempts', 'backoffSeconds', 'on', 'maxPerMinute', 'maxInFlight', 'failureRate', 'minFinished',
  '__proto__', 'constructor', 'prototype',
];
const QUERY_FIELDS = ['page', 'pageSize', 'productId', 'q', 'state', 'firmwareId', 'deviceId', 'firmwareVersion', 'signMethod', 'device', 'expires', 'signature'];

const NASTY_STRINGS = [
  '../../etc/passwd', '..%2F..%2Fetc%2Fpasswd', '%2e%2e%2f%2e%2e%2fetc%2fpasswd', '....//....//etc/passwd', '..\\..\\windows\\win.ini',
  '%00', 'a%00b', '\u0000', '%', '%zz', '%%', '%u0041', '/', '//', '', ' ', '\t', '\r\n', '?', '#', '&', '=',
  'null', 'undefined', 'true', '0', '-1', '1e309', 'NaN', 'Infinity', '9'.repeat(40), '0x10',
  '__proto__', 'constructor', 'prototype', "'; DROP TABLE firmware; --", '" OR 1=1 --', '<script>alert(1)</script>',
  '${7*7}', '{{7*7}}', '😀', 'Ω≈ç√∫', '\uFEFF', '\u202E', '\uD800', 'ﬀ', 'İ', 'x'.repeat(5_000), 'a'.repeat(65),
  '00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
];

let t: TestApp;
let document: OpenApiDocument;
let routes: Route[];
let jsonRoutes: Route[];
const seeded = { firmwareId: '', taskId: '', recordId: '', deviceId: DEVICES[0]! };

beforeAll(async () => {
  t = await buildTestApp();
  seeded.firmwareId = await createFirmware(t.app, t.auth, PRODUCT, '2.0.0', 2);
  await registerDevices(t.app, t.auth, PRODUCT, DEVICES, '1.0.0');
  seeded.taskId = await createTask(t.app, t.auth, { firmwareId: seeded.firmwareId });
  const released = await t.app.inject({ method: 'POST', url: `/api/tasks/${seeded.taskId}/release`, headers: t.auth, payload: { deviceIds: DEVICES } });
  expect(released.json().added).toBe(DEVICES.length);
  const records = await t.app.inject({ method: 'GET', url: `/api/tasks/${seeded.taskId}/records`, headers: t.auth });
  seeded.recordId = String(records.json().items[0].id);

  document = (await t.app.inject({ method: 'GET', url: '/docs/json' })).json() as OpenApiDocument;
  routes = [];
  for (const [path, operations] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(operations)) {
      const upper = method.toUpperCase() as Method;
      if (!['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD'].includes(upper)) continue;
      routes.push({ method: upper, path, jsonBody: operation.requestBody?.content?.['application/json']?.schema });
    }
  }
  jsonRoutes = routes.filter((route) => route.path.startsWith('/api/') && route.jsonBody !== undefined);
  expect(routes.length).toBeGreaterThan(20);
  expect(jsonRoutes.length).toBeGreaterThan(8);
});

afterAll(async () => {
  await t?.close();
});

// ---- generators ----

/** Lone surrogates replaced, so the text can be percent-encoded (what a client's encoder does). */
function wellFormed(value: string): string {
  return value.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');
}

/** A path segment as a client would put it on the wire: percent-encoded, or raw when it is plain ASCII. */
function segment(value: string, raw: boolean): string {
  if (raw && /^[\x21-\x7e]*$/.test(value)) return value;
  return encodeURIComponent(wellFormed(value));
}

const garbage = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...NASTY_STRINGS) },
  { weight: 2, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 20 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }) },
  { weight: 1, arbitrary: fc.string({ minLength: 100, maxLength: 3_000 }) },
  { weight: 1, arbitrary: fc.uuid() },
  { weight: 1, arbitrary: fc.integer().map(String) },
);

function pathParameter(path: string, method: Method) {
  const real: string[] = [];
  // the seeded firmware, task and devices are not deleted, so later requests still reach the handlers
  if (method === 'DELETE') return garbage;
  if (/^\/api\/(firmware|files)|^\/files\/firmware/.test(path)) real.push(seeded.firmwareId);
  if (/^\/api\/tasks/.test(path)) real.push(seeded.taskId);
  if (/^\/api\/records/.test(path)) real.push(seeded.recordId);
  // the seeded devices stay out of the read route: a valid read waits for the device to answer
  if (/^\/api\/devices/.test(path) && path !== READ_PATH) real.push(...DEVICES);
  return real.length > 0
    ? fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...real) }, { weight: 2, arbitrary: garbage })
    : garbage;
}

function fillPath(path: string, method: Method): fc.Arbitrary<string> {
  const names = [...path.matchAll(/\{([^}]+)\}/g)].map((match) => match[1]!);
  if (names.length === 0) return fc.constant(path);
  return fc
    .tuple(fc.array(pathParameter(path, method), { minLength: names.length, maxLength: names.length }), fc.boolean())
    .map(([values, raw]) => {
      let index = 0;
      return path.replace(/\{[^}]+\}/g, () => segment(values[index++]!, raw));
    });
}

const queryString = fc.oneof(
  { weight: 3, arbitrary: fc.constant('') },
  {
    weight: 4,
    arbitrary: fc
      .array(fc.tuple(fc.oneof(fc.constantFrom(...QUERY_FIELDS), fc.constantFrom('__proto__', 'constructor[prototype][x]', 'a[b]', 'page[]'), fc.string({ maxLength: 8 })), garbage), { maxLength: 4 })
      .map((pairs) => pairs.map(([key, value]) => `${encodeURIComponent(wellFormed(key))}=${encodeURIComponent(wellFormed(value))}`).join('&')),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '%', '&&&', '=', '==', 'page=1&page=2', 'page=', 'page=0', 'page=-1', 'page=1e3', 'page=1.5', 'pageSize=501', 'pageSize=100000000000000000000',
      'state=waiting&state=failed', 'q=%00', 'q=%', 'productId=../../etc/passwd', 'expires=1&signature=00', 'device=d&expires=1&signature=00', 'signMethod=md4',
      `expires=${'9'.repeat(40)}&signature=${'a'.repeat(300)}`,
    ),
  },
);

const anyValue = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.string({ maxLength: 200 }),
  fc.constantFrom(...NASTY_STRINGS),
  fc.integer(),
  fc.double(),
  fc.constantFrom(-1, 0, 2 ** 31, 2 ** 53, -(2 ** 63), 1e308, 0.5),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.oneof(fc.string({ maxLength: 20 }), fc.integer(), fc.constant(null)), { maxLength: 5 }),
);

const contractObject = fc.dictionary(fc.constantFrom(...API_FIELDS), anyValue, { maxKeys: 6 });

/** A valid body for each JSON route of the contract, by `METHOD path`. */
function validBodies(): Record<string, Array<Record<string, unknown>>> {
  return {
    'POST /api/firmware': [
      { productId: PRODUCT, name: 'fw', version: '3.0.0', versionOrder: 3, url: 'https://example.com/f.bin', sign: 'ab', signMethod: 'sha256', size: 1, properties: { a: 'b' } },
      { productId: 'fuzz-q', name: 'fw', version: '1', versionOrder: 2 ** 31 - 1 },
    ],
    'PATCH /api/firmware/{id}': [{ name: 'renamed', description: 'd' }, { url: null, sign: null, signMethod: null, size: null }, { versionOrder: 2 }],
    'PUT /api/devices': [{ devices: [{ id: 'fuzz-new', productId: PRODUCT, firmwareVersion: '1.0.0', name: 'n' }] }],
    'POST /api/tasks': [
      { firmwareId: seeded.firmwareId, name: 'task', mode: 'push', timeoutSeconds: 60, retry: { maxAttempts: 2, backoffSeconds: 1, on: ['timeout'] }, rollout: { maxPerMinute: 10 }, abort: { failureRate: 0.5, minFinished: 1 }, startAt: '2030-01-01T00:00:00Z' },
      { firmwareId: seeded.firmwareId, name: 'pull', mode: 'pull', responseTimeoutSeconds: 5 },
    ],
    'PATCH /api/tasks/{id}': [{ name: 'renamed', rollout: { maxInFlight: 1 } }, { startAt: null, abort: null }],
    'POST /api/tasks/{id}/release': [{ deviceIds: [...DEVICES, 'fuzz-unknown'], push: false }, { allDevices: true, fromVersions: ['1.0.0'] }],
    'POST /api/tasks/{id}/push': [{}, { deviceIds: [DEVICES[0]] }],
    'POST /api/tasks/{id}/cancel': [{ deviceIds: [DEVICES[1]] }, { includeProcessing: true }],
    'POST /api/tasks/{id}/retry': [{ states: ['failed', 'canceled'] }, { states: ['canceled'], deviceIds: [DEVICES[1]] }],
    'POST /api/device-messages': [
      { messageType: 'REPORT_FIRMWARE', deviceId: 'fuzz-msg', productId: PRODUCT, version: '1.0.0', timestamp: 1 },
      { messageType: 'UPGRADE_FIRMWARE_PROGRESS', deviceId: DEVICES[0], progress: 50, complete: false, success: true, version: '2.0.0' },
      { messageType: 'REQUEST_FIRMWARE', deviceId: DEVICES[2], messageId: 'm-1', timestampe: '1700000000000' },
    ],
    [`POST ${READ_PATH}`]: [{ timeoutMs: 100 }],
  };
}

/** A valid body of the route, or of another route, with none to a few fields replaced by anything. */
function nearValid(route: Route) {
  const all = validBodies();
  const own = all[`${route.method} ${route.path}`];
  const bases = own && own.length > 0 ? own : Object.values(all).flat();
  return fc
    .tuple(fc.constantFrom(...bases), fc.dictionary(fc.constantFrom(...API_FIELDS), anyValue, { maxKeys: 2 }), fc.boolean())
    .map(([base, replaced, keep]) => (keep ? base : { ...base, ...replaced }));
}

const CONTENT_TYPES = [
  'text/plain', 'application/octet-stream', 'application/xml', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x',
  'multipart/form-data', 'application/json', 'application/json; charset=latin1', 'application/json; charset=utf-16', 'APPLICATION/JSON',
  'application/vnd.api+json', 'garbage', 'text/html; charset=',
];

interface Body {
  payload?: string;
  contentType?: string;
}

function body(route: Route): fc.Arbitrary<Body> {
  const asJson = (value: unknown): Body => ({ payload: JSON.stringify(value), contentType: 'application/json' });
  return fc.oneof(
    { weight: 2, arbitrary: fc.constant({}) },
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }).map(asJson) },
    { weight: 3, arbitrary: contractObject.map(asJson) },
    { weight: 6, arbitrary: nearValid(route).map(asJson) },
    { weight: 1, arbitrary: fc.array(fc.oneof(contractObject, nearValid(route)), { maxLength: 5 }).map(asJson) },
    {
      weight: 2,
      arbitrary: fc.tuple(fc.oneof(fc.string({ maxLength: 200 }), fc.constantFrom('{', '{"a":', '[1,', '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{"x":1}}}', '\u0000', 'null', '""', '1e999', '{"a":1}{"b":2}')), fc.option(fc.constantFrom(...CONTENT_TYPES), { nil: undefined }))
        .map(([payload, contentType]) => ({ payload, contentType })),
    },
  );
}

const credentials: fc.Arbitrary<Record<string, string>> = fc.oneof(
  { weight: 5, arbitrary: fc.constant({ authorization: `Bearer ${TEST_API_KEY}` }) },
  { weight: 1, arbitrary: fc.constant({ authorization: `Basic ${Buffer.from(`fuzz:${TEST_API_KEY}`).toString('base64')}` }) },
  { weight: 2, arbitrary: fc.constant({}) },
  { weight: 2, arbitrary: wrongCredentials() },
);

function wrongCredentials(): fc.Arbitrary<Record<string, string>> {
  return fc.oneof(
    fc.constant({ authorization: 'Bearer wrong-key' }),
    fc.constant({ authorization: 'Bearer ' }),
    fc.constant({ authorization: TEST_API_KEY }),
    fc.constant({ authorization: `Token ${TEST_API_KEY}` }),
    fc.constant({ authorization: 'Basic %%%' }),
    fc.constant({ authorization: `Basic ${Buffer.from(TEST_API_KEY).toString('base64')}` }),
    fc.constant({ authorization: `Bearer ${TEST_API_KEY}x` }),
    fc.string({ maxLength: 100 }).filter((value) => /^[\x20-\x7e]*$/.test(value)).map((value) => ({ authorization: value })),
  );
}

const extraHeaders: fc.Arbitrary<Record<string, string>> = fc.oneof(
  { weight: 6, arbitrary: fc.constant({}) },
  { weight: 1, arbitrary: fc.string({ maxLength: 300 }).filter((value) => /^[\x20-\x7e]*$/.test(value)).map((key) => ({ 'idempotency-key': key })) },
  { weight: 1, arbitrary: fc.constantFrom<Record<string, string>>({ 'x-forwarded-for': '../../etc/passwd' }, { 'content-length': '5' }, { 'accept': 'text/html' }, { 'range': 'bytes=-1' }) },
);

const method = fc.constantFrom<Method>('GET', 'POST', 'PUT', 'PATCH', 'DELETE');

const otherPath = fc.oneof(
  fc.constantFrom(
    '/api', '/api/', '/api/../health/live', '/docs/static/../../../package.json', '/docs/static/..%2f..%2f..%2fpackage.json',
    '/files/firmware/..%2f..%2fpackage.json', '/files/firmware/../../package.json', '/admin/queues/../../etc/passwd', '/%00', '//api//tasks',
    '/api/tasks/%2e%2e/firmware', '/metrics/../api/tasks',
  ),
  garbage.map((value) => `/api/${segment(value, false)}`),
);

function anyRequest(): fc.Arbitrary<FuzzRequest> {
  // mostly a documented route with its own method, so requests reach the handlers
  const documented = fc.constantFrom(...routes).chain((route) =>
    fc.oneof({ weight: 3, arbitrary: fc.constant(route.method) }, { weight: 1, arbitrary: method }).chain((chosen) =>
      fc.record({ method: fc.constant(chosen), path: fillPath(route.path, chosen), body: body(route) }),
    ),
  );
  const other = fc.record({ method, path: otherPath, body: body({ method: 'POST', path: '' }) });
  return fc
    .record({
      target: fc.oneof({ weight: 8, arbitrary: documented }, { weight: 1, arbitrary: other }),
      head: fc.integer({ min: 0, max: 19 }),
      query: queryString,
      credentials,
      extra: extraHeaders,
    })
    .map(({ target, head, query, credentials, extra }) => {
      const headers: Record<string, string> = { ...credentials, ...extra };
      if (target.body.contentType !== undefined) headers['content-type'] = target.body.contentType;
      const path = target.path;
      return { method: head === 0 ? 'HEAD' : target.method, url: query ? `${path}?${query}` : path, headers, payload: target.body.payload };
    });
}

/** The JSON types a schema accepts; undefined when it accepts anything. */
function acceptedTypes(schema: JsonSchema | undefined): Set<string> | undefined {
  if (!schema) return undefined;
  const types = new Set<string>();
  const branches = [...(schema.anyOf ?? []), ...(schema.oneOf ?? [])];
  for (const branch of branches) {
    const inner = acceptedTypes(branch);
    if (!inner) return undefined;
    for (const type of inner) types.add(type);
  }
  if (schema.type !== undefined) for (const type of [schema.type].flat()) types.add(type);
  if (schema.nullable) types.add('null');
  for (const value of [...(schema.enum ?? []), ...(schema.const === undefined ? [] : [schema.const])]) {
    types.add(value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value);
  }
  return types.size > 0 ? types : undefined;
}

const WRONG_VALUES: Array<[unknown, (accepted: Set<string>) => boolean]> = [
  ['x', (a) => !a.has('string')],
  [12.5, (a) => !a.has('number')],
  [7, (a) => !a.has('number') && !a.has('integer')],
  [true, (a) => !a.has('boolean')],
  [[], (a) => !a.has('array')],
  [{}, (a) => !a.has('object')],
  [null, (a) => !a.has('null')],
];

/** Objects made only of the body schema's own fields, each with a value of a type the schema never takes. */
function wronglyTypedObject(schema: JsonSchema): fc.Arbitrary<Record<string, unknown>> {
  const properties = new Map<string, JsonSchema[]>();
  for (const branch of [schema, ...(schema.anyOf ?? []), ...(schema.oneOf ?? [])]) {
    for (const [name, property] of Object.entries(branch.properties ?? {})) properties.set(name, [...(properties.get(name) ?? []), property]);
  }
  const choices: Array<[string, unknown[]]> = [];
  for (const [name, schemas] of properties) {
    const accepted = acceptedTypes({ anyOf: schemas });
    if (!accepted) continue;
    const wrong = WRONG_VALUES.filter(([, isWrong]) => isWrong(accepted)).map(([value]) => value);
    if (wrong.length > 0) choices.push([name, wrong]);
  }
  expect(choices.length, JSON.stringify(schema)).toBeGreaterThan(0);
  return fc
    .subarray(choices, { minLength: 1, maxLength: Math.min(3, choices.length) })
    .chain((picked) => fc.tuple(...picked.map(([name, wrong]) => fc.constantFrom(...wrong).map((value) => [name, value] as const))))
    .map((entries) => Object.fromEntries(entries));
}

function realPath(path: string): string {
  return path.replace(/\{[^}]+\}/g, () => {
    if (path.startsWith('/api/tasks')) return seeded.taskId;
    if (path.startsWith('/api/firmware')) return seeded.firmwareId;
    if (path.startsWith('/api/records')) return seeded.recordId;
    return seeded.deviceId;
  });
}

/** Requests that must be refused: without a valid key, or with a body the route's schema refuses, at real ids. */
function refusedRequest(): fc.Arbitrary<FuzzRequest & { why: 'no key' | 'bad body' }> {
  const noKey = fc
    .record({ base: anyRequest(), credentials: fc.oneof(fc.constant({}), wrongCredentials()) })
    .filter(({ base }) => base.url.startsWith('/api') || base.url.startsWith('/metrics') || base.url.startsWith('/files'))
    .map(({ base, credentials }) => {
      const headers = { ...base.headers };
      delete headers.authorization;
      return { ...base, headers: { ...headers, ...credentials }, why: 'no key' as const };
    });
  const badBody = fc.constantFrom(...jsonRoutes).chain((route) => {
    const payload: fc.Arbitrary<Body> = fc.oneof(
      wronglyTypedObject(route.jsonBody!).map((value) => ({ payload: JSON.stringify(value), contentType: 'application/json' })),
      // JSON scalars other than null (an action route reads a null body as {}); NaN would be sent as null
      fc.oneof(fc.string({ maxLength: 50 }), fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean())
        .map((value) => ({ payload: JSON.stringify(value), contentType: 'application/json' })),
      fc.constantFrom('{', '{"a":', '[1,', '{"__proto__":{"x":1}}', '{"a":1}{"b":2}', 'undefined').map((payload) => ({ payload, contentType: 'application/json' })),
      fc.tuple(fc.string({ maxLength: 100 }), fc.constantFrom('text/plain', 'application/xml', 'application/x-www-form-urlencoded', 'garbage'))
        .map(([payload, contentType]) => ({ payload, contentType })),
    );
    return fc.record({ payload, key: fc.option(fc.constantFrom('fuzz-idem-1', 'fuzz-idem-2'), { nil: undefined }) }).map(({ payload, key }) => {
      const headers: Record<string, string> = { authorization: `Bearer ${TEST_API_KEY}` };
      if (payload.contentType) headers['content-type'] = payload.contentType;
      if (key) headers['idempotency-key'] = key;
      return { method: route.method, url: realPath(route.path), headers, payload: payload.payload, why: 'bad body' as const };
    });
  });
  return fc.oneof(noKey, badBody);
}

// ---- checks ----

function describeRequest(request: FuzzRequest): string {
  const payload = request.payload === undefined ? '' : ` body ${JSON.stringify(request.payload.slice(0, 300))}`;
  return `${request.method} ${request.url.slice(0, 300)} ${JSON.stringify(request.headers).slice(0, 300)}${payload}`;
}

async function send(request: FuzzRequest): Promise<LightMyRequestResponse> {
  const options: InjectOptions = { method: request.method, url: request.url, headers: request.headers };
  if (request.payload !== undefined) options.payload = request.payload;
  return t.app.inject(options);
}

function checkAnswer(request: FuzzRequest, response: LightMyRequestResponse): void {
  const label = `${describeRequest(request)} → ${response.statusCode} ${response.body.slice(0, 500)}`;
  const path = request.url.split('?')[0];
  // readiness answers 503 by design when a dependency is down
  const designed5xx = response.statusCode === 503 && path === '/health/ready';
  if (!designed5xx) expect(response.statusCode, label).toBeLessThan(500);
  expect(response.body, label).not.toContain('    at ');
  expect(response.body, label).not.toMatch(/node_modules|"stack"/);
  expect(response.body, label).not.toMatch(/"name":\s*"otter"|root:x:0:0/);
  if (response.statusCode < 400 || request.method === 'HEAD' || designed5xx) return;
  expect(String(response.headers['content-type']), label).toMatch(/^application\/json/);
  const answer = response.json() as Record<string, unknown>;
  expectErrorKeys(answer, label);
  expect(answer.statusCode, label).toBe(response.statusCode);
  expect(answer.code, label).toMatch(/^[a-z_]+$/);
  expect(typeof answer.error, label).toBe('string');
  expect(typeof answer.message, label).toBe('string');
}

/** Whether the request, once its path is normalised as a server sees it, is under /api: any method, known or not, needs the key. */
function behindKey(url: string): boolean {
  const path = new URL(url, 'http://otter.test').pathname;
  return path === '/api' || path.startsWith('/api/');
}

async function databaseFingerprint(): Promise<Record<string, string>> {
  const fingerprint: Record<string, string> = {};
  for (const table of TABLES) {
    const { rows } = await sql<{ digest: string }>`
      SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) AS digest FROM ${sql.table(table)} t`.execute(t.database.db);
    fingerprint[table] = rows[0]!.digest;
  }
  return fingerprint;
}

describe('API fuzzing', () => {
  it('500 requests that must be refused (no valid key, or a body the schema refuses at real ids) change nothing', async () => {
    const seen = { 'no key': 0, 'bad body': 0 };
    await fc.assert(
      fc.asyncProperty(refusedRequest(), async (request) => {
        const before = await databaseFingerprint();
        const response = await send(request);
        checkAnswer(request, response);
        const label = `${describeRequest(request)} → ${response.statusCode} ${response.body.slice(0, 300)}`;
        seen[request.why] += 1;
        if (request.why === 'bad body') expect([400, 413, 415], label).toContain(response.statusCode);
        else if (behindKey(request.url)) expect(response.statusCode, label).toBe(401);
        expect(await databaseFingerprint(), label).toEqual(before);
      }),
      { seed: SEED, numRuns: 500 },
    );
    expect(seen['no key']).toBeGreaterThan(100);
    expect(seen['bad body']).toBeGreaterThan(100);
  });

  it('1,500 random requests, with and without the key: never a 5xx, errors in the one shape', async () => {
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(anyRequest(), async (request) => {
        const response = await send(request);
        statuses.set(response.statusCode, (statuses.get(response.statusCode) ?? 0) + 1);
        checkAnswer(request, response);
      }),
      { seed: SEED, numRuns: 1_500 },
    );
    // the generators reach past authentication and validation into the handlers
    const count = (predicate: (status: number) => boolean) => [...statuses].filter(([status]) => predicate(status)).reduce((sum, [, n]) => sum + n, 0);
    expect(count((status) => status < 300), JSON.stringify([...statuses])).toBeGreaterThan(50);
    expect(count((status) => status === 400), JSON.stringify([...statuses])).toBeGreaterThan(100);
    expect(count((status) => status === 404), JSON.stringify([...statuses])).toBeGreaterThan(50);
    expect(count((status) => status === 401), JSON.stringify([...statuses])).toBeGreaterThan(100);
  });
});
