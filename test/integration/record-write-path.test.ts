// The one write path of records (docs/states-and-rules.md#one-write-path), in the real database: the
// SQL side of each record rule agrees with core/record-machine.ts, a change written with named fields
// applies only at the revision it was computed from, and a task's counters follow its records by
// trigger whatever statement moves them.
import fc from 'fast-check';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isDispatchable, transition } from '../../core/record-machine.ts';
import { applyRecordChanges, changeOf } from '../../db/queries/record-changes.ts';
import { DISPATCHABLE, loadUpgradeStatesByIds } from '../../db/queries/upgrade-state.ts';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { createFirmware, createTask, registerDevices, taskStats } from '../helpers/rollout.ts';

const PRODUCT = 'write-path';
const DEVICES = Array.from({ length: 40 }, (_, i) => `wp-${String(i).padStart(3, '0')}`);

let t: TestApp;
let taskId: string;
let recordIds: number[];

async function countsByState(id: string): Promise<Record<string, number>> {
  const { rows } = await sql<{ state: string; n: number }>`
    SELECT state, count(*)::int AS n FROM upgrade_records WHERE task_id = ${id} GROUP BY state`.execute(t.otter.db);
  return Object.fromEntries(rows.map((row) => [row.state, row.n]));
}

async function expectCountersMatch(id: string): Promise<void> {
  const counts = await countsByState(id);
  // from the row, not GET /api/tasks/{id}: the API may answer from a snapshot a moment old
  const stats = await t.otter.db
    .selectFrom('upgrade_tasks')
    .select(['total', 'waiting', 'processing', 'success', 'failed', 'canceled'])
    .where('id', '=', id)
    .executeTakeFirstOrThrow();
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  expect(stats).toEqual({
    total,
    waiting: counts.waiting ?? 0,
    processing: counts.processing ?? 0,
    success: counts.success ?? 0,
    failed: counts.failed ?? 0,
    canceled: counts.canceled ?? 0,
  });
}

beforeAll(async () => {
  t = await buildTestApp();
  await registerDevices(t.app, t.auth, PRODUCT, DEVICES);
  const firmwareId = await createFirmware(t.app, t.auth, PRODUCT);
  taskId = await createTask(t.app, t.auth, { firmwareId, mode: 'push' });
  const released = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true } });
  expect(released.statusCode, released.body).toBe(200);
  const { rows } = await sql<{ id: number }>`SELECT id FROM upgrade_records WHERE task_id = ${taskId} ORDER BY id`.execute(t.otter.db);
  recordIds = rows.map((row) => Number(row.id));
}, 60_000);

afterAll(async () => {
  await t?.close();
});

describe('the one write path', () => {
  it('a release counts its records by trigger: total and waiting', async () => {
    const { stats } = await taskStats(t.app, t.auth, taskId);
    expect(stats.total).toBe(DEVICES.length);
    expect(stats.waiting).toBe(DEVICES.length);
    await expectCountersMatch(taskId);
  });

  it('DISPATCHABLE in SQL selects exactly the records isDispatchable accepts', async () => {
    const shape = fc.record({
      state: fc.constantFrom('waiting', 'processing', 'success', 'failed', 'canceled'),
      pushRequested: fc.boolean(),
      queued: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(shape, { minLength: DEVICES.length, maxLength: DEVICES.length }), async (shapes) => {
        // a fixture written around the state machine on purpose: any combination, valid or not
        await sql`
          UPDATE upgrade_records r SET state = s.state, push_requested = s.push, queued_at = CASE WHEN s.queued THEN now() END
          FROM unnest(${recordIds}::bigint[], ${shapes.map((s) => s.state)}::text[], ${shapes.map((s) => s.pushRequested)}::boolean[],
                      ${shapes.map((s) => s.queued)}::boolean[]) AS s(id, state, push, queued)
          WHERE r.id = s.id`.execute(t.otter.db);
        const { rows } = await sql<{ id: string }>`
          SELECT id FROM upgrade_records WHERE task_id = ${taskId} AND ${DISPATCHABLE} ORDER BY id`.execute(t.otter.db);
        const states = await loadUpgradeStatesByIds(t.otter.db, recordIds);
        const expected = recordIds.filter((id) => isDispatchable(states.get(id)!.snapshot));
        expect(rows.map((row) => Number(row.id))).toEqual(expected);
        // even a statement that bypasses the machine cannot make the counters drift
        await expectCountersMatch(taskId);
      }),
      { numRuns: 25 },
    );
  });

  it('a change applies only at the revision it was computed from', async () => {
    await sql`UPDATE upgrade_records SET state = 'waiting', push_requested = false, queued_at = NULL WHERE task_id = ${taskId}`.execute(t.otter.db);
    const id = recordIds[0]!;
    const state = (await loadUpgradeStatesByIds(t.otter.db, [id])).get(id)!;
    const pushed = changeOf(state, transition(state.snapshot, { type: 'request_push', now: Date.now() }, state.policy));
    const canceled = changeOf(state, transition(state.snapshot, { type: 'cancel', now: Date.now(), message: 'test' }, state.policy));

    const first = await applyRecordChanges(t.otter.db, [pushed]);
    expect(first.applied.map((c) => c.id)).toEqual([id]);
    // computed from the same revision: the record moved on, so this one is stale
    const second = await applyRecordChanges(t.otter.db, [canceled]);
    expect(second.stale.map((c) => c.id)).toEqual([id]);

    const after = (await loadUpgradeStatesByIds(t.otter.db, [id])).get(id)!;
    expect(after.revision).toBe(state.revision + 1);
    expect(after.snapshot).toEqual({ ...state.snapshot, pushRequested: true });
    const { rows } = await sql<{ type: string }>`SELECT type FROM record_events WHERE record_id = ${id} AND type = 'canceled'`.execute(t.otter.db);
    expect(rows).toEqual([]);
  });

  it('every named field of the snapshot round-trips through otter_write_records', async () => {
    const id = recordIds[1]!;
    const state = (await loadUpgradeStatesByIds(t.otter.db, [id])).get(id)!;
    const at = Date.UTC(2026, 5, 1, 12, 0, 0);
    const written = {
      ...state.snapshot,
      state: 'processing' as const,
      attempts: 2,
      progress: 37,
      errorReason: 'timeout',
      messageId: 'm-write-path',
      startedAt: at,
      attemptStartedAt: at + 1,
      deadlineAt: at + 2,
      responseDeadlineAt: at + 3,
      retryAt: at + 4,
      lastMessageAt: at + 5,
      completedAt: null,
      pushRequested: false,
      queuedAt: null,
      dispatches: 7,
    };
    const { applied } = await applyRecordChanges(t.otter.db, [changeOf(state, { record: written, events: [{ type: 'sent', attempt: 2 }] })]);
    expect(applied).toHaveLength(1);
    const after = (await loadUpgradeStatesByIds(t.otter.db, [id])).get(id)!;
    expect(after.snapshot).toEqual(written);
    await expectCountersMatch(taskId);
  });

  it('the operator cancel goes through the machine: canceled events, cleared queue marks, counters', async () => {
    await sql`UPDATE upgrade_records SET push_requested = true, queued_at = now() WHERE id = ANY(${recordIds.slice(2, 6)}::bigint[])`.execute(t.otter.db);
    const response = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/cancel`, headers: t.auth, payload: {} });
    expect(response.statusCode, response.body).toBe(200);
    const { rows } = await sql<{ n: number; events: number }>`
      SELECT count(*)::int AS n,
        (SELECT count(*)::int FROM record_events e JOIN upgrade_records r ON r.id = e.record_id
         WHERE r.task_id = ${taskId} AND e.type = 'canceled' AND e.message = 'canceled by an operator') AS events
      FROM upgrade_records
      WHERE task_id = ${taskId} AND state = 'canceled' AND queued_at IS NULL AND NOT push_requested AND completed_at IS NOT NULL`.execute(t.otter.db);
    const waitingBefore = DEVICES.length - 1; // one record was left processing by the previous test
    expect(rows[0]).toEqual({ n: waitingBefore, events: waitingBefore });
    await expectCountersMatch(taskId);
  });
});
