// The strategy settings of a task through the API (docs/strategies.md, docs/rest-api.md#upgrade-tasks):
// the refusals of waves, windows and gates; the strategy fields a task shows, nextWindowAt computed
// here with Intl alone; pause and resume with pausedReason; waves fixed once released; approving
// waves; endAt and continuous through PATCH. ROLE api: nothing is dispatched, no gate moves.
import { randomUUID } from 'node:crypto';
import type { InjectOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { createFirmware, registerDevices } from '../helpers/rollout.ts';

interface ErrorBody {
  statusCode: number;
  code: string;
  message: string;
  details?: Array<{ path: string; message: string }>;
}

interface WaveBody {
  index: number;
  size: number;
  state: string;
  stats: Record<string, number>;
}

interface TaskBody {
  id: string;
  state: string;
  rollout: Record<string, unknown>;
  continuous: boolean;
  windows: unknown[] | null;
  nextWindowAt: string | null;
  endAt: string | null;
  pausedReason: string | null;
  waves: WaveBody[];
  [key: string]: unknown;
}

interface RecordBody {
  deviceId: string;
  wave: number | null;
  [key: string]: unknown;
}

let t: TestApp;
let firmwareId: string;

beforeAll(async () => {
  t = await buildTestApp();
  firmwareId = await createFirmware(t.app, t.auth, 'strat-p', '2.0.0', 2);
});

afterAll(async () => {
  await t?.close();
});

async function call(method: InjectOptions['method'], url: string, payload?: unknown) {
  return t.app.inject({ method, url, headers: t.auth, ...(payload === undefined ? {} : { payload: payload as InjectOptions['payload'] }) });
}

async function newTask(body: Record<string, unknown> = {}): Promise<TaskBody> {
  const response = await call('POST', '/api/tasks', { firmwareId, name: 'strategy task', ...body });
  expect(response.statusCode, response.body).toBe(201);
  return response.json();
}

async function getTask(id: string): Promise<TaskBody> {
  const response = await call('GET', `/api/tasks/${id}`);
  expect(response.statusCode, response.body).toBe(200);
  return response.json();
}

async function patchTask(id: string, body: Record<string, unknown>): Promise<TaskBody> {
  const response = await call('PATCH', `/api/tasks/${id}`, body);
  expect(response.statusCode, response.body).toBe(200);
  return response.json();
}

async function records(taskId: string, query = ''): Promise<{ items: RecordBody[]; total: number }> {
  const response = await call('GET', `/api/tasks/${taskId}/records${query}`);
  expect(response.statusCode, response.body).toBe(200);
  return response.json();
}

function expectError(response: { statusCode: number; body: string; json(): unknown }, statusCode: number, code: string): ErrorBody {
  expect(response.statusCode, response.body).toBe(statusCode);
  const body = response.json() as ErrorBody;
  expect(body).toMatchObject({ statusCode, code });
  return body;
}

/** A create refused with 400 validation_error; its details. */
async function refusedCreate(body: Record<string, unknown>): Promise<Array<{ path: string; message: string }>> {
  const response = await call('POST', '/api/tasks', { firmwareId, name: 'refused', ...body });
  const error = expectError(response, 400, 'validation_error');
  expect(Array.isArray(error.details), response.body).toBe(true);
  expect(error.details!.length, response.body).toBeGreaterThan(0);
  return error.details!;
}

const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${i + 1}`);
const windowOf = (over: Record<string, unknown> = {}) => ({ days: ['mon'], start: '02:00', durationMinutes: 60, timeZone: 'Europe/Berlin', ...over });
const EVERY_DAY = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];

/** Local "HH:MM" of an instant in a time zone, by Intl alone. */
const hourMinuteFormats = new Map<string, Intl.DateTimeFormat>();
function localHourMinute(instant: number, timeZone: string): string {
  let format = hourMinuteFormats.get(timeZone);
  if (!format) {
    format = new Intl.DateTimeFormat('en-GB', { timeZone, hourCycle: 'h23', hour: '2-digit', minute: '2-digit' });
    hourMinuteFormats.set(timeZone, format);
  }
  const parts = format.formatToParts(instant);
  const part = (type: string) => parts.find((p) => p.type === type)!.value;
  return `${part('hour')}:${part('minute')}`;
}

/**
 * The first instant after `from`, on a whole minute, whose local time in `timeZone` is `hhmm`
 * (a window starting every day): a minute-by-minute walk with Intl, at most two days long.
 */
function nextLocalOccurrence(from: number, hhmm: string, timeZone: string): number {
  let minute = Math.floor(from / 60_000) * 60_000 + 60_000;
  for (let i = 0; i < 2 * 24 * 60; i += 1, minute += 60_000) {
    if (localHourMinute(minute, timeZone) === hhmm) return minute;
  }
  throw new Error(`no ${hhmm} in ${timeZone} within two days of ${new Date(from).toISOString()}`);
}

describe('refused strategy settings (400 validation_error)', () => {
  it('refuses waves that do not grow, naming the entry', async () => {
    const details = await refusedCreate({ rollout: { waves: [{ percent: 10 }, { percent: 10 }] } });
    expect(details[0]!.path).toBe('/rollout/waves/1/percent');
    expect(details[0]!.message).toContain('cumulative');
  });

  it('refuses device counts that do not grow', async () => {
    const details = await refusedCreate({ rollout: { waves: [{ devices: 5 }, { devices: 3 }] } });
    expect(details[0]!.path).toBe('/rollout/waves/1/devices');
  });

  it('refuses waves mixing percentages and device counts', async () => {
    const details = await refusedCreate({ rollout: { waves: [{ percent: 10 }, { devices: 50 }] } });
    expect(details[0]!.path).toBe('/rollout/waves/1');
    expect(details[0]!.message).toBe('waves are all percentages or all device counts');
  });

  it('refuses a percent of 0 or above 100', async () => {
    for (const percent of [0, 101, -5]) {
      const details = await refusedCreate({ rollout: { waves: [{ percent }] } });
      expect(details.some((detail) => detail.path.startsWith('/rollout/waves/0')), JSON.stringify(details)).toBe(true);
    }
  });

  it('refuses more than 20 waves, and an empty list', async () => {
    const waves = Array.from({ length: 21 }, (_, i) => ({ devices: i + 1 }));
    const details = await refusedCreate({ rollout: { waves } });
    expect(details.some((detail) => detail.path.startsWith('/rollout/waves')), JSON.stringify(details)).toBe(true);
    await refusedCreate({ rollout: { waves: [] } });
    // 20 is the limit, and taken
    const task = await newTask({ rollout: { waves: waves.slice(0, 20) } });
    expect(task.rollout.waves).toEqual(waves.slice(0, 20));
  });

  it('refuses an unknown time zone at its path', async () => {
    const details = await refusedCreate({ windows: [windowOf({ timeZone: 'Mars/Olympus_Mons' })] });
    expect(details[0]!.path).toBe('/windows/0/timeZone');
    const second = await refusedCreate({ windows: [windowOf(), windowOf({ timeZone: '+01:00' })] });
    expect(second[0]!.path).toBe('/windows/1/timeZone');
  });

  it('refuses a bad start, a zero or too long duration, and bad days', async () => {
    for (const start of ['24:00', '2:00', '12:60', '']) {
      const details = await refusedCreate({ windows: [windowOf({ start })] });
      expect(details.some((detail) => detail.path === '/windows/0/start'), `${start}: ${JSON.stringify(details)}`).toBe(true);
    }
    for (const durationMinutes of [0, 10_081, 1.5]) {
      const details = await refusedCreate({ windows: [windowOf({ durationMinutes })] });
      expect(details.some((detail) => detail.path === '/windows/0/durationMinutes'), `${durationMinutes}: ${JSON.stringify(details)}`).toBe(true);
    }
    await refusedCreate({ windows: [windowOf({ days: [] })] });
    await refusedCreate({ windows: [windowOf({ days: ['mon', 'mon'] })] });
    await refusedCreate({ windows: [windowOf({ days: ['monday'] })] });
    await refusedCreate({ windows: [] });
  });

  it('refuses a misspelt gate field, naming it', async () => {
    const response = await call('POST', '/api/tasks', {
      firmwareId,
      name: 'typo',
      rollout: { waves: [{ percent: 50 }, { percent: 100 }], gate: { minSucessRate: 0.9 } },
    });
    const error = expectError(response, 400, 'validation_error');
    expect(error.details).toContainEqual({ path: '/rollout/gate/minSucessRate', message: 'unknown property' });
    expect(error.message).toContain('minSucessRate');
  });

  it('refuses the same settings in a PATCH', async () => {
    const task = await newTask();
    const waves = await call('PATCH', `/api/tasks/${task.id}`, { rollout: { waves: [{ percent: 10 }, { percent: 10 }] } });
    expect(expectError(waves, 400, 'validation_error').details![0]!.path).toBe('/rollout/waves/1/percent');
    const zone = await call('PATCH', `/api/tasks/${task.id}`, { windows: [windowOf({ timeZone: 'Nowhere/Land' })] });
    expect(expectError(zone, 400, 'validation_error').details![0]!.path).toBe('/windows/0/timeZone');
    // nothing of it was stored
    const after = await getTask(task.id);
    expect(after.rollout).toEqual({});
    expect(after.windows).toBeNull();
  });
});

describe('the strategy fields of a created task', () => {
  it('shows the defaults', async () => {
    const task = await newTask();
    expect(task).toMatchObject({
      state: 'created',
      rollout: {},
      continuous: false,
      windows: null,
      nextWindowAt: null,
      endAt: null,
      pausedReason: null,
      waves: [],
    });
    expect(await getTask(task.id)).toEqual(task);
  });

  it('keeps waves, gate, ramp and first devices as given, gate defaults not filled in', async () => {
    const rollout = {
      maxPerMinute: 100,
      waves: [{ percent: 1 }, { percent: 10 }, { percent: 100 }],
      gate: { minSuccessRate: 0.95, approval: true },
      ramp: { startPerMinute: 10, factor: 2, everySucceeded: 50 },
      firstDeviceIds: ['lab-1', 'lab-2'],
    };
    const task = await newTask({ rollout });
    expect(task.rollout).toEqual(rollout);
    expect(task.waves).toEqual([]);
    expect((await getTask(task.id)).rollout).toEqual(rollout);
  });

  it('shows when a closed window next opens, computed with Intl', async () => {
    const timeZone = 'Asia/Kolkata';
    const before = Date.now();
    // a 1-minute window, every day, starting at the local time 12 hours from now: closed now
    const start = localHourMinute(before + 12 * 3_600_000, timeZone);
    const windows = [{ days: EVERY_DAY, start, durationMinutes: 1, timeZone }];
    const task = await newTask({ windows });
    const after = Date.now();
    expect(task.windows).toEqual(windows);
    expect(typeof task.nextWindowAt).toBe('string');
    const next = Date.parse(task.nextWindowAt!);
    expect(new Date(next).toISOString()).toBe(task.nextWindowAt);
    expect(next).toBeGreaterThan(after);
    expect(localHourMinute(next, timeZone)).toBe(start);
    const expected = nextLocalOccurrence(before, start, timeZone);
    expect(Math.abs(next - expected)).toBeLessThanOrEqual(60_000);
    // about 12 hours ahead, not a day later
    expect(next - before).toBeGreaterThan(11 * 3_600_000);
    expect(next - before).toBeLessThan(13 * 3_600_000);
    const read = await getTask(task.id);
    expect(Math.abs(Date.parse(read.nextWindowAt!) - expected)).toBeLessThanOrEqual(60_000);
  });

  it('takes the earliest of several closed windows', async () => {
    const timeZone = 'Asia/Kolkata';
    const before = Date.now();
    const in6h = localHourMinute(before + 6 * 3_600_000, timeZone);
    const in12h = localHourMinute(before + 12 * 3_600_000, timeZone);
    const task = await newTask({
      windows: [
        { days: EVERY_DAY, start: in12h, durationMinutes: 1, timeZone },
        { days: EVERY_DAY, start: in6h, durationMinutes: 1, timeZone },
      ],
    });
    const expected = nextLocalOccurrence(before, in6h, timeZone);
    expect(Math.abs(Date.parse(task.nextWindowAt!) - expected)).toBeLessThanOrEqual(60_000);
  });

  it('shows nextWindowAt null inside an open window', async () => {
    const timeZone = 'America/New_York';
    // started an hour ago, lasts three: open now whatever the day
    const start = localHourMinute(Date.now() - 3_600_000, timeZone);
    const task = await newTask({ windows: [{ days: EVERY_DAY, start, durationMinutes: 180, timeZone }] });
    expect(task.windows).toHaveLength(1);
    expect(task.nextWindowAt).toBeNull();
    expect((await getTask(task.id)).nextWindowAt).toBeNull();
  });

  it('sets and clears windows by PATCH', async () => {
    const task = await newTask();
    const timeZone = 'Asia/Kolkata';
    const start = localHourMinute(Date.now() + 12 * 3_600_000, timeZone);
    const withWindows = await patchTask(task.id, { windows: [{ days: EVERY_DAY, start, durationMinutes: 1, timeZone }] });
    expect(withWindows.windows).toHaveLength(1);
    expect(Date.parse(withWindows.nextWindowAt!)).toBeGreaterThan(Date.now());
    const cleared = await patchTask(task.id, { windows: null });
    expect(cleared.windows).toBeNull();
    expect(cleared.nextWindowAt).toBeNull();
  });
});

describe('pause and resume', () => {
  it('shows pausedReason manual while paused, null after resume', async () => {
    const task = await newTask();
    const paused = await call('POST', `/api/tasks/${task.id}/pause`);
    expect(paused.statusCode, paused.body).toBe(200);
    expect(paused.json()).toMatchObject({ id: task.id, state: 'paused', pausedReason: 'manual' });
    expect(await getTask(task.id)).toMatchObject({ state: 'paused', pausedReason: 'manual' });
    const resumed = await call('POST', `/api/tasks/${task.id}/resume`);
    expect(resumed.statusCode, resumed.body).toBe(200);
    expect(resumed.json()).toMatchObject({ id: task.id, state: 'running', pausedReason: null });
    expect(await getTask(task.id)).toMatchObject({ state: 'running', pausedReason: null });
  });
});

describe('waves once released', () => {
  const devices = ids('wv', 10);
  const firstDeviceIds = ['wv-3', 'wv-7'];
  let waved: TaskBody;

  beforeAll(async () => {
    await registerDevices(t.app, t.auth, 'strat-p', devices);
  });

  it('may change waves before the first release', async () => {
    waved = await newTask({ rollout: { waves: [{ percent: 30 }, { percent: 100 }], firstDeviceIds } });
    const changed = await patchTask(waved.id, { rollout: { waves: [{ percent: 50 }, { percent: 100 }], firstDeviceIds } });
    expect(changed.rollout).toEqual({ waves: [{ percent: 50 }, { percent: 100 }], firstDeviceIds });
    expect(changed.waves).toEqual([]);
  });

  it('places released records in waves, first devices in wave 1', async () => {
    const response = await call('POST', `/api/tasks/${waved.id}/release`, { deviceIds: devices });
    expect(response.statusCode, response.body).toBe(200);
    expect(response.json()).toMatchObject({ added: 10 });
    expect(response.json().queued).toBeUndefined();

    const task = await getTask(waved.id);
    expect(task.waves.map(({ index, size, state }) => ({ index, size, state }))).toEqual([
      { index: 1, size: 5, state: 'running' },
      { index: 2, size: 5, state: 'pending' },
    ]);
    expect(task.waves[0]!.stats).toEqual({ total: 5, waiting: 5, processing: 0, success: 0, failed: 0, canceled: 0 });
    expect(task.waves[1]!.stats).toEqual({ total: 5, waiting: 5, processing: 0, success: 0, failed: 0, canceled: 0 });
    expect(task.stats).toMatchObject({ total: 10, waiting: 10 });

    const all = await records(waved.id, '?pageSize=100');
    expect(all.total).toBe(10);
    for (const record of all.items) expect([1, 2]).toContain(record.wave);
    const first = await records(waved.id, '?wave=1&pageSize=100');
    expect(first.total).toBe(5);
    expect(first.items.every((record) => record.wave === 1)).toBe(true);
    expect(first.items.map((record) => record.deviceId)).toEqual(expect.arrayContaining(firstDeviceIds));
    const second = await records(waved.id, '?wave=2&pageSize=100');
    expect(second.total).toBe(5);
    expect(second.items.every((record) => record.wave === 2)).toBe(true);
    expect(new Set([...first.items, ...second.items].map((record) => record.deviceId))).toEqual(new Set(devices));
  });

  it('keeps the waves and first devices through a PATCH of other limits', async () => {
    const patched = await patchTask(waved.id, { rollout: { maxPerMinute: 5 } });
    expect(patched.rollout).toEqual({ maxPerMinute: 5, waves: [{ percent: 50 }, { percent: 100 }], firstDeviceIds });
    expect((await getTask(waved.id)).rollout).toEqual({ maxPerMinute: 5, waves: [{ percent: 50 }, { percent: 100 }], firstDeviceIds });
    // sending them unchanged is no change
    const same = await patchTask(waved.id, {
      rollout: { maxPerMinute: 6, waves: [{ percent: 50 }, { percent: 100 }], firstDeviceIds, gate: { soakSeconds: 60 } },
    });
    expect(same.rollout).toEqual({ maxPerMinute: 6, waves: [{ percent: 50 }, { percent: 100 }], firstDeviceIds, gate: { soakSeconds: 60 } });
    expect(same.waves.map((wave) => wave.size)).toEqual([5, 5]);
  });

  it('refuses other waves or first devices with 409 waves_fixed', async () => {
    const before = await getTask(waved.id);
    const waves = await call('PATCH', `/api/tasks/${waved.id}`, { rollout: { waves: [{ percent: 20 }, { percent: 100 }] } });
    expectError(waves, 409, 'waves_fixed');
    const first = await call('PATCH', `/api/tasks/${waved.id}`, { rollout: { firstDeviceIds: ['wv-1'] } });
    expectError(first, 409, 'waves_fixed');
    const after = await getTask(waved.id);
    expect(after.rollout).toEqual(before.rollout);
    expect(after.revision).toBe(before.revision);
  });

  it('refuses waves added to a task released without them', async () => {
    const plain = await newTask();
    const device = 'wv-plain-1';
    await registerDevices(t.app, t.auth, 'strat-p', [device]);
    const response = await call('POST', `/api/tasks/${plain.id}/release`, { deviceIds: [device] });
    expect(response.statusCode, response.body).toBe(200);
    expect(response.json()).toMatchObject({ added: 1 });
    expect((await getTask(plain.id)).waves).toEqual([]);
    expect((await records(plain.id)).items.map((record) => record.wave)).toEqual([null]);
    const added = await call('PATCH', `/api/tasks/${plain.id}`, { rollout: { waves: [{ percent: 100 }] } });
    expectError(added, 409, 'waves_fixed');
    expect((await getTask(plain.id)).rollout).toEqual({});
    // other limits still change
    expect((await patchTask(plain.id, { rollout: { maxInFlight: 3 } })).rollout).toEqual({ maxInFlight: 3 });
  });

  it('a PATCH of the waves racing a task\'s first release lands before it or is refused, never after it', async () => {
    const outcomes = new Set<number>();
    for (let round = 0; round < 12; round += 1) {
      const task = await newTask();
      const devices = Array.from({ length: 4 }, (_, i) => `wv-race-${round}-${i}`);
      await registerDevices(t.app, t.auth, 'strat-p', devices);
      const release = call('POST', `/api/tasks/${task.id}/release`, { deviceIds: devices });
      // the PATCH leaves a little later each round, so some rounds catch the release mid-way
      await new Promise((resolve) => setTimeout(resolve, round % 4));
      const patch = await call('PATCH', `/api/tasks/${task.id}`, { rollout: { waves: [{ percent: 50 }, { percent: 100 }] } });
      expect((await release).statusCode).toBe(200);
      outcomes.add(patch.statusCode);
      if (patch.statusCode !== 200) expectError(patch, 409, 'waves_fixed');
      // whatever the order, the waves the task shows are the ones its records were placed in
      const after = await getTask(task.id);
      expect(after.waves.length, `round ${round}: PATCH ${patch.statusCode}`).toBe((after.rollout.waves as unknown[] | undefined)?.length ?? 0);
      expect((await records(task.id, '?pageSize=10')).items.every((record) => (record.wave === null) === (after.waves.length === 0))).toBe(true);
    }
    expect(outcomes.has(409)).toBe(true);
  });

  it('approves a running wave, not a pending one', async () => {
    const pending = await call('POST', `/api/tasks/${waved.id}/waves/2/approve`);
    expectError(pending, 409, 'wave_not_approvable');
    const running = await call('POST', `/api/tasks/${waved.id}/waves/1/approve`);
    expect(running.statusCode, running.body).toBe(200);
    const task = running.json() as TaskBody;
    expect(task.id).toBe(waved.id);
    // approved ahead: nothing moves until the gate is met (no workers here)
    expect(task.waves.map((wave) => wave.state)).toEqual(['running', 'pending']);
    expectError(await call('POST', `/api/tasks/${waved.id}/waves/3/approve`), 404, 'not_found');
    expectError(await call('POST', `/api/tasks/${randomUUID()}/waves/1/approve`), 404, 'not_found');
  });

  it('finds no wave to approve in a task never released', async () => {
    const task = await newTask({ rollout: { waves: [{ percent: 50 }, { percent: 100 }] } });
    expectError(await call('POST', `/api/tasks/${task.id}/waves/1/approve`), 404, 'not_found');
  });
});

describe('endAt and continuous', () => {
  it('round-trip through PATCH', async () => {
    const task = await newTask();
    const endAt = new Date(Date.now() + 7 * 86_400_000).toISOString();
    const set = await patchTask(task.id, { endAt, continuous: true });
    expect(set).toMatchObject({ endAt, continuous: true });
    expect(await getTask(task.id)).toMatchObject({ endAt, continuous: true });
    const cleared = await patchTask(task.id, { endAt: null, continuous: false });
    expect(cleared).toMatchObject({ endAt: null, continuous: false });
    expect(await getTask(task.id)).toMatchObject({ endAt: null, continuous: false });
  });

  it('are taken at create', async () => {
    const endAt = '2031-05-06T07:08:09.000Z';
    const task = await newTask({ endAt, continuous: true });
    expect(task).toMatchObject({ endAt, continuous: true, state: 'created' });
    expect(await getTask(task.id)).toMatchObject({ endAt, continuous: true });
  });

  it('refuses a malformed endAt and a non-boolean continuous', async () => {
    await refusedCreate({ endAt: 'tomorrow' });
    await refusedCreate({ continuous: 'yes' });
  });
});
