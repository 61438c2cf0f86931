// Waves and their gates (docs/strategies.md#waves): the open wave of each running waved task with
// its counters, and the guarded writes the rollout scheduler makes — each conditional on what it
// read, so schedulers in several processes may decide the same thing and only one write applies.
import { sql } from 'kysely';
import type { Db } from '../connection.ts';
import type { RolloutLimits, TaskState } from '../../core/tasks.ts';
import type { WaveState, WaveStatus } from '../../core/waves.ts';

export interface OpenWave extends WaveStatus {
  taskId: string;
  rollout: RolloutLimits;
  /** How many waves the task has. */
  waveCount: number;
  taskState: TaskState;
}

/**
 * The open wave of every running task with waves, with its counters and gate — and of a task
 * completed since, until its wave shows how it ended.
 */
export async function findOpenWaves(db: Db): Promise<OpenWave[]> {
  const { rows } = await sql<OpenWave>`
    SELECT t.id AS "taskId", t.state AS "taskState", t.rollout, jsonb_array_length(t.rollout->'waves') AS "waveCount",
      w.index, w.total, w.waiting, w.processing, w.success, w.failed, w.canceled, w.state,
      (extract(epoch FROM w.gate_met_at) * 1000)::float8 AS "gateMetAt", w.approved
    FROM upgrade_tasks t JOIN task_waves w ON w.task_id = t.id AND w.index = t.open_wave
    WHERE t.open_wave IS NOT NULL AND jsonb_typeof(t.rollout->'waves') = 'array'
      AND (t.state = 'running' OR (t.state = 'completed' AND w.state NOT IN ('passed', 'failed')))`.execute(db);
  return rows;
}

/** Writes a wave's gate state, if the wave is still where it was read. */
export async function setWaveState(db: Db, wave: OpenWave, state: WaveState, gateMetAt: number | null): Promise<boolean> {
  const result = await sql`
    UPDATE task_waves SET state = ${state},
      gate_met_at = ${gateMetAt === null ? null : new Date(gateMetAt)}
    WHERE task_id = ${wave.taskId} AND index = ${wave.index} AND state = ${wave.state}`.execute(db);
  return Number(result.numAffectedRows ?? 0) > 0;
}

/**
 * Passes wave `index` and opens the next: the dispatcher sends to it from now on. Only if `index`
 * is still the open wave, so two schedulers open it once.
 */
export async function openNextWave(db: Db, taskId: string, index: number, passedAs: WaveState = 'passed'): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    const { rows } = await sql<{ id: string }>`
      UPDATE upgrade_tasks SET open_wave = ${index + 1}, revision = revision + 1, updated_at = now()
      WHERE id = ${taskId} AND open_wave = ${index} RETURNING id`.execute(trx);
    if (rows.length === 0) return false;
    await sql`UPDATE task_waves SET state = ${passedAs} WHERE task_id = ${taskId} AND index = ${index}`.execute(trx);
    await sql`UPDATE task_waves SET state = 'running' WHERE task_id = ${taskId} AND index = ${index + 1}`.execute(trx);
    return true;
  });
}

/** The wave failed its gate: it is marked failed and its running task paused with `gate_failed`. */
export async function failWaveGate(db: Db, wave: OpenWave): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    const { rows } = await sql<{ id: string }>`
      UPDATE upgrade_tasks SET state = 'paused', paused_reason = 'gate_failed', revision = revision + 1, updated_at = now()
      WHERE id = ${wave.taskId} AND state = 'running' AND open_wave = ${wave.index} RETURNING id`.execute(trx);
    if (rows.length === 0) return false;
    await sql`UPDATE task_waves SET state = 'failed', gate_met_at = NULL WHERE task_id = ${wave.taskId} AND index = ${wave.index}`.execute(trx);
    return true;
  });
}

export type ApproveOutcome = 'approved' | 'no_such_wave' | 'not_approvable';

/**
 * An operator approves wave `index`'s gate: ahead of time while it runs or soaks, or when it
 * waits. A pending, passed or failed wave has no gate to approve.
 */
export async function approveWave(db: Db, taskId: string, index: number): Promise<ApproveOutcome> {
  const { rows } = await sql<{ state: WaveState }>`
    SELECT state FROM task_waves WHERE task_id = ${taskId} AND index = ${index}`.execute(db);
  if (!rows[0]) return 'no_such_wave';
  const result = await sql`
    UPDATE task_waves SET approved = true
    WHERE task_id = ${taskId} AND index = ${index} AND state IN ('running', 'soaking', 'awaiting_approval')`.execute(db);
  return Number(result.numAffectedRows ?? 0) > 0 ? 'approved' : 'not_approvable';
}
