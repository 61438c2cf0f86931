// Device tags against real Postgres (docs/rest-api.md#devices): bulk upsert with tags (a given map
// replaces the stored one, an omitted one keeps it), their limits, `GET /api/devices?tag=k:v`, release
// by tags with fromVersions and exact skip counts, and a property test: over random fleets and
// selections, both the released devices and the listed ones equal a plain in-memory filter.
import fc from 'fast-check';
import type { InjectOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { createFirmware } from '../helpers/rollout.ts';

type Tags = Record<string, string>;
interface DeviceBody {
  id: string;
  productId: string;
  name: string | null;
  firmwareVersion: string | null;
  tags: Tags;
}
interface ReleaseBody {
  added: number;
  skipped: Record<string, number>;
  skippedDevices: Array<{ deviceId: string; reason: string }>;
}
interface ErrorBody {
  code: string;
  message: string;
  details?: Array<{ path: string; message: string }>;
}

let t: TestApp;

beforeAll(async () => {
  t = await buildTestApp();
});

afterAll(async () => {
  await t?.close();
});

/** `payload` as a string: raw JSON text (what JSON.stringify would never write). */
async function call(method: InjectOptions['method'], url: string, payload?: unknown) {
  const headers = typeof payload === 'string' ? { ...t.auth, 'content-type': 'application/json' } : t.auth;
  return t.app.inject({ method, url, headers, ...(payload === undefined ? {} : { payload: payload as InjectOptions['payload'] }) });
}

async function putDevices(devices: unknown[]): Promise<number> {
  const response = await call('PUT', '/api/devices', { devices });
  expect(response.statusCode, response.body).toBe(200);
  return (response.json() as { upserted: number }).upserted;
}

async function device(id: string): Promise<DeviceBody> {
  const response = await call('GET', `/api/devices/${id}`);
  expect(response.statusCode, response.body).toBe(200);
  return response.json();
}

/** Ids of the devices `GET /api/devices` lists for these `tag` values (and product), sorted. */
async function listByTags(tags: string[], productId?: string): Promise<string[]> {
  const query = new URLSearchParams({ pageSize: '500' });
  if (productId !== undefined) query.set('productId', productId);
  for (const tag of tags) query.append('tag', tag);
  const response = await call('GET', `/api/devices?${query}`);
  expect(response.statusCode, response.body).toBe(200);
  const page = response.json() as { items: DeviceBody[]; total: number };
  expect(page.total).toBe(page.items.length);
  return page.items.map((item) => item.id).sort();
}

async function newTask(productId: string, version = '2.0.0'): Promise<string> {
  const firmwareId = await createFirmware(t.app, t.auth, productId, version, Number.parseInt(version.replaceAll('.', ''), 10));
  const response = await call('POST', '/api/tasks', { firmwareId, name: `to ${version}` });
  expect(response.statusCode, response.body).toBe(201);
  return (response.json() as { id: string }).id;
}

async function release(taskId: string, body: Record<string, unknown>): Promise<ReleaseBody> {
  const response = await call('POST', `/api/tasks/${taskId}/release`, body);
  expect(response.statusCode, response.body).toBe(200);
  return response.json();
}

async function recordDevices(taskId: string): Promise<string[]> {
  const response = await call('GET', `/api/tasks/${taskId}/records?pageSize=500`);
  expect(response.statusCode, response.body).toBe(200);
  return (response.json() as { items: Array<{ deviceId: string }> }).items.map((item) => item.deviceId).sort();
}

function expectValidationError(response: { statusCode: number; body: string; json(): unknown }, path: string): ErrorBody {
  expect(response.statusCode, response.body).toBe(400);
  const body = response.json() as ErrorBody;
  expect(body.code).toBe('validation_error');
  expect(body.details?.map((detail) => detail.path), response.body).toContain(path);
  return body;
}

const manyTags = (n: number): Tags => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, `v${i}`]));

describe('PUT /api/devices with tags', () => {
  it('stores the tags; a given map replaces all of them, an omitted one keeps them', async () => {
    expect(await putDevices([
      { id: 'up-1', productId: 'up-p', firmwareVersion: '1.0.0', tags: { region: 'eu', hw: 'rev2' } },
      { id: 'up-2', productId: 'up-p', tags: {} },
      { id: 'up-3', productId: 'up-p', name: 'no tags' },
    ])).toBe(3);
    expect((await device('up-1')).tags).toEqual({ region: 'eu', hw: 'rev2' });
    expect((await device('up-2')).tags).toEqual({});
    expect((await device('up-3')).tags).toEqual({});

    // replace: hw is gone
    await putDevices([{ id: 'up-1', productId: 'up-p', tags: { region: 'us' } }]);
    expect(await device('up-1')).toMatchObject({ tags: { region: 'us' }, firmwareVersion: '1.0.0' });

    // omitted: kept, while the other fields change; in the same call another device's tags are replaced
    expect(await putDevices([
      { id: 'up-1', productId: 'up-p', name: 'renamed', firmwareVersion: '1.1.0' },
      { id: 'up-3', productId: 'up-p', tags: { tier: 'gold', note: 'a:b:c', empty: '' } },
      { id: 'up-4', productId: 'up-p' },
    ])).toBe(3);
    expect(await device('up-1')).toMatchObject({ name: 'renamed', firmwareVersion: '1.1.0', tags: { region: 'us' } });
    expect(await device('up-3')).toMatchObject({ name: 'no tags', tags: { tier: 'gold', note: 'a:b:c', empty: '' } });
    expect((await device('up-4')).tags).toEqual({});

    // {} removes them; a device listed twice takes its last entry
    await putDevices([
      { id: 'up-3', productId: 'up-p', tags: { tier: 'silver' } },
      { id: 'up-3', productId: 'up-p' },
      { id: 'up-1', productId: 'up-p', tags: { region: 'eu' } },
      { id: 'up-1', productId: 'up-p', tags: {} },
    ]);
    expect((await device('up-1')).tags).toEqual({});
    expect((await device('up-3')).tags).toEqual({ tier: 'gold', note: 'a:b:c', empty: '' });

    // the list shows them too
    const listed = await call('GET', '/api/devices?productId=up-p');
    expect((listed.json() as { items: DeviceBody[] }).items.map((item) => [item.id, item.tags])).toEqual([
      ['up-1', {}], ['up-2', {}], ['up-3', { tier: 'gold', note: 'a:b:c', empty: '' }], ['up-4', {}],
    ]);
  });

  it('takes 32 tags, refuses 33 naming the map, and stores nothing of a refused call', async () => {
    await putDevices([{ id: 'lim-1', productId: 'lim-p', tags: manyTags(32) }]);
    expect(Object.keys((await device('lim-1')).tags)).toHaveLength(32);

    const refused = await call('PUT', '/api/devices', {
      devices: [{ id: 'lim-2', productId: 'lim-p', tags: { a: 'b' } }, { id: 'lim-1', productId: 'lim-p', tags: manyTags(33) }],
    });
    const body = expectValidationError(refused, '/devices/1/tags');
    expect(body.details).toContainEqual({ path: '/devices/1/tags', message: 'must NOT have more than 32 properties' });
    expect((await call('GET', '/api/devices/lim-2')).statusCode).toBe(404);
    expect(Object.keys((await device('lim-1')).tags)).toHaveLength(32);
  });

  it('refuses bad keys and values', async () => {
    const put = (tags: unknown) => call('PUT', '/api/devices', { devices: [{ id: 'bad-1', productId: 'bad-p', tags }] });
    for (const key of ['a:b', 'with space', '', 'k'.repeat(65), 'ü', 'a/b']) {
      const body = expectValidationError(await put({ [key]: 'x' }), '/devices/0/tags');
      expect(body.details, JSON.stringify(key)).toContainEqual(expect.objectContaining({ path: '/devices/0/tags', message: expect.stringContaining('pattern') }));
    }
    expectValidationError(await put({ k: 5 }), '/devices/0/tags/k');
    expectValidationError(await put({ k: null }), '/devices/0/tags/k');
    expectValidationError(await put({ k: 'v'.repeat(257) }), '/devices/0/tags/k');
    // valid JSON, but no text PostgreSQL can store
    const lone = await call('PUT', '/api/devices', '{"devices":[{"id":"bad-1","productId":"bad-p","tags":{"k":"\\udc00"}}]}');
    expectValidationError(lone, '/devices/0/tags/k');
    expectValidationError(await put(['region', 'eu']), '/devices/0/tags');
    expectValidationError(await put('region:eu'), '/devices/0/tags');
    expect((await call('GET', '/api/devices/bad-1')).statusCode).toBe(404);

    // the edges that are allowed
    const edges = { ['k'.repeat(64)]: 'v'.repeat(256), 'a.b_c-D9': '', emoji: 'ü 🦦 "quoted" \\ {}' };
    await putDevices([{ id: 'bad-1', productId: 'bad-p', tags: edges }]);
    expect((await device('bad-1')).tags).toEqual(edges);
  });
});

describe('GET /api/devices?tag=k:v', () => {
  beforeAll(async () => {
    await putDevices([
      { id: 'ls-a', productId: 'ls-p', tags: { region: 'eu', hw: 'rev2' } },
      { id: 'ls-b', productId: 'ls-p', tags: { region: 'eu', hw: 'rev1' } },
      { id: 'ls-c', productId: 'ls-p', tags: { region: 'us', hw: 'rev2' } },
      { id: 'ls-d', productId: 'ls-p', tags: { url: 'https://x.example:8080/a', region: '' } },
      { id: 'ls-e', productId: 'ls-p' },
      { id: 'ls-other', productId: 'ls-q', tags: { region: 'eu', hw: 'rev2' } },
    ]);
  });

  it('lists the devices having the tag, with productId or across products', async () => {
    expect(await listByTags(['region:eu'], 'ls-p')).toEqual(['ls-a', 'ls-b']);
    expect(await listByTags(['hw:rev2'], 'ls-p')).toEqual(['ls-a', 'ls-c']);
    expect(await listByTags(['hw:rev2', 'region:eu'])).toEqual(['ls-a', 'ls-other']);
  });

  it('with the tag repeated, lists the devices having all of them', async () => {
    expect(await listByTags(['region:eu', 'hw:rev2'], 'ls-p')).toEqual(['ls-a']);
    expect(await listByTags(['region:eu', 'hw:rev3'], 'ls-p')).toEqual([]);
    expect(await listByTags(['region:eu', 'region:eu'], 'ls-p')).toEqual(['ls-a', 'ls-b']);
    // one key, two values: no device has both
    expect(await listByTags(['region:eu', 'region:us'], 'ls-p')).toEqual([]);
  });

  it('splits on the first colon: a value may hold more, or be empty', async () => {
    expect(await listByTags(['url:https://x.example:8080/a'], 'ls-p')).toEqual(['ls-d']);
    expect(await listByTags(['url:https'], 'ls-p')).toEqual([]);
    expect(await listByTags(['region:'], 'ls-p')).toEqual(['ls-d']);
  });

  it('shows the tags and counts the matches for paging', async () => {
    const response = await call('GET', '/api/devices?productId=ls-p&tag=hw:rev2&pageSize=1');
    expect(response.json()).toMatchObject({ total: 2, items: [{ id: 'ls-a', tags: { region: 'eu', hw: 'rev2' } }] });
  });

  it('refuses a tag without a colon or with a bad key', async () => {
    expectValidationError(await call('GET', '/api/devices?tag=region'), '/tag/0');
    expectValidationError(await call('GET', `/api/devices?tag=${encodeURIComponent('bad key:x')}`), '/tag/0');
    expectValidationError(await call('GET', '/api/devices?tag=:eu'), '/tag/0');
  });
});

describe('POST /api/tasks/{id}/release by tags', () => {
  it('selects the product\'s devices having all the tags, with fromVersions, counting the skips', async () => {
    await putDevices([
      { id: 'rel-1', productId: 'rel-p', firmwareVersion: '1.0.0', tags: { region: 'eu', hw: 'rev2' } },
      { id: 'rel-2', productId: 'rel-p', firmwareVersion: '1.1.0', tags: { region: 'eu' } },
      { id: 'rel-3', productId: 'rel-p', firmwareVersion: '2.0.0', tags: { region: 'eu' } },
      { id: 'rel-4', productId: 'rel-p', tags: { region: 'eu' } },
      { id: 'rel-5', productId: 'rel-p', firmwareVersion: '1.0.0', tags: { region: 'eu' } },
      { id: 'rel-6', productId: 'rel-p', firmwareVersion: '1.0.0', tags: { region: 'us' } },
      { id: 'rel-7', productId: 'rel-p', firmwareVersion: '1.0.0' },
      { id: 'rel-other', productId: 'rel-q', firmwareVersion: '1.0.0', tags: { region: 'eu' } },
    ]);
    // rel-5 is busy in another task of the product
    const busyTask = await newTask('rel-p', '1.5.0');
    expect((await release(busyTask, { deviceIds: ['rel-5'] })).added).toBe(1);

    const first = await newTask('rel-p');
    const fromOld = await release(first, { tags: { region: 'eu' }, fromVersions: ['1.0.0'] });
    expect(fromOld.added).toBe(1);
    expect(fromOld.skipped).toEqual({ already_on_version: 1, version_filtered: 2, busy: 1 });
    expect(Object.fromEntries(fromOld.skippedDevices.map((s) => [s.deviceId, s.reason]))).toEqual({
      'rel-2': 'version_filtered', 'rel-3': 'already_on_version', 'rel-4': 'version_filtered', 'rel-5': 'busy',
    });
    expect(await recordDevices(first)).toEqual(['rel-1']);

    // the same task again, without fromVersions: rel-1 is in it already; a device without a version goes too
    const again = await release(first, { tags: { region: 'eu' } });
    expect(again.added).toBe(2);
    expect(again.skipped).toEqual({ already_in_task: 1, already_on_version: 1, busy: 1 });
    expect(await recordDevices(first)).toEqual(['rel-1', 'rel-2', 'rel-4']);

    // two tags: all of them
    const second = await newTask('rel-p', '3.0.0');
    const both = await release(second, { tags: { region: 'eu', hw: 'rev2' } });
    expect(both).toMatchObject({ added: 0, skipped: { busy: 1 } });
    const us = await release(second, { tags: { region: 'us' }, push: false });
    expect(us).toEqual({ added: 1, skipped: {}, skippedDevices: [] });
    expect(await recordDevices(second)).toEqual(['rel-6']);

    // nothing has the tags: nothing happens
    expect(await release(second, { tags: { region: 'mars' } })).toEqual({ added: 0, skipped: {}, skippedDevices: [] });
  });

  it('refuses an empty map, a second selection beside tags, and bad keys', async () => {
    const task = await newTask('rel-bad-p');
    expectValidationError(await call('POST', `/api/tasks/${task}/release`, { tags: {} }), '/tags');
    const mixed = await call('POST', `/api/tasks/${task}/release`, { tags: { region: 'eu' }, allDevices: true });
    expect(mixed.statusCode).toBe(400);
    expect((mixed.json() as ErrorBody).code).toBe('validation_error');
    const withIds = await call('POST', `/api/tasks/${task}/release`, { tags: { region: 'eu' }, deviceIds: ['x'] });
    expect(withIds.statusCode).toBe(400);
    expectValidationError(await call('POST', `/api/tasks/${task}/release`, { tags: { 'a:b': 'x' } }), '/tags');
    expectValidationError(await call('POST', `/api/tasks/${task}/release`, { tags: manyTags(33) }), '/tags');
    expectValidationError(await call('POST', `/api/tasks/${task}/release`, '{"tags":{"k":"\\ud800"}}'), '/tags/k');
    expect(await recordDevices(task)).toEqual([]);
  });
});

// The property: the selection SQL (release.ts, devices.ts) against the plain definition.
const KEYS = ['region', 'hw', 'tier'] as const;
const VALUES = ['eu', 'a:b', ''] as const;
const VERSIONS = ['1.0.0', '1.1.0', '2.0.0'] as const;
const TARGET = '2.0.0';

/** A device's tags: each key there three times in four. */
const deviceTagsArb = fc.tuple(...KEYS.map(() => fc.option(fc.constantFrom(...VALUES), { nil: undefined, freq: 4 })))
  .map((values) => Object.fromEntries(KEYS.flatMap((key, i) => (values[i] === undefined ? [] : [[key, values[i]]]))) as Tags);

const tagsArb = (minKeys: number) =>
  fc.subarray([...KEYS], { minLength: minKeys }).chain((keys) =>
    fc.tuple(...keys.map(() => fc.constantFrom(...VALUES))).map((values) => Object.fromEntries(keys.map((key, i) => [key, values[i]!])) as Tags));

const deviceArb = fc.record({
  tags: deviceTagsArb,
  version: fc.option(fc.constantFrom(...VERSIONS), { nil: null }),
  otherProduct: fc.integer({ min: 0, max: 5 }).map((n) => n === 0),
  // waiting in another task of the product when the release comes
  busy: fc.integer({ min: 0, max: 5 }).map((n) => n === 0),
  // a second upsert: new tags (or omitted: kept) and maybe a new version
  update: fc.option(fc.record({
    tags: fc.option(deviceTagsArb, { nil: undefined }),
    version: fc.option(fc.constantFrom(...VERSIONS), { nil: undefined }),
  }), { nil: undefined }),
});
type FleetDevice = typeof deviceArb extends fc.Arbitrary<infer T> ? T : never;

/** Random tags, or (twice as often) some of a fleet device's own, so that selections do match. */
function selectionArb(fleet: FleetDevice[]) {
  const own = fleet.filter((d) => !d.otherProduct).map((d) => d.update?.tags ?? d.tags).filter((tags) => Object.keys(tags).length > 0);
  const picked = own.length === 0
    ? tagsArb(1)
    : fc.constantFrom(...own).chain((tags) => fc.subarray(Object.keys(tags), { minLength: 1 }).map((keys) => Object.fromEntries(keys.map((k) => [k, tags[k]!]))));
  return fc.record({
    tags: fc.oneof({ arbitrary: tagsArb(1), weight: 1 }, { arbitrary: picked, weight: 2 }),
    fromVersions: fc.option(fc.subarray([...VERSIONS], { minLength: 1 }), { nil: undefined, freq: 2 }),
  });
}

const fleetAndSelection = fc.array(deviceArb, { minLength: 30, maxLength: 80 })
  .chain((fleet) => fc.tuple(fc.constant(fleet), selectionArb(fleet)));

let fleetNumber = 0;

describe('selection by tags, property', () => {
  it('releases to and lists exactly the devices a plain filter of the fleet picks', async () => {
    let released = 0;
    await fc.assert(fc.asyncProperty(fleetAndSelection, async ([fleet, selection]) => {
      fleetNumber += 1;
      const product = `prop-${fleetNumber}`;
      const model = fleet.map((d, i) => ({
        id: `${product}-d${i}`, productId: d.otherProduct ? `${product}-other` : product, tags: d.tags, version: d.version, busy: d.busy && !d.otherProduct,
      }));
      await putDevices(model.map((m) => ({ id: m.id, productId: m.productId, tags: m.tags, ...(m.version === null ? {} : { firmwareVersion: m.version }) })));
      const updates = fleet.flatMap((d, i) => (d.update ? [{ m: model[i]!, update: d.update }] : []));
      if (updates.length > 0) {
        await putDevices(updates.map(({ m, update }) => ({
          id: m.id,
          productId: m.productId,
          ...(update.tags === undefined ? {} : { tags: update.tags }),
          ...(update.version === undefined ? {} : { firmwareVersion: update.version }),
        })));
        for (const { m, update } of updates) {
          if (update.tags !== undefined) m.tags = update.tags;
          if (update.version !== undefined) m.version = update.version;
        }
      }

      const busy = model.filter((m) => m.busy).map((m) => m.id);
      if (busy.length > 0) expect((await release(await newTask(product, '1.5.0'), { deviceIds: busy })).added).toBe(busy.length);

      // the plain filter, in the order of the skip reasons (docs/states-and-rules.md#release)
      const tagged = model.filter((m) => m.productId === product && Object.entries(selection.tags).every(([k, v]) => m.tags[k] === v));
      const onTarget = tagged.filter((m) => m.version === TARGET);
      const filtered = tagged.filter((m) => m.version !== TARGET && selection.fromVersions !== undefined
        && (m.version === null || !selection.fromVersions.includes(m.version)));
      const busySkipped = tagged.filter((m) => m.busy && !onTarget.includes(m) && !filtered.includes(m));
      const expected = tagged.filter((m) => !onTarget.includes(m) && !filtered.includes(m) && !m.busy).map((m) => m.id).sort();

      const query = Object.entries(selection.tags).map(([k, v]) => `${k}:${v}`);
      expect(await listByTags(query, product)).toEqual(tagged.map((m) => m.id).sort());

      const task = await newTask(product);
      const result = await release(task, { tags: selection.tags, ...(selection.fromVersions ? { fromVersions: selection.fromVersions } : {}) });
      const skipped: Record<string, number> = {};
      if (onTarget.length > 0) skipped.already_on_version = onTarget.length;
      if (filtered.length > 0) skipped.version_filtered = filtered.length;
      if (busySkipped.length > 0) skipped.busy = busySkipped.length;
      expect(result.added).toBe(expected.length);
      released += expected.length;
      expect(result.skipped).toEqual(skipped);
      expect(await recordDevices(task)).toEqual(expected);
    }), { numRuns: 20 });
    expect(fleetNumber).toBeGreaterThanOrEqual(20);
    // the selections did pick devices: not a property of empty sets
    expect(released).toBeGreaterThan(20);
  });
});
