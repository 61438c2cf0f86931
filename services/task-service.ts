// Task operations that span several steps (state change, records, queue, dispatch signal), so the
// task routes stay thin: validate, call one of these, shape the reply.
import type { UpgradeQueues } from './upgrade-queues.ts';
import type { Db } from '../db/connection.ts';
import type { RecordState, StoredSelection, TaskRow, TaskState } from '../db/database.ts';
import { conflict, notFound } from '../core/errors.ts';
import { findTask, moveTaskState, reopenRecords, setTaskSelection } from '../db/queries/tasks.ts';
import { approveWave, openNextWave } from '../db/queries/waves.ts';
import { releaseToDevices, type ReleaseResult, type ReleaseSelection } from '../db/queries/release.ts';
import { requestPush } from '../db/queries/dispatch.ts';
import { cancelRecords, completeFinishedTasks } from '../db/queries/task-lifecycle.ts';
import { removeJobs } from './upgrade-jobs.ts';
import type { DispatchSignal } from './dispatch-signal.ts';
import type { TaskSnapshots } from './task-snapshots.ts';

const CLOSED: readonly TaskState[] = ['canceled', 'aborted'];

export class TaskService {
  private readonly db: Db;
  private readonly queue: UpgradeQueues;
  private readonly signal: DispatchSignal;
  private readonly snapshots: TaskSnapshots | undefined;

  constructor(db: Db, queue: UpgradeQueues, signal: DispatchSignal, snapshots?: TaskSnapshots) {
    this.db = db;
    this.queue = queue;
    this.signal = signal;
    this.snapshots = snapshots;
  }

  /** The task for a reader (GET): from a recent snapshot where this process keeps them. */
  async read(taskId: string): Promise<TaskRow> {
    const task = this.snapshots ? await this.snapshots.get(taskId) : await findTask(this.db, taskId);
    if (!task) throw notFound('task', taskId);
    return task;
  }

  async get(taskId: string): Promise<TaskRow> {
    const task = await findTask(this.db, taskId);
    if (!task) throw notFound('task', taskId);
    return task;
  }

  private async open(taskId: string): Promise<TaskRow> {
    const task = await this.get(taskId);
    if (CLOSED.includes(task.state)) throw conflict('task_closed', `task ${taskId} is ${task.state}`);
    return task;
  }

  async release(taskId: string, selection: ReleaseSelection, push: boolean): Promise<ReleaseResult & { queued?: number }> {
    const task = await this.open(taskId);
    if (push && task.mode === 'pull') throw conflict('task_mode_pull', `task ${taskId} is a pull task: devices ask for the firmware`);
    const result = await releaseToDevices(
      this.db,
      { taskId, firmwareId: task.firmware_id, productId: task.product_id, targetVersion: task.firmware_version, rollout: task.rollout },
      selection,
      { push },
    );
    // a continuous task enrols by its latest selection from now on (workers/rollout-scheduler.ts)
    if (task.continuous) await setTaskSelection(this.db, taskId, { ...selection, push } as StoredSelection);
    if (result.added > 0) {
      // devices may pull as soon as they are released; a push task runs once it is pushed
      if (task.mode === 'pull' || push) await moveTaskState(this.db, taskId, ['created', 'completed'], 'running');
      else await moveTaskState(this.db, taskId, ['completed'], 'created');
    }
    if (push) this.signal.poke(taskId);
    return push ? { ...result, queued: result.added } : result;
  }

  async push(taskId: string, deviceIds?: string[]): Promise<number> {
    const task = await this.open(taskId);
    if (task.mode === 'pull') throw conflict('task_mode_pull', `task ${taskId} is a pull task: devices ask for the firmware`);
    const queued = await requestPush(this.db, taskId, deviceIds);
    await moveTaskState(this.db, taskId, ['created', 'completed'], 'running');
    this.signal.poke(taskId);
    return queued;
  }

  async pause(taskId: string): Promise<TaskRow> {
    const task = await this.get(taskId);
    if (task.state === 'paused') return task;
    const moved = await moveTaskState(this.db, taskId, ['created', 'running'], 'paused');
    if (!moved) throw conflict('task_not_running', `task ${taskId} is ${task.state}: only a created or running task can be paused`);
    return moved;
  }

  async resume(taskId: string): Promise<TaskRow> {
    const task = await this.get(taskId);
    if (task.state === 'running') return task;
    const moved = await moveTaskState(this.db, taskId, ['paused'], 'running');
    if (!moved) throw conflict('task_not_paused', `task ${taskId} is ${task.state}: only a paused task can be resumed`);
    // resuming after a failed gate is the operator's word that the rollout goes on: the next wave opens
    if (task.paused_reason === 'gate_failed' && task.open_wave !== null) await openNextWave(this.db, taskId, task.open_wave, 'failed');
    this.signal.poke(taskId);
    await completeFinishedTasks(this.db, [taskId]);
    return (await findTask(this.db, taskId)) ?? moved;
  }

  /** Approves the gate of wave `index` (docs/strategies.md#gates); the scheduler passes it once soaked. */
  async approveWave(taskId: string, index: number): Promise<TaskRow> {
    await this.open(taskId);
    const outcome = await approveWave(this.db, taskId, index);
    if (outcome === 'no_such_wave') throw notFound('wave', `${taskId}/${index}`);
    if (outcome === 'not_approvable') throw conflict('wave_not_approvable', `wave ${index} of task ${taskId} is not running, soaking or awaiting approval`);
    this.signal.poke(taskId);
    return this.get(taskId);
  }

  /**
   * Cancels waiting (and, if asked, processing) records; without deviceIds the whole task is
   * canceled. Their jobs are removed from the queue.
   */
  async cancel(taskId: string, options: { deviceIds?: string[]; includeProcessing?: boolean }): Promise<{ canceled: number; task: TaskRow }> {
    const task = await this.open(taskId);
    const states: RecordState[] = options.includeProcessing ? ['waiting', 'processing'] : ['waiting'];
    const canceled = await this.db.transaction().execute(async (trx) => {
      // the records first, then the task row: the order in which record batches lock them, so a
      // cancel amid a stream of device messages cannot deadlock with them
      const records = await cancelRecords(trx, taskId, { states, deviceIds: options.deviceIds, message: 'canceled by an operator' });
      if (!options.deviceIds) await moveTaskState(trx, taskId, ['created', 'running', 'paused', 'completed'], 'canceled');
      return records;
    });
    await removeJobs(this.queue, canceled);
    if (options.deviceIds) await completeFinishedTasks(this.db, [task.id]);
    return { canceled: canceled.length, task: await this.get(taskId) };
  }

  /** Records in `states` back to waiting with attempts reset; the task runs again. */
  async retry(taskId: string, options: { states?: Array<'failed' | 'canceled'>; deviceIds?: string[] }): Promise<{ retried: number; task: TaskRow }> {
    const task = await this.get(taskId);
    const push = task.mode === 'push';
    const retried = await reopenRecords(this.db, taskId, { states: options.states ?? ['failed'], deviceIds: options.deviceIds, push });
    if (retried > 0) {
      await moveTaskState(this.db, taskId, ['created', 'completed', 'canceled', 'aborted'], 'running');
      this.signal.poke(taskId);
    }
    return { retried, task: await this.get(taskId) };
  }
}
