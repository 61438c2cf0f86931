// The dispatcher hands waiting records of running push tasks to the upgrade queue, as their
// rollout limits allow: no more in flight than maxInFlight, no more queued than the rate window
// has room for, and a bounded share per task per round so one big task never starves another.
// First attempts of tasks without a rate limit are sent right here (DirectSends), as fast as this
// process keeps up with the answers; the rest become jobs for the workers.
// Every worker process runs one; they take turns per task through an advisory lock.
import type { Queue } from 'bullmq';
import type { Logger } from 'pino';
import type { Db } from '../db/connection.ts';
import { claimRecordsForDispatch, findDispatchableTasks, type DispatchableTask, type InFlight } from '../db/queries/dispatch.ts';
import { upgradeJobId, type UpgradeJobData } from '../core/jobs.ts';
import type { SendRateLimiter } from './send-rate-limiter.ts';
import type { DirectSends } from './direct-sends.ts';

export interface DispatcherOptions {
  intervalMs?: number;
  /** Records one task may have queued per round. */
  perTaskPerRound?: number;
  /** Records of one task queued but not yet sent, at most: no point queueing far ahead of the workers. */
  maxBacklog?: number;
}

/** The dispatcher's fast path: first attempts sent by the dispatcher itself (see DirectSends). */
export interface DirectSendPath {
  /** Claims and sends first attempts. */
  sends: DirectSends;
  /** Work this process has not caught up with (device messages, runnable jobs): sends wait for it. */
  backlog: () => Promise<number>;
  /** Sends per round, at most: as many as the process runs jobs at once, so several share the work. */
  perRound: number;
}

const ADD_CHUNK = 1_000;
/** How soon a round held back by this process's own backlog looks again. */
const HELD_BACK_RETRY_MS = 20;

type RoundPace = 'busy' | 'held_back' | 'idle';

export class Dispatcher {
  private readonly db: Db;
  private readonly queue: Queue<UpgradeJobData>;
  private readonly rateLimiter: SendRateLimiter;
  private readonly logger: Logger;
  private readonly options: Required<DispatcherOptions>;
  private readonly directPath: DirectSendPath | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = true;

  constructor(
    db: Db,
    queue: Queue<UpgradeJobData>,
    rateLimiter: SendRateLimiter,
    logger: Logger,
    options: DispatcherOptions = {},
    directPath?: DirectSendPath,
  ) {
    this.db = db;
    this.queue = queue;
    this.rateLimiter = rateLimiter;
    this.logger = logger;
    this.options = { intervalMs: 250, perTaskPerRound: 2_000, maxBacklog: 5_000, ...options };
    this.directPath = directPath;
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
      .then((pace) => {
        this.running = undefined;
        if (this.stopped) return;
        if (pace === 'busy' || this.again) {
          this.again = false;
          setImmediate(() => this.poke());
        } else {
          this.timer = setTimeout(() => this.poke(), pace === 'held_back' ? HELD_BACK_RETRY_MS : this.options.intervalMs);
        }
      });
  }

  /**
   * One pass over the dispatchable tasks: 'busy' if a task had more than one round's share,
   * 'held_back' if one waited only for this process to catch up, else 'idle'.
   */
  async round(): Promise<RoundPace> {
    const tasks = await findDispatchableTasks(this.db);
    let pace: RoundPace = 'idle';
    for (const task of tasks) {
      const { claimed, heldBack } = await this.dispatchTask(task);
      if (claimed >= Math.min(this.options.perTaskPerRound, this.directPath?.perRound ?? Infinity)) pace = 'busy';
      else if (heldBack && pace === 'idle') pace = 'held_back';
    }
    return pace;
  }

  private async dispatchTask(task: DispatchableTask): Promise<{ claimed: number; heldBack: boolean }> {
    const { maxInFlight, maxPerMinute } = task.rollout ?? {};
    // a rate-limited task's sends take their slots one by one in the jobs; the others go directly
    const direct = maxPerMinute ? undefined : this.directPath;
    const behind = direct ? await direct.backlog() : 0;
    let heldBack = false;
    const budget = async ({ processing, queuedUnsent }: InFlight) => {
      const share = direct?.perRound ?? this.options.perTaskPerRound;
      let allowed = Math.min(share, this.options.maxBacklog - queuedUnsent - behind);
      heldBack = behind > 0 && allowed < share;
      if (maxInFlight) allowed = Math.min(allowed, maxInFlight - processing - queuedUnsent);
      if (maxPerMinute && allowed > 0) {
        allowed = Math.min(allowed, (await this.rateLimiter.available(task.id, maxPerMinute)) - queuedUnsent);
      }
      return allowed;
    };
    if (direct) {
      const sent = await direct.sends.dispatch(task.id, budget);
      if (sent > 0) this.logger.debug({ taskId: task.id, sent }, 'dispatched');
      return { claimed: sent, heldBack };
    }
    const claimed = await claimRecordsForDispatch(this.db, task.id, budget);
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
    return { claimed: claimed.length, heldBack };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }
}
