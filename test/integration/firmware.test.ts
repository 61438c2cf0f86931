// The firmware catalogue over HTTP: create, read, list, change, delete, validation and conflicts.
import { access } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';

let t: TestApp;

beforeAll(async () => {
  t = await buildTestApp();
});

afterAll(async () => {
  await t?.close();
});

interface FirmwareJson {
  id: string;
  productId: string;
  name: string;
  version: string;
  versionOrder: number;
  url: string | null;
  sign: string | null;
  signMethod: string | null;
  size: number | null;
  properties: Record<string, string>;
  description: string | null;
  hasFile: boolean;
  revision: number;
  createdAt: string;
  updatedAt: string;
}

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
let nextOrder = 1;

async function create(fields: Record<string, unknown> = {}): Promise<FirmwareJson> {
  const response = await t.app.inject({
    method: 'POST',
    url: '/api/firmware',
    headers: t.auth,
    payload: { productId: 'prod-a', name: 'fw', version: `1.0.${nextOrder}`, versionOrder: nextOrder++, ...fields },
  });
  expect(response.statusCode, response.body).toBe(201);
  return response.json();
}

async function firmwareCount(): Promise<number> {
  const row = await t.database.db.selectFrom('firmware').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  return Number(row.n);
}

describe('POST /api/firmware', () => {
  it('creates a firmware with defaults for the optional fields', async () => {
    const response = await t.app.inject({
      method: 'POST',
      url: '/api/firmware',
      headers: t.auth,
      payload: { productId: 'prod-min', name: 'Base', version: '0.1.0', versionOrder: 0 },
    });
    expect(response.statusCode).toBe(201);
    const body = response.json<FirmwareJson>();
    expect(body).toEqual({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      productId: 'prod-min',
      name: 'Base',
      version: '0.1.0',
      versionOrder: 0,
      url: null,
      sign: null,
      signMethod: null,
      size: null,
      properties: {},
      description: null,
      hasFile: false,
      revision: 1,
      createdAt: expect.stringMatching(ISO),
      updatedAt: expect.stringMatching(ISO),
    });
  });

  it('stores every field and answers them on GET', async () => {
    const fields = {
      productId: 'prod-full',
      name: 'Full',
      version: '2.3.4',
      versionOrder: 2 ** 31 - 1,
      url: 'https://cdn.example.com/fw/2.3.4.bin',
      sign: 'ABCDEF0123456789abcdef0123456789',
      signMethod: 'md5',
      size: 123_456_789_012,
      properties: { region: 'eu', 'build.id': '42' },
      description: 'a firmware with everything set',
    };
    const created = await create(fields);
    expect(created).toMatchObject({ ...fields, hasFile: false });
    const read = await t.app.inject({ method: 'GET', url: `/api/firmware/${created.id}`, headers: t.auth });
    expect(read.statusCode).toBe(200);
    expect(read.json()).toEqual(created);
  });

  it('refuses a versionOrder the product already has, but not one of another product', async () => {
    await create({ productId: 'prod-dup', versionOrder: 7 });
    const before = await firmwareCount();
    const duplicate = await t.app.inject({
      method: 'POST',
      url: '/api/firmware',
      headers: t.auth,
      payload: { productId: 'prod-dup', name: 'again', version: '9.9', versionOrder: 7 },
    });
    expect(duplicate.statusCode).toBe(409);
    expect(duplicate.json()).toMatchObject({ statusCode: 409, code: 'firmware_version_exists', error: 'Conflict' });
    expect(await firmwareCount()).toBe(before);
    await create({ productId: 'prod-dup-other', versionOrder: 7 });
  });

  it('asks for the API key', async () => {
    const response = await t.app.inject({
      method: 'POST',
      url: '/api/firmware',
      payload: { productId: 'p', name: 'n', version: 'v', versionOrder: 1 },
    });
    expect(response.statusCode).toBe(401);
    expect(response.json().code).toBe('unauthorized');
  });
});

describe('validation', () => {
  const valid = { productId: 'prod-val', name: 'n', version: 'v', versionOrder: 1 };
  const tooManyProperties = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']));
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['missing name', { ...valid, name: undefined }, 'name'],
    ['empty name', { ...valid, name: '' }, 'name'],
    ['name over 128', { ...valid, name: 'x'.repeat(129) }, 'name'],
    ['version over 64', { ...valid, version: 'v'.repeat(65) }, 'version'],
    ['description over 2000', { ...valid, description: 'd'.repeat(2001) }, 'description'],
    ['url over 3000', { ...valid, url: `https://e.com/${'a'.repeat(2990)}` }, 'url'],
    ['ftp url', { ...valid, url: 'ftp://e.com/fw.bin' }, 'url'],
    ['javascript url', { ...valid, url: 'javascript:alert(1)' }, 'url'],
    ['non-hex sign', { ...valid, sign: 'xyz' }, 'sign'],
    ['sign over 128', { ...valid, sign: 'a'.repeat(129) }, 'sign'],
    ['unknown signMethod', { ...valid, signMethod: 'sha1' }, 'signMethod'],
    ['string versionOrder', { ...valid, versionOrder: '3' }, 'versionOrder'],
    ['fractional versionOrder', { ...valid, versionOrder: 1.5 }, 'versionOrder'],
    ['negative versionOrder', { ...valid, versionOrder: -1 }, 'versionOrder'],
    ['versionOrder over 2^31-1', { ...valid, versionOrder: 2 ** 31 }, 'versionOrder'],
    ['negative size', { ...valid, size: -1 }, 'size'],
    ['string size', { ...valid, size: '10' }, 'size'],
    ['bad productId', { ...valid, productId: 'has space' }, 'productId'],
    ['productId over 64', { ...valid, productId: 'p'.repeat(65) }, 'productId'],
    ['numeric name', { ...valid, name: 5 }, 'name'],
    ['too many properties', { ...valid, properties: tooManyProperties }, 'properties'],
    ['property value over 1024', { ...valid, properties: { a: 'v'.repeat(1025) } }, 'properties'],
    ['non-string property value', { ...valid, properties: { a: 1 } }, 'properties'],
  ];

  it.each(cases)('refuses %s with 400 naming the field', async (_label, payload, field) => {
    const before = await firmwareCount();
    const response = await t.app.inject({ method: 'POST', url: '/api/firmware', headers: t.auth, payload });
    expect(response.statusCode, response.body).toBe(400);
    const body = response.json();
    expect(body.code).toBe('validation_error');
    expect(body.message).toContain(field);
    expect(await firmwareCount()).toBe(before);
  });

  it('accepts the limits themselves', async () => {
    const atLimits = await create({
      productId: 'p'.repeat(64),
      name: 'n'.repeat(128),
      version: 'v'.repeat(64),
      description: 'd'.repeat(2000),
      url: `http://e.com/${'a'.repeat(3000 - 'http://e.com/'.length)}`,
      sign: 'f'.repeat(128),
      properties: Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, 'v'.repeat(1024)])),
    });
    expect(atLimits.url).toHaveLength(3000);
    expect(Object.keys(atLimits.properties)).toHaveLength(64);
  });

  it('refuses a malformed id with 400 on every route', async () => {
    for (const method of ['GET', 'PATCH', 'DELETE'] as const) {
      const response = await t.app.inject({
        method,
        url: '/api/firmware/not-a-uuid',
        headers: t.auth,
        ...(method === 'PATCH' ? { payload: { name: 'x' } } : {}),
      });
      expect(response.statusCode, method).toBe(400);
      expect(response.json().code).toBe('validation_error');
      expect(response.json().message).toContain('id');
    }
  });

  it('answers 404 not_found for an unknown id on every route', async () => {
    const unknown = '00000000-0000-4000-8000-000000000000';
    for (const method of ['GET', 'PATCH', 'DELETE'] as const) {
      const response = await t.app.inject({
        method,
        url: `/api/firmware/${unknown}`,
        headers: t.auth,
        ...(method === 'PATCH' ? { payload: { name: 'x' } } : {}),
      });
      expect(response.statusCode, method).toBe(404);
      expect(response.json()).toMatchObject({ statusCode: 404, code: 'not_found', error: 'Not Found' });
    }
  });
});

describe('PATCH /api/firmware/:id', () => {
  it('changes the given fields only and moves updatedAt', async () => {
    const created = await create({ productId: 'prod-patch', description: 'old', url: 'https://e.com/a.bin' });
    await new Promise((resolve) => setTimeout(resolve, 5));
    const response = await t.app.inject({
      method: 'PATCH',
      url: `/api/firmware/${created.id}`,
      headers: t.auth,
      payload: { name: 'renamed', properties: { channel: 'beta' }, url: null, signMethod: 'sha256' },
    });
    expect(response.statusCode, response.body).toBe(200);
    const patched = response.json<FirmwareJson>();
    expect(patched).toEqual({
      ...created,
      name: 'renamed',
      properties: { channel: 'beta' },
      url: null,
      signMethod: 'sha256',
      revision: created.revision + 1,
      updatedAt: expect.stringMatching(ISO),
    });
    expect(Date.parse(patched.updatedAt)).toBeGreaterThan(Date.parse(created.updatedAt));
    const read = await t.app.inject({ method: 'GET', url: `/api/firmware/${created.id}`, headers: t.auth });
    expect(read.json()).toEqual(patched);
  });

  it('refuses a versionOrder taken in the product with 409 and changes nothing', async () => {
    await create({ productId: 'prod-patch-dup', versionOrder: 100 });
    const other = await create({ productId: 'prod-patch-dup', versionOrder: 101 });
    const response = await t.app.inject({
      method: 'PATCH',
      url: `/api/firmware/${other.id}`,
      headers: t.auth,
      payload: { versionOrder: 100, name: 'should not stick' },
    });
    expect(response.statusCode).toBe(409);
    expect(response.json().code).toBe('firmware_version_exists');
    const read = await t.app.inject({ method: 'GET', url: `/api/firmware/${other.id}`, headers: t.auth });
    expect(read.json()).toEqual(other);

    const moved = await t.app.inject({
      method: 'PATCH',
      url: `/api/firmware/${other.id}`,
      headers: t.auth,
      payload: { productId: 'prod-patch-dup-2', versionOrder: 100 },
    });
    expect(moved.statusCode).toBe(200);
  });

  it('refuses an empty change, an unknown field alone, and bad values', async () => {
    const created = await create({ productId: 'prod-patch-bad' });
    for (const payload of [{}, { colour: 'red' }, { name: '' }, { versionOrder: -5 }, { url: 'ftp://x' }, { signMethod: 'crc' }]) {
      const response = await t.app.inject({ method: 'PATCH', url: `/api/firmware/${created.id}`, headers: t.auth, payload });
      expect(response.statusCode, JSON.stringify(payload)).toBe(400);
      expect(response.json().code).toBe('validation_error');
    }
    const read = await t.app.inject({ method: 'GET', url: `/api/firmware/${created.id}`, headers: t.auth });
    expect(read.json()).toEqual(created);
  });
});

describe('GET /api/firmware', () => {
  const product = 'prod-list';
  const made: FirmwareJson[] = [];

  beforeAll(async () => {
    made.push(await create({ productId: product, name: 'Alpha Core', version: '1.0.0' }));
    made.push(await create({ productId: product, name: 'beta core', version: '1.1.0' }));
    made.push(await create({ productId: product, name: 'Gamma', version: '2.0.0-RC1' }));
    made.push(await create({ productId: product, name: '100%_done', version: '3.0.0' }));
    made.push(await create({ productId: product, name: '100x done', version: '3.0.1' }));
    await create({ productId: 'prod-list-other', name: 'Alpha Core', version: '1.0.0' });
  });

  it('lists a product newest first with total, page and pageSize', async () => {
    const response = await t.app.inject({ method: 'GET', url: `/api/firmware?productId=${product}`, headers: t.auth });
    expect(response.statusCode).toBe(200);
    const body = response.json();
    expect(body.total).toBe(5);
    expect(body.page).toBe(1);
    expect(body.pageSize).toBe(20);
    expect(body.items.map((item: FirmwareJson) => item.id)).toEqual(made.map((item) => item.id).reverse());
  });

  it('pages', async () => {
    const pages = [];
    for (const page of [1, 2, 3]) {
      const response = await t.app.inject({
        method: 'GET',
        url: `/api/firmware?productId=${product}&page=${page}&pageSize=2`,
        headers: t.auth,
      });
      const body = response.json();
      expect(body).toMatchObject({ total: 5, page, pageSize: 2 });
      pages.push(...body.items.map((item: FirmwareJson) => item.id));
    }
    expect(pages).toEqual(made.map((item) => item.id).reverse());
    const beyond = await t.app.inject({ method: 'GET', url: `/api/firmware?productId=${product}&page=4&pageSize=2`, headers: t.auth });
    expect(beyond.json()).toMatchObject({ items: [], total: 5 });
  });

  it('filters by name or version, case-insensitively', async () => {
    const search = async (q: string) => {
      const response = await t.app.inject({
        method: 'GET',
        url: `/api/firmware?productId=${product}&q=${encodeURIComponent(q)}`,
        headers: t.auth,
      });
      expect(response.statusCode).toBe(200);
      return response.json().items.map((item: FirmwareJson) => item.name).sort();
    };
    expect(await search('CORE')).toEqual(['Alpha Core', 'beta core']);
    expect(await search('rc1')).toEqual(['Gamma']);
    expect(await search('1.')).toEqual(['Alpha Core', 'beta core']);
    // LIKE wildcards in q match themselves only
    expect(await search('%_')).toEqual(['100%_done']);
    expect(await search('0_d')).toEqual([]);
    expect(await search('nothing like it')).toEqual([]);
  });

  it('lists every product without a filter', async () => {
    const response = await t.app.inject({ method: 'GET', url: '/api/firmware?q=alpha%20core', headers: t.auth });
    expect(response.json().items.map((item: FirmwareJson) => item.productId).sort()).toEqual([product, 'prod-list-other']);
  });

  it('refuses bad paging and filters', async () => {
    for (const query of ['page=0', 'pageSize=501', 'pageSize=abc', 'productId=has%20space', `q=${'q'.repeat(129)}`]) {
      const response = await t.app.inject({ method: 'GET', url: `/api/firmware?${query}`, headers: t.auth });
      expect(response.statusCode, query).toBe(400);
      expect(response.json().code).toBe('validation_error');
    }
  });
});

describe('DELETE /api/firmware/:id', () => {
  it('deletes a firmware', async () => {
    const created = await create({ productId: 'prod-del' });
    const response = await t.app.inject({ method: 'DELETE', url: `/api/firmware/${created.id}`, headers: t.auth });
    expect(response.statusCode).toBe(204);
    expect(response.body).toBe('');
    const read = await t.app.inject({ method: 'GET', url: `/api/firmware/${created.id}`, headers: t.auth });
    expect(read.statusCode).toBe(404);
    const again = await t.app.inject({ method: 'DELETE', url: `/api/firmware/${created.id}`, headers: t.auth });
    expect(again.statusCode).toBe(404);
  });

  it('removes the uploaded file too', async () => {
    const created = await create({ productId: 'prod-del-file' });
    const upload = await t.app.inject({
      method: 'PUT',
      url: `/api/firmware/${created.id}/file`,
      headers: { ...t.auth, 'content-type': 'application/octet-stream' },
      payload: Buffer.from('firmware bytes'),
    });
    expect(upload.statusCode, upload.body).toBe(200);
    const filePath = t.app.storage.filePath(created.id);
    await access(filePath);
    const response = await t.app.inject({ method: 'DELETE', url: `/api/firmware/${created.id}`, headers: t.auth });
    expect(response.statusCode).toBe(204);
    await expect(access(filePath)).rejects.toThrow(/ENOENT/);
  });

  it('refuses with 409 firmware_in_use while a task has waiting or processing records', async () => {
    const created = await create({ productId: 'prod-in-use' });
    const task = await t.database.db.insertInto('upgrade_tasks').values({
      firmware_id: created.id,
      product_id: created.productId,
      firmware_version: created.version,
      name: 'rollout',
      mode: 'push',
      timeout_seconds: 600,
      retry: JSON.stringify({ maxAttempts: 1, backoffSeconds: 1, on: [] }),
      rollout: JSON.stringify({}),
      waiting: 1,
    }).returning('id').executeTakeFirstOrThrow();

    const busy = await t.app.inject({ method: 'DELETE', url: `/api/firmware/${created.id}`, headers: t.auth });
    expect(busy.statusCode).toBe(409);
    expect(busy.json()).toMatchObject({ statusCode: 409, code: 'firmware_in_use' });

    await t.database.db.updateTable('upgrade_tasks').set({ waiting: 0, processing: 2 }).where('id', '=', task.id).execute();
    const processing = await t.app.inject({ method: 'DELETE', url: `/api/firmware/${created.id}`, headers: t.auth });
    expect(processing.statusCode).toBe(409);
    expect(processing.json().code).toBe('firmware_in_use');

    await t.database.db.updateTable('upgrade_tasks').set({ processing: 0, success: 3 }).where('id', '=', task.id).execute();
    const done = await t.app.inject({ method: 'DELETE', url: `/api/firmware/${created.id}`, headers: t.auth });
    expect(done.statusCode).toBe(204);
    const left = await t.database.db.selectFrom('upgrade_tasks').select('id').where('id', '=', task.id).execute();
    expect(left).toEqual([]);
  });
});

describe('OpenAPI', () => {
  it('describes every firmware route with its schemas', async () => {
    const response = await t.app.inject({ method: 'GET', url: '/docs/json' });
    expect(response.statusCode).toBe(200);
    const paths = response.json().paths;
    const operations: Array<[string, string]> = [
      ['/api/firmware', 'post'],
      ['/api/firmware', 'get'],
      ['/api/firmware/{id}', 'get'],
      ['/api/firmware/{id}', 'patch'],
      ['/api/firmware/{id}', 'delete'],
      ['/api/firmware/{id}/file', 'put'],
      ['/files/firmware/{id}', 'get'],
    ];
    for (const [path, method] of operations) {
      const operation = paths[path]?.[method];
      expect(operation, `${method} ${path}`).toBeDefined();
      expect(operation.tags).toEqual(['firmware']);
      expect(operation.summary).toBeTruthy();
    }
    const createBody = paths['/api/firmware'].post.requestBody.content['application/json'].schema;
    expect(createBody.properties.name.maxLength).toBe(128);
    expect(createBody.required).toEqual(expect.arrayContaining(['productId', 'name', 'version', 'versionOrder']));
    expect(paths['/api/firmware'].post.responses['409']).toBeDefined();
    const upload = paths['/api/firmware/{id}/file'].put.requestBody.content;
    expect(Object.keys(upload).sort()).toEqual(['application/octet-stream', 'multipart/form-data']);
  });
});
