// An API-only process answers task polls from recent snapshots: its own writes show at once, the
// workers' (another process, here a direct write to Postgres) within a quarter of a second.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { createFirmware, createTask, registerDevices } from '../helpers/rollout.ts';

describe('task reads on a ROLE=api process', () => {
  let t: TestApp;

  beforeAll(async () => {
    t = await buildTestApp({ ROLE: 'api' });
  });

  afterAll(async () => {
    await t?.close();
  });

  const read = async (taskId: string) => (await t.app.inject({ method: 'GET', url: `/api/tasks/${taskId}`, headers: t.auth })).json();

  it("shows this process's writes at once and the workers' within 250 ms", async () => {
    await registerDevices(t.app, t.auth, 'snap', ['snap-1', 'snap-2']);
    const firmwareId = await createFirmware(t.app, t.auth, 'snap');
    const taskId = await createTask(t.app, t.auth, { firmwareId });
    expect((await read(taskId)).stats.total).toBe(0);

    const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true } });
    expect(release.statusCode).toBe(200);
    expect((await read(taskId)).stats.total).toBe(2);

    // a worker elsewhere finishes a record
    await sql`UPDATE upgrade_tasks SET waiting = waiting - 1, success = success + 1 WHERE id = ${taskId}`.execute(t.otter.db);
    const seenAt = Date.now();
    while ((await read(taskId)).stats.success !== 1) {
      expect(Date.now() - seenAt).toBeLessThan(250 + 100);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  });

  it('answers 404 for a task that does not exist', async () => {
    const response = await t.app.inject({ method: 'GET', url: '/api/tasks/00000000-0000-4000-8000-000000000000', headers: t.auth });
    expect(response.statusCode).toBe(404);
    expect(response.json().code).toBe('not_found');
  });
});
