// Strict bodies: every route that takes JSON refuses a property its schema does not know, at any
// depth, with 400 validation_error and `details[].path` naming it. Table-driven from the OpenAPI
// document (built from the route schemas), so a route added later is checked without a line here.
// For each route the test makes a body its schema accepts (with every optional field, to reach
// every depth), checks that the route takes it, then adds an unknown property at each object in it.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';

type Schema = Record<string, unknown>;
interface Operation {
  parameters?: Array<{ in: string; name: string; schema?: Schema }>;
  requestBody?: { content?: Record<string, { schema?: Schema }> };
}
interface OpenApiDocument {
  paths: Record<string, Record<string, Operation>>;
}

/** Routes whose body is open on purpose: device messages are decoded as JetLinks does (unknown fields ignored). */
const OPEN_BODIES = new Set(['POST /api/device-messages']);
const UNKNOWN = 'unexpectedProperty';

/** Strings for the patterns the API uses; a new pattern fails here until a sample is added. */
const PATTERN_SAMPLES: Array<[RegExp, (key: string) => string]> = [
  // ids: one per field, so a device is not its own gateway
  [/^\^\[A-Za-z0-9_.:-\]\{1,64\}\$$/, (key) => `${key || 'id'}-1`],
  [/^\^\[0-9a-fA-F\]\{0,128\}\$$/, () => 'abcdef0123456789'],
  // a maintenance window's local start, HH:MM
  [/^\^\(\[01\]\[0-9\]\|2\[0-3\]\):\[0-5\]\[0-9\]\$$/, () => '02:30'],
];

function sampleString(schema: Schema, key: string): string {
  if (schema.format === 'uuid') return randomUUID();
  if (schema.format === 'date-time') return new Date(Date.now() + 3_600_000).toISOString();
  if (schema.format === 'uri' || key === 'url') return 'https://downloads.example.com/fw.bin';
  if (key === 'timeZone') return 'Europe/Berlin';
  if (typeof schema.pattern === 'string') {
    const known = PATTERN_SAMPLES.find(([pattern]) => pattern.test(schema.pattern as string));
    if (!known) throw new Error(`no sample for the pattern ${schema.pattern} (add one to PATTERN_SAMPLES)`);
    return known[1](key);
  }
  const minLength = typeof schema.minLength === 'number' ? schema.minLength : 1;
  return 'x'.repeat(Math.max(1, minLength));
}

/** A value the schema accepts, with every optional property filled in. */
function sample(schema: Schema | undefined, key = ''): unknown {
  if (!schema) return 'x';
  if ('const' in schema) return schema.const;
  if (Array.isArray(schema.enum)) return schema.enum[0];
  if ('default' in schema && typeof schema.default !== 'object') return schema.default;
  const branches = (schema.anyOf ?? schema.oneOf) as Schema[] | undefined;
  if (branches) {
    return sample(chosenBranch(schema), key);
  }
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') : schema.type;
  switch (type) {
    case 'object': {
      const properties = (schema.properties ?? {}) as Record<string, Schema>;
      return Object.fromEntries(Object.entries(properties).map(([name, child]) => [name, sample(child, name)]));
    }
    case 'array': {
      const item = sample(schema.items as Schema | undefined, key);
      const count = Math.max(1, typeof schema.minItems === 'number' ? schema.minItems : 1);
      if (schema.uniqueItems && count > 1) throw new Error(`cannot sample ${count} unique items for ${key}`);
      return Array.from({ length: count }, () => item);
    }
    case 'string':
      return sampleString(schema, key);
    case 'integer':
    case 'number': {
      const min = typeof schema.minimum === 'number' ? schema.minimum : 1;
      return Math.max(min, 1) <= (typeof schema.maximum === 'number' ? schema.maximum : Infinity) ? Math.max(min, 1) : min;
    }
    case 'boolean':
      return true;
    default:
      return 'x';
  }
}

/** The branch `sample` fills for a union. */
function chosenBranch(schema: Schema): Schema {
  const branches = (schema.anyOf ?? schema.oneOf) as Schema[] | undefined;
  if (!branches) return schema;
  return chosenBranch(branches.find((branch) => branch.type !== 'null') ?? branches[0]!);
}

/** JSON Pointers of every object with named properties in `value` (maps excluded), the root included. */
function objectPointers(schema: Schema | undefined, value: unknown, pointer = ''): string[] {
  if (!schema) return [];
  const node = chosenBranch(schema);
  if (Array.isArray(value)) return value.length > 0 ? objectPointers(node.items as Schema, value[0], `${pointer}/0`) : [];
  if (typeof value !== 'object' || value === null || !node.properties) return [];
  const properties = node.properties as Record<string, Schema>;
  return [pointer, ...Object.entries(value).flatMap(([name, child]) => objectPointers(properties[name], child, `${pointer}/${name}`))];
}

function withUnknownAt(body: unknown, pointer: string): unknown {
  const copy = structuredClone(body) as Record<string, unknown>;
  let node: unknown = copy;
  for (const segment of pointer.split('/').slice(1)) node = (node as Record<string, unknown>)[segment];
  (node as Record<string, unknown>)[UNKNOWN] = 1;
  return copy;
}

/** Every object schema in `schema` that lets unknown properties through (a map, whose values have a schema, is not open). */
function openObjects(schema: unknown, path = '#'): string[] {
  if (typeof schema !== 'object' || schema === null) return [];
  if (Array.isArray(schema)) return schema.flatMap((item, i) => openObjects(item, `${path}/${i}`));
  const node = schema as Schema;
  const allowsAny = node.additionalProperties === undefined || node.additionalProperties === true;
  const open = (node.type === 'object' || node.properties) && allowsAny && !node.patternProperties ? [path] : [];
  const children = Object.entries(node).flatMap(([key, child]): Array<[string, unknown]> => {
    if (key === 'properties' || key === 'patternProperties') {
      return Object.entries(child as Schema).map(([name, grandchild]) => [`${key}/${name}`, grandchild]);
    }
    return key === 'example' || key === 'default' || key === 'enum' || key === 'const' ? [] : [[key, child]];
  });
  return [...open, ...children.flatMap(([key, child]) => openObjects(child, `${path}/${key}`))];
}

interface JsonRoute {
  label: string;
  method: string;
  url: string;
  schema: Schema;
}

function jsonRoutes(document: OpenApiDocument): JsonRoute[] {
  const routes: JsonRoute[] = [];
  for (const [path, operations] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(operations)) {
      const schema = operation.requestBody?.content?.['application/json']?.schema;
      if (!schema) continue;
      const params = new Map((operation.parameters ?? []).filter((p) => p.in === 'path').map((p) => [p.name, p.schema]));
      const url = path.replace(/\{([^}]+)\}/g, (_match, name: string) => String(sample(params.get(name), name)));
      routes.push({ label: `${method.toUpperCase()} ${path}`, method: method.toUpperCase(), url, schema });
    }
  }
  return routes;
}

describe('strict bodies', () => {
  let test: TestApp;
  let routes: JsonRoute[];

  beforeAll(async () => {
    test = await buildTestApp();
    const document = (await test.app.inject({ method: 'GET', url: '/docs/json' })).json() as OpenApiDocument;
    routes = jsonRoutes(document);
  });

  afterAll(async () => {
    await test?.close();
  });

  it('finds the JSON routes in the OpenAPI document', () => {
    const labels = routes.map((route) => route.label);
    for (const expected of ['POST /api/firmware', 'PATCH /api/firmware/{id}', 'PUT /api/devices', 'POST /api/tasks', 'PATCH /api/tasks/{id}', 'POST /api/tasks/{id}/release']) {
      expect(labels).toContain(expected);
    }
  });

  it('closes every object of every JSON body in the OpenAPI document, but the device messages', () => {
    const open = routes.filter((route) => openObjects(route.schema).length > 0).map((route) => route.label);
    expect(open.sort()).toEqual([...OPEN_BODIES].sort());
  });

  it('refuses an unknown property at every depth of every body, naming it', async () => {
    let checked = 0;
    for (const route of routes.filter((r) => !OPEN_BODIES.has(r.label))) {
      const body = sample(route.schema);
      // the sample itself passes validation (whatever the route then makes of it)
      const accepted = await test.app.inject({ method: route.method as 'POST', url: route.url, headers: test.auth, payload: body as object });
      expect(accepted.statusCode === 400 ? accepted.json() : {}, `${route.label} refused its own sample ${JSON.stringify(body)}`)
        .not.toMatchObject({ code: 'validation_error' });

      for (const pointer of objectPointers(route.schema, body)) {
        const response = await test.app.inject({
          method: route.method as 'POST',
          url: route.url,
          headers: test.auth,
          payload: withUnknownAt(body, pointer) as object,
        });
        const label = `${route.label} with ${UNKNOWN} at "${pointer || '/'}"`;
        expect(response.statusCode, `${label}: ${response.body}`).toBe(400);
        const answer = response.json() as { code: string; message: string; details?: Array<{ path: string; message: string }> };
        expect(answer.code, label).toBe('validation_error');
        expect(answer.details, label).toContainEqual({ path: `${pointer}/${UNKNOWN}`, message: 'unknown property' });
        expect(answer.message, label).toContain(`${pointer}/${UNKNOWN}`);
        checked += 1;
      }
    }
    // every route was reached at more than its root (the task bodies alone have three nested objects)
    expect(checked).toBeGreaterThan(routes.length);
  });

  it('names the misspelt rollout limit of the issue, and stores nothing', async () => {
    const firmware = await test.app.inject({
      method: 'POST',
      url: '/api/firmware',
      headers: test.auth,
      payload: { productId: 'strict-p', name: 'fw', version: '1.0.0', versionOrder: 1, url: 'https://example.com/fw.bin' },
    });
    expect(firmware.statusCode).toBe(201);
    const typo = await test.app.inject({
      method: 'POST',
      url: '/api/tasks',
      headers: test.auth,
      payload: { firmwareId: firmware.json().id, name: 'spring', rollout: { maxPerMinut: 10 } },
    });
    expect(typo.statusCode).toBe(400);
    expect(typo.json()).toEqual({
      statusCode: 400,
      code: 'validation_error',
      error: 'Bad Request',
      message: 'body/rollout/maxPerMinut: unknown property',
      details: [{ path: '/rollout/maxPerMinut', message: 'unknown property' }],
    });
    const tasks = await test.app.inject({ method: 'GET', url: '/api/tasks', headers: test.auth });
    expect(tasks.json().total).toBe(0);

    const version = await test.app.inject({
      method: 'PATCH',
      url: `/api/firmware/${firmware.json().id}`,
      headers: test.auth,
      payload: { verison: '2.0.0' },
    });
    expect(version.statusCode).toBe(400);
    expect(version.json().details).toEqual([{ path: '/verison', message: 'unknown property' }]);
  });
});
