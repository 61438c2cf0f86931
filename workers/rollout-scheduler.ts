// Moves rollout strategies along (docs/strategies.md), once a second in every worker process:
// the gate of each waved task's open wave (soak, approval, pass or pause), tasks past their endAt,
// and, every few seconds, the enrolment of devices that came to match a continuous task. Every
// write is guarded by what was read, so several processes doing this at once agree; enrolment, the
// one heavy step, is also leased per task, so one process at a time does it.
import type { UpgradeQueues } from '../services/upgrade-queues.ts';
import type { Logger } from 'pino';
import type { Db } from '../db/connection.ts';
import { RoundLoop } from '../core/round-loop.ts';
import { evaluateGate, gateSettings } from '../core/waves.ts';
import { failWaveGate, findOpenWaves, openNextWave, setWaveState, type OpenWave } from '../db/queries/waves.ts';
import { endTask, findEndedTasks } from '../db/queries/task-lifecycle.ts';
import { findContinuousTasks } from '../db/queries/tasks.ts';
import { releaseToDevices } from '../db/queries/release.ts';
import { removeJobs } from '../services/upgrade-jobs.ts';

export interface RolloutSchedulerOptions {
  /** How often gates and endAt are looked at. */
  intervalMs?: number;
  /** How often continuous tasks look for devices that came to match (the contract: within 10 s). */
  enrolIntervalMs?: number;
  /** The clock soak times are measured by; Date.now unless a test moves it. */
  clock?: () => number;
  /**
   * Takes the lease of a task's enrolment for `ms`; false while another process holds it. Without
   * one, every process enrols every task (idempotent, only repeated work).
   */
  enrolLease?: (taskId: string, ms: number) => Promise<boolean>;
}

export class RolloutScheduler {
  private readonly db: Db;
  private readonly queue: UpgradeQueues;
  private readonly logger: Logger;
  /** Called when records became sendable (a wave opened, devices enrolled): the dispatcher looks now. */
  private readonly onSendable: () => void;
  private readonly options: Required<RolloutSchedulerOptions>;
  private readonly loop: RoundLoop;
  private lastEnrolAt = 0;

  constructor(db: Db, queue: UpgradeQueues, logger: Logger, onSendable: () => void, options: RolloutSchedulerOptions = {}) {
    this.db = db;
    this.queue = queue;
    this.logger = logger;
    this.onSendable = onSendable;
    this.options = {
      intervalMs: options.intervalMs ?? 1_000,
      enrolIntervalMs: options.enrolIntervalMs ?? 5_000,
      clock: options.clock ?? Date.now,
      enrolLease: options.enrolLease ?? (async () => true),
    };
    this.loop = new RoundLoop(
      async () => {
        await this.round();
        return this.options.intervalMs;
      },
      (err) => {
        this.logger.warn({ err }, 'rollout scheduler round failed');
        return this.options.intervalMs;
      },
    );
  }

  start(): void {
    this.loop.start();
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }

  async round(): Promise<void> {
    for (const wave of await findOpenWaves(this.db)) await this.gate(wave);
    await this.endTasks();
    if (Date.now() - this.lastEnrolAt >= this.options.enrolIntervalMs) {
      this.lastEnrolAt = Date.now();
      await this.enrol();
    }
  }

  private async gate(wave: OpenWave): Promise<void> {
    // only a running task moves on; for the rest (and the last wave) the state shows how it went:
    // there is no next wave to soak or approve for, so it passes once all its records are final
    const last = wave.index >= wave.waveCount || wave.taskState !== 'running';
    const gate = gateSettings(wave.rollout.gate);
    const decision = evaluateGate(wave, last ? { ...gate, minFinished: 1, soakSeconds: 0, approval: false } : gate, this.options.clock());
    if (decision.action === 'open_next' && !last) {
      if (await openNextWave(this.db, wave.taskId, wave.index)) {
        this.logger.info({ taskId: wave.taskId, wave: wave.index }, 'wave passed its gate: next wave open');
        this.onSendable();
      }
      return;
    }
    if (decision.action === 'pause' && !last) {
      if (await failWaveGate(this.db, wave)) this.logger.warn({ taskId: wave.taskId, wave: wave.index }, 'wave failed its gate: task paused');
      return;
    }
    if (decision.state !== wave.state || decision.gateMetAt !== wave.gateMetAt) {
      await setWaveState(this.db, wave, decision.state, decision.gateMetAt);
    }
  }

  private async endTasks(): Promise<void> {
    for (const taskId of await findEndedTasks(this.db)) {
      const canceled = await endTask(this.db, taskId);
      await removeJobs(this.queue, canceled);
      if (canceled.length > 0) this.logger.info({ taskId, canceled: canceled.length }, 'task ended at its endAt');
    }
  }

  /** Each running continuous task released again with its selection: only new matches are added. */
  private async enrol(): Promise<void> {
    for (const task of await findContinuousTasks(this.db)) {
      // a little under the interval, so the next round (here or elsewhere) takes it again
      if (!(await this.options.enrolLease(task.id, this.options.enrolIntervalMs * 0.8))) continue;
      const { push, ...selection } = task.selection;
      const result = await releaseToDevices(
        this.db,
        { taskId: task.id, firmwareId: task.firmwareId, productId: task.productId, targetVersion: task.firmwareVersion, rollout: task.rollout },
        selection,
        { push },
      );
      if (result.added > 0) {
        this.logger.info({ taskId: task.id, added: result.added }, 'continuous task enrolled devices');
        if (push) this.onSendable();
      }
    }
  }
}
