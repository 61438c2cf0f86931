// The dispatcher hands waiting records of running push tasks to the upgrade queue, as their
// rollout limits allow: no more in flight than maxInFlight, no more queued than the rate window
// has room for, and a bounded share per task per round so one big task never starves another.
// Every worker process runs one; they take turns per task through an advisory lock.
import type { Queue } from 'bullmq';
import type { Logger } from 'pino';
import type { Db } from '../db/connection.ts';
import { claimRecordsForDispatch, findDispatchableTasks, type DispatchableTask } from '../db/queries/dispatch.ts';
import { upgradeJobId, type UpgradeJobData } from '../core/jobs.ts';
import type { SendRateLimiter } from './send-rate-limiter.ts';

export interface DispatcherOptions {
  intervalMs?: number;
  /** Records one task may have queued per round. */
  perTaskPerRound?: number;
  /** Records of one task queued but not yet sent, at most: no point queueing far ahead of the workers. */
  maxBacklog?: number;
}

const ADD_CHUNK = 1_000;

export class Dispatcher {
  private readonly db: Db;
  private readonly queue: Queue<UpgradeJobData>;
  private readonly rateLimiter: SendRateLimiter;
  private readonly logger: Logger;
  private readonly options: Required<DispatcherOptions>;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = true;

  constructor(db: Db, queue: Queue<UpgradeJobData>, rateLimiter: SendRateLimiter, logger: Logger, options: DispatcherOptions = {}) {
    this.db = db;
    this.queue = queue;
    this.rateLimiter = rateLimiter;
    this.logger = logger;
    this.options = { intervalMs: 250, perTaskPerRound: 2_000, maxBacklog: 5_000, ...options };
  }

  start(): void {
    this.stopped = false;
    this.poke();
  }

  /** Runs a round now (after the current one), e.g. when a task was pushed or resumed. */
  poke(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.running = this.round()
      .catch((err: unknown) => this.logger.warn({ err }, 'dispatch round failed'))
      .then((busy) => {
        this.running = undefined;
        if (this.stopped) return;
        if (busy || this.again) {
          this.again = false;
          setImmediate(() => this.poke());
        } else {
          this.timer = setTimeout(() => this.poke(), this.options.intervalMs);
        }
      });
  }

  /** One pass over the dispatchable tasks; true if any task had more than one round's share. */
  async round(): Promise<boolean> {
    const tasks = await findDispatchableTasks(this.db);
    let busy = false;
    for (const task of tasks) {
      const claimed = await this.dispatchTask(task);
      if (claimed >= this.options.perTaskPerRound) busy = true;
    }
    return busy;
  }

  private async dispatchTask(task: DispatchableTask): Promise<number> {
    const { maxInFlight, maxPerMinute } = task.rollout ?? {};
    const claimed = await claimRecordsForDispatch(this.db, task.id, async ({ processing, queuedUnsent }) => {
      let budget = Math.min(this.options.perTaskPerRound, this.options.maxBacklog - queuedUnsent);
      if (maxInFlight) budget = Math.min(budget, maxInFlight - processing - queuedUnsent);
      if (maxPerMinute && budget > 0) {
        budget = Math.min(budget, (await this.rateLimiter.available(task.id, maxPerMinute)) - queuedUnsent);
      }
      return budget;
    });
    for (let i = 0; i < claimed.length; i += ADD_CHUNK) {
      await this.queue.addBulk(
        claimed.slice(i, i + ADD_CHUNK).map((record) => ({
          name: record.deviceId,
          data: { recordId: record.id, taskId: task.id, deviceId: record.deviceId },
          opts: { jobId: upgradeJobId(record.id, record.dispatches) },
        })),
      );
    }
    if (claimed.length > 0) this.logger.debug({ taskId: task.id, queued: claimed.length }, 'dispatched');
    return claimed.length;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }
}
