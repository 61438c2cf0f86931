// Upgrade tasks: create, read, list, update, delete, guarded state changes, and putting records
// back to `waiting` for a retry — each a small statement of its own. `revision` rises with every
// change of the task's settings or state (not with its record counters, which move all through a
// rollout); a change or delete given the revisions it expects checks them in its own statement.
import { sql } from 'kysely';
import type { Db } from '../connection.ts';
import type { AbortPolicy, RecordState, RetryPolicy, RolloutLimits, TaskMode, StoredSelection, TaskRow, TaskState, TaskWaveRow } from '../database.ts';
import type { MaintenanceWindow } from '../../core/maintenance-windows.ts';
import { transitionRecords } from './record-transitions.ts';
import { pageOf } from './paging.ts';
import { lockTaskReleases } from './release.ts';

export interface NewTask {
  firmwareId: string;
  productId: string;
  firmwareVersion: string;
  name: string;
  description: string | null;
  mode: TaskMode;
  timeoutSeconds: number;
  responseTimeoutSeconds: number | null;
  retry: RetryPolicy;
  rollout: RolloutLimits;
  abort: AbortPolicy | null;
  startAt: string | null;
  windows: MaintenanceWindow[] | null;
  continuous: boolean;
  endAt: string | null;
}

export interface TaskChanges {
  name?: string;
  description?: string | null;
  timeoutSeconds?: number;
  responseTimeoutSeconds?: number | null;
  retry?: RetryPolicy;
  rollout?: RolloutLimits;
  abort?: AbortPolicy | null;
  startAt?: string | null;
  windows?: MaintenanceWindow[] | null;
  continuous?: boolean;
  endAt?: string | null;
}

/** The revisions a change is based on (from If-Match): it applies only to a row at one of them. */
export type ExpectedRevisions = readonly number[] | undefined;

export type TaskUpdateOutcome = { kind: 'updated'; row: TaskRow } | { kind: 'not_found' } | { kind: 'stale'; revision: number } | { kind: 'released' };
export type TaskDeleteOutcome = { kind: 'deleted' } | { kind: 'active' } | { kind: 'not_found' } | { kind: 'stale'; revision: number };

/** Empty: a condition nothing meets (revisions start at 1). */
function expectedList(expected: readonly number[]): number[] {
  return expected.length > 0 ? [...expected] : [-1];
}

export async function insertTask(db: Db, task: NewTask): Promise<TaskRow> {
  return db
    .insertInto('upgrade_tasks')
    .values({
      firmware_id: task.firmwareId,
      product_id: task.productId,
      firmware_version: task.firmwareVersion,
      name: task.name,
      description: task.description,
      mode: task.mode,
      timeout_seconds: task.timeoutSeconds,
      response_timeout_seconds: task.responseTimeoutSeconds,
      retry: JSON.stringify(task.retry),
      rollout: JSON.stringify(task.rollout),
      abort: task.abort ? JSON.stringify(task.abort) : null,
      start_at: task.startAt,
      windows: task.windows ? JSON.stringify(task.windows) : null,
      continuous: task.continuous,
      end_at: task.endAt,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function findTask(db: Db, id: string): Promise<TaskRow | undefined> {
  return db.selectFrom('upgrade_tasks').selectAll().where('id', '=', id).executeTakeFirst();
}

/** The waves of these tasks, by task, each in order (tasks without waves are absent). */
export async function findTaskWaves(db: Db, taskIds: readonly string[]): Promise<Map<string, TaskWaveRow[]>> {
  const byTask = new Map<string, TaskWaveRow[]>();
  if (taskIds.length === 0) return byTask;
  const rows = await db.selectFrom('task_waves').selectAll().where('task_id', 'in', [...taskIds]).orderBy('task_id').orderBy('index').execute();
  for (const row of rows) {
    const waves = byTask.get(row.task_id) ?? [];
    waves.push(row);
    byTask.set(row.task_id, waves);
  }
  return byTask;
}

export interface ContinuousTask {
  id: string;
  firmwareId: string;
  productId: string;
  firmwareVersion: string;
  rollout: RolloutLimits;
  selection: StoredSelection;
}

/** Open continuous tasks with a selection to enrol by, not past their endAt (docs/strategies.md#continuous). */
export async function findContinuousTasks(db: Db): Promise<ContinuousTask[]> {
  const { rows } = await sql<ContinuousTask>`
    SELECT id, firmware_id AS "firmwareId", product_id AS "productId", firmware_version AS "firmwareVersion", rollout, selection
    FROM upgrade_tasks
    WHERE continuous AND selection IS NOT NULL AND state IN ('running', 'paused')
      AND (end_at IS NULL OR end_at > now())`.execute(db);
  return rows;
}

/** Keeps the selection a continuous task enrols by. */
export async function setTaskSelection(db: Db, taskId: string, selection: StoredSelection): Promise<void> {
  await db.updateTable('upgrade_tasks').set({ selection: JSON.stringify(selection) }).where('id', '=', taskId).execute();
}

export interface TaskFilter {
  firmwareId?: string;
  productId?: string;
  state?: TaskState;
}

export async function listTasks(db: Db, filter: TaskFilter, page: { limit: number; offset: number }) {
  let query = db.selectFrom('upgrade_tasks');
  if (filter.firmwareId) query = query.where('firmware_id', '=', filter.firmwareId);
  if (filter.productId) query = query.where('product_id', '=', filter.productId);
  if (filter.state) query = query.where('state', '=', filter.state);
  return pageOf(query, (q) => q.selectAll().orderBy('created_at', 'desc').orderBy('id', 'desc').limit(page.limit).offset(page.offset).execute());
}

/**
 * Writes `changes`; given `expected`, only at one of those revisions; with `unreleased`, only while
 * the task has never been released: a change of its waves then waits for a release under way (the
 * release lock), so it lands wholly before a release or finds the task released.
 */
export async function updateTask(db: Db, id: string, changes: TaskChanges, expected?: ExpectedRevisions, unreleased = false): Promise<TaskUpdateOutcome> {
  if (!unreleased) return writeTask(db, id, changes, expected, false);
  return db.transaction().execute(async (trx) => {
    await lockTaskReleases(trx, id);
    return writeTask(trx, id, changes, expected, true);
  });
}

async function writeTask(db: Db, id: string, changes: TaskChanges, expected: ExpectedRevisions, unreleased: boolean): Promise<TaskUpdateOutcome> {
  let query = db
    .updateTable('upgrade_tasks')
    .set((eb) => ({
      ...(changes.name !== undefined ? { name: changes.name } : {}),
      ...(changes.description !== undefined ? { description: changes.description } : {}),
      ...(changes.timeoutSeconds !== undefined ? { timeout_seconds: changes.timeoutSeconds } : {}),
      ...(changes.responseTimeoutSeconds !== undefined ? { response_timeout_seconds: changes.responseTimeoutSeconds } : {}),
      ...(changes.retry !== undefined ? { retry: JSON.stringify(changes.retry) } : {}),
      ...(changes.rollout !== undefined ? { rollout: JSON.stringify(changes.rollout) } : {}),
      ...(changes.abort !== undefined ? { abort: changes.abort ? JSON.stringify(changes.abort) : null } : {}),
      ...(changes.startAt !== undefined ? { start_at: changes.startAt } : {}),
      ...(changes.windows !== undefined ? { windows: changes.windows ? JSON.stringify(changes.windows) : null } : {}),
      ...(changes.continuous !== undefined ? { continuous: changes.continuous } : {}),
      ...(changes.endAt !== undefined ? { end_at: changes.endAt } : {}),
      revision: eb('revision', '+', 1),
      updated_at: sql`now()`,
    }))
    .where('id', '=', id);
  // in the statement itself: of two writers expecting one revision, the second finds it gone
  if (expected !== undefined) query = query.where('revision', 'in', expectedList(expected));
  if (unreleased) query = query.where('open_wave', 'is', null).where('total', '=', 0);
  const row = await query.returningAll().executeTakeFirst();
  if (row) return { kind: 'updated', row };
  const current = await findTask(db, id);
  if (!current) return { kind: 'not_found' };
  if (expected !== undefined && !expected.includes(current.revision)) return { kind: 'stale', revision: current.revision };
  return unreleased ? { kind: 'released' } : { kind: 'stale', revision: current.revision };
}

/**
 * Deletes a task with no waiting or processing records (and, given `expected`, at one of those
 * revisions); when it is not deleted, says why: gone, changed, or active.
 */
export async function deleteIdleTask(db: Db, id: string, expected?: ExpectedRevisions): Promise<TaskDeleteOutcome> {
  let query = db
    .deleteFrom('upgrade_tasks')
    .where('id', '=', id)
    .where('waiting', '=', 0)
    .where('processing', '=', 0);
  if (expected !== undefined) query = query.where('revision', 'in', expectedList(expected));
  const result = await query.executeTakeFirst();
  if (Number(result.numDeletedRows) > 0) return { kind: 'deleted' };
  const current = await findTask(db, id);
  if (!current) return { kind: 'not_found' };
  if (expected !== undefined && !expected.includes(current.revision)) return { kind: 'stale', revision: current.revision };
  return { kind: 'active' };
}

/** Moves a task to `to` if it is in one of `from`; the updated row, or undefined if it was not. */
export async function moveTaskState(db: Db, id: string, from: readonly TaskState[], to: TaskState): Promise<TaskRow | undefined> {
  return db
    .updateTable('upgrade_tasks')
    // an operator's pause; the rollout scheduler pauses with its own reason (db/queries/waves.ts)
    .set((eb) => ({ state: to, paused_reason: to === 'paused' ? 'manual' : null, revision: eb('revision', '+', 1), updated_at: sql`now()` }))
    .where('id', '=', id)
    .where('state', 'in', [...from])
    .returningAll()
    .executeTakeFirst();
}

/**
 * Puts a task's records in `states` (optionally some devices only) back to `waiting` with their
 * attempts reset, and marks them to be pushed when the task pushes. A device with an active upgrade
 * elsewhere is left as it is. Returns how many records were reopened.
 */
export async function reopenRecords(
  db: Db,
  taskId: string,
  options: { states: Array<'failed' | 'canceled'>; deviceIds?: string[]; push: boolean },
): Promise<number> {
  const now = Date.now();
  const written = await db.transaction().execute((trx) =>
    transitionRecords(trx, { taskId, states: options.states, deviceIds: options.deviceIds, deviceIdle: true }, () => ({
      type: 'reopen',
      now,
      push: options.push,
    })),
  );
  return written.length;
}

export interface TaskRecordFilter {
  state?: RecordState;
  deviceId?: string;
  wave?: number;
}

export async function listTaskRecords(db: Db, taskId: string, filter: TaskRecordFilter, page: { limit: number; offset: number }) {
  let query = db.selectFrom('upgrade_records').where('task_id', '=', taskId);
  if (filter.state) query = query.where('state', '=', filter.state);
  if (filter.deviceId) query = query.where('device_id', '=', filter.deviceId);
  if (filter.wave !== undefined) query = query.where('wave', '=', filter.wave);
  return pageOf(query, (q) => q.selectAll().orderBy('id').limit(page.limit).offset(page.offset).execute());
}
