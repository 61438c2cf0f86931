// A large release runs in batches, two at once (db/queries/release.ts, docs/scaling.md#release):
// its answer is the one a single statement gave, a release cut short is finished by releasing
// again, concurrent releases never give a device two active records, records are placed in waves
// as one ranking of them places them, and the references of records to tasks and of events to
// records (checked per statement since migration 0015) hold as their foreign keys did.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql, type RawBuilder } from 'kysely';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { createFirmware, createTask, registerDevices, taskStats, type ReleaseReply } from '../helpers/rollout.ts';

const PRODUCT = 'batch';
const FLEET = 60_000;
const deviceId = (i: number) => `batch-${String(i).padStart(5, '0')}`;
const ALL_IDS = Array.from({ length: FLEET }, (_, i) => deviceId(i + 1));
/** One device in 150 already runs the target version. */
const ON_VERSION_IDS = ALL_IDS.filter((_, k) => k % 150 === 7);
/** One device in 400 is busy in another task. */
const BUSY_IDS = ALL_IDS.filter((_, k) => k % 400 === 3);
const ELIGIBLE = FLEET - ON_VERSION_IDS.length - BUSY_IDS.length;

const WAVED = 'waved';
const WAVED_FLEET = 40_000;
const wavedId = (i: number) => `waved-${String(i).padStart(5, '0')}`;
const WAVED_IDS = Array.from({ length: WAVED_FLEET }, (_, i) => wavedId(i + 1));
const FIRST_DEVICES = [wavedId(39_999), wavedId(20_000), wavedId(3)];
const PERCENTS = [1, 10, 100];

let t: TestApp;
let firmwareId: string;
let wavedFirmwareId: string;

beforeAll(async () => {
  t = await buildTestApp();
  await registerDevices(t.app, t.auth, PRODUCT, ALL_IDS);
  await registerDevices(t.app, t.auth, PRODUCT, ON_VERSION_IDS, '2.0.0');
  await registerDevices(t.app, t.auth, WAVED, WAVED_IDS);
  firmwareId = await createFirmware(t.app, t.auth, PRODUCT);
  wavedFirmwareId = await createFirmware(t.app, t.auth, WAVED);
}, 120_000);

afterAll(async () => {
  await t?.close();
});

async function release(taskId: string, body: Record<string, unknown>): Promise<ReleaseReply> {
  const response = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: body });
  expect(response.statusCode, response.body.slice(0, 500)).toBe(200);
  return response.json();
}

async function count(query: RawBuilder<{ n: number }>): Promise<number> {
  const { rows } = await query.execute(t.database.db);
  return Number(rows[0]!.n);
}

const recordsOf = (taskId: string) => count(sql<{ n: number }>`SELECT count(*) AS n FROM upgrade_records WHERE task_id = ${taskId}`);
const releasedEventsOf = (taskId: string) =>
  count(sql<{ n: number }>`
    SELECT count(*) AS n FROM record_events e JOIN upgrade_records r ON r.id = e.record_id
    WHERE r.task_id = ${taskId} AND e.type = 'released'`);
const doubledDevices = () =>
  count(sql<{ n: number }>`
    SELECT count(*) AS n FROM (SELECT device_id FROM upgrade_records WHERE state IN ('waiting', 'processing')
                               GROUP BY device_id HAVING count(*) > 1) doubled`);

async function cancel(taskId: string): Promise<void> {
  const response = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/cancel`, headers: t.auth, payload: {} });
  expect(response.statusCode, response.body).toBe(200);
}

describe('a release in batches', () => {
  let mainTask: string;

  it('answers as one statement did: counts, reasons, the first skipped devices in id order', async () => {
    const other = await createTask(t.app, t.auth, { firmwareId, name: 'the other task' });
    expect((await release(other, { deviceIds: BUSY_IDS })).added).toBe(BUSY_IDS.length);

    mainTask = await createTask(t.app, t.auth, { firmwareId, name: 'fleet' });
    const result = await release(mainTask, { allDevices: true, push: true });
    expect(result.added).toBe(ELIGIBLE);
    expect(result.skipped).toEqual({ already_on_version: ON_VERSION_IDS.length, busy: BUSY_IDS.length });
    const skipped = [...ON_VERSION_IDS.map((id) => ({ deviceId: id, reason: 'already_on_version' })), ...BUSY_IDS.map((id) => ({ deviceId: id, reason: 'busy' }))]
      .sort((a, b) => (a.deviceId < b.deviceId ? -1 : 1))
      .slice(0, 100);
    expect(result.skippedDevices).toEqual(skipped);

    expect((await taskStats(t.app, t.auth, mainTask)).stats).toEqual({ total: ELIGIBLE, waiting: ELIGIBLE, processing: 0, success: 0, failed: 0, canceled: 0 });
    expect(await recordsOf(mainTask)).toBe(ELIGIBLE);
    expect(await releasedEventsOf(mainTask)).toBe(ELIGIBLE);
    expect(await doubledDevices()).toBe(0);

    const again = await release(mainTask, { allDevices: true });
    expect(again).toMatchObject({ added: 0, skipped: { already_in_task: ELIGIBLE, already_on_version: ON_VERSION_IDS.length, busy: BUSY_IDS.length } });
    expect(await recordsOf(mainTask)).toBe(ELIGIBLE);
    await cancel(mainTask);
    await cancel(other);
  }, 120_000);

  it('cut short by a failing batch, is finished by releasing again', async () => {
    const task = await createTask(t.app, t.auth, { firmwareId, name: 'cut short' });
    // one device near the end fails its batch, as a process dying there would leave it
    await sql`
      CREATE FUNCTION test_refuse_device() RETURNS trigger LANGUAGE plpgsql AS $fn$
      BEGIN RAISE EXCEPTION 'refused for the test'; END $fn$`.execute(t.database.db);
    await sql.raw(`
      CREATE TRIGGER test_refuse_device BEFORE INSERT ON upgrade_records
        FOR EACH ROW WHEN (NEW.device_id = '${deviceId(FLEET - 10)}') EXECUTE FUNCTION test_refuse_device()`).execute(t.database.db);
    const failed = await t.app.inject({ method: 'POST', url: `/api/tasks/${task}/release`, headers: t.auth, payload: { allDevices: true } });
    expect(failed.statusCode).toBe(500);
    const partial = await recordsOf(task);
    expect(partial).toBeLessThan(ELIGIBLE + BUSY_IDS.length);
    expect((await taskStats(t.app, t.auth, task)).stats.total).toBe(partial);

    await sql`DROP TRIGGER test_refuse_device ON upgrade_records`.execute(t.database.db);
    const finished = await release(task, { allDevices: true });
    const eligible = FLEET - ON_VERSION_IDS.length;
    expect(finished.added).toBe(eligible - partial);
    expect(finished.skipped).toEqual({ already_on_version: ON_VERSION_IDS.length, ...(partial > 0 ? { already_in_task: partial } : {}) });
    expect(await recordsOf(task)).toBe(eligible);
    expect(await releasedEventsOf(task)).toBe(eligible);
    expect((await taskStats(t.app, t.auth, task)).stats).toMatchObject({ total: eligible, waiting: eligible });
    await cancel(task);
  }, 120_000);

  it('run at once with another release over the same devices, gives each device one active record', async () => {
    const eligible = FLEET - ON_VERSION_IDS.length;
    const [one, two] = await Promise.all([
      createTask(t.app, t.auth, { firmwareId, name: 'one' }),
      createTask(t.app, t.auth, { firmwareId, name: 'two' }),
    ]);
    const [first, second] = await Promise.all([release(one, { allDevices: true }), release(two, { allDevices: true })]);
    expect(first.added + second.added).toBe(eligible);
    expect((first.skipped.busy ?? 0) + (second.skipped.busy ?? 0)).toBe(eligible);
    expect(await doubledDevices()).toBe(0);
    await cancel(one);
    await cancel(two);

    // the same task twice at once: the releases take turns
    const same = await createTask(t.app, t.auth, { firmwareId, name: 'same' });
    const [a, b] = await Promise.all([release(same, { allDevices: true }), release(same, { allDevices: true })]);
    expect(a.added + b.added).toBe(eligible);
    expect((a.skipped.already_in_task ?? 0) + (b.skipped.already_in_task ?? 0)).toBe(eligible);
    expect(await recordsOf(same)).toBe(eligible);
    await cancel(same);
  }, 120_000);
});

describe('waves placed by a release in batches', () => {
  /**
   * Records of `taskId` not in the wave one ranking gives: the records after `afterId` (one
   * release), ranked after the `existing` records the task had before it (docs/strategies.md#waves).
   */
  async function misplaced(taskId: string, afterId: number, existing: number): Promise<number> {
    return count(sql<{ n: number }>`
      WITH ranked AS (
        SELECT wave, ${existing}::int + row_number() OVER (ORDER BY device_id = ANY(${FIRST_DEVICES}::text[]) DESC,
                                                           md5(${taskId}::text || device_id), device_id) AS rank,
               ${existing}::int + count(*) OVER () AS n
        FROM upgrade_records WHERE task_id = ${taskId} AND id > ${afterId}
      )
      SELECT count(*) AS n FROM ranked r
      WHERE r.wave <> coalesce((SELECT min(s.k) FROM unnest(${PERCENTS}::float8[]) WITH ORDINALITY AS s(percent, k)
                                WHERE r.rank <= ceil(s.percent * r.n / 100.0)), ${PERCENTS.length})`);
  }

  const maxRecordId = () => count(sql<{ n: number }>`SELECT coalesce(max(id), 0) AS n FROM upgrade_records`);

  it('as one ranking of the release places them, first devices ahead, ranks after the records the task has', async () => {
    const task = await createTask(t.app, t.auth, {
      firmwareId: wavedFirmwareId,
      name: 'waved',
      rollout: { waves: PERCENTS.map((percent) => ({ percent })), firstDeviceIds: FIRST_DEVICES },
    });
    const firstPart = WAVED_IDS.slice(0, 30_000);
    const before = await maxRecordId();
    expect((await release(task, { deviceIds: firstPart })).added).toBe(30_000);
    expect(await misplaced(task, before, 0)).toBe(0);
    const waves = async () => (await t.app.inject({ method: 'GET', url: `/api/tasks/${task}`, headers: t.auth })).json().waves as Array<{ index: number; size: number }>;
    expect((await waves()).map((wave) => wave.size)).toEqual([300, 2_700, 27_000]);

    const between = await maxRecordId();
    const rest = await release(task, { allDevices: true });
    expect(rest).toMatchObject({ added: 10_000, skipped: { already_in_task: 30_000 } });
    expect(await misplaced(task, between, 30_000)).toBe(0);
    // ranked after the task's 30,000 records, past every wave's size but the last's
    expect((await waves()).map((wave) => wave.size)).toEqual([300, 2_700, 37_000]);
    expect((await waves()).map((wave) => wave.size).reduce((sum, size) => sum + size, 0)).toBe((await taskStats(t.app, t.auth, task)).stats.total);
    await cancel(task);
  }, 120_000);
});

describe("records' and events' references, checked per statement", () => {
  const MISSING_TASK = '00000000-0000-4000-8000-000000000000';

  async function sqlState(query: RawBuilder<unknown>): Promise<string | undefined> {
    try {
      await query.execute(t.database.db);
      return undefined;
    } catch (error) {
      return (error as { code?: string }).code;
    }
  }

  it('refuse a record of no task, an event of no record, and a record moved to another task', async () => {
    expect(
      await sqlState(sql`
        INSERT INTO upgrade_records (task_id, firmware_id, device_id, product_id, target_version)
        VALUES (${MISSING_TASK}, ${firmwareId}, ${deviceId(1)}, ${PRODUCT}, '2.0.0')`),
    ).toBe('23503');
    expect(await sqlState(sql`INSERT INTO record_events (record_id, type) VALUES (-1, 'released')`)).toBe('23503');
    const task = await createTask(t.app, t.auth, { firmwareId, name: 'moved' });
    await release(task, { deviceIds: [deviceId(1)] });
    const other = await createTask(t.app, t.auth, { firmwareId, name: 'elsewhere' });
    expect(await sqlState(sql`UPDATE upgrade_records SET task_id = ${other} WHERE task_id = ${task}`)).toBe('23503');
    await cancel(task);
  });

  it('delete a task with its records and their events, and a firmware with its tasks', async () => {
    const task = await createTask(t.app, t.auth, { firmwareId, name: 'to delete' });
    await release(task, { deviceIds: ALL_IDS.slice(0, 50) });
    await cancel(task);
    const records = await sql<{ id: number }>`SELECT id FROM upgrade_records WHERE task_id = ${task}`.execute(t.database.db);
    const recordIds = records.rows.map((row) => row.id);
    const eventsOfRecords = () => count(sql<{ n: number }>`SELECT count(*) AS n FROM record_events WHERE record_id = ANY(${recordIds}::bigint[])`);
    // released, then canceled
    expect(recordIds.length).toBeGreaterThan(0);
    expect(await eventsOfRecords()).toBe(2 * recordIds.length);
    const deleted = await t.app.inject({ method: 'DELETE', url: `/api/tasks/${task}`, headers: t.auth });
    expect(deleted.statusCode, deleted.body).toBe(204);
    expect(await recordsOf(task)).toBe(0);
    expect(await eventsOfRecords()).toBe(0);

    const doomedFirmware = await createFirmware(t.app, t.auth, PRODUCT, '3.0.0', 3);
    const doomed = await createTask(t.app, t.auth, { firmwareId: doomedFirmware, name: 'doomed' });
    await release(doomed, { deviceIds: ALL_IDS.slice(0, 20) });
    await sql`DELETE FROM firmware WHERE id = ${doomedFirmware}`.execute(t.database.db);
    expect(await recordsOf(doomed)).toBe(0);
    expect(await count(sql<{ n: number }>`SELECT count(*) AS n FROM record_events e LEFT JOIN upgrade_records r ON r.id = e.record_id WHERE r.id IS NULL`)).toBe(0);
  });
});
