// The dispatcher hands waiting records of running push tasks to the upgrade queue, as their
// rollout limits allow: no more in flight than maxInFlight, no more queued than the rate window
// has room for, and a bounded share per task per round so one big task never starves another.
// First attempts of tasks without a rate limit are sent right here (DirectSends), as fast as this
// process keeps up with the answers; the rest become jobs for the workers.
// Every worker process runs one; they take turns per task through an advisory lock.
import type { UpgradeQueues } from '../services/upgrade-queues.ts';
import type { Logger } from 'pino';
import type { Db } from '../db/connection.ts';
import {
  claimRecordsForDispatch,
  findDispatchableTasks,
  type ClaimedRecord,
  type DispatchableTask,
  type InFlight,
} from '../db/queries/dispatch.ts';
import { upgradeJob } from '../core/jobs.ts';
import type { SendRateLimiter } from './send-rate-limiter.ts';
import type { DirectSends } from './direct-sends.ts';
import { RoundLoop } from '../core/round-loop.ts';
import { windowOpenAt } from '../core/maintenance-windows.ts';
import { currentRate } from '../core/waves.ts';

export interface DispatcherOptions {
  intervalMs?: number;
  /** Records one task may have queued per round. */
  perTaskPerRound?: number;
  /** Records of one task queued but not yet sent, at most: no point queueing far ahead of the workers. */
  maxBacklog?: number;
  /** A number in [0, 1) that spreads the idle pause over 0.5–1.5 × intervalMs; Math.random unless a test fixes it. */
  jitter?: () => number;
  /** The clock maintenance windows are read by (docs/strategies.md#windows); Date.now unless a test moves it. */
  clock?: () => number;
}

/** What the dispatcher reads and claims; dispatchStore(db) in production, a fake in unit tests. */
export interface DispatchStore {
  /** Running push tasks with records waiting to be handed to the queue, oldest task first. */
  findDispatchableTasks(): Promise<DispatchableTask[]>;
  /** Claims (marks queued) as many of the task's dispatchable records as `budget` allows. */
  claim(taskId: string, budget: (inFlight: InFlight) => Promise<number>): Promise<ClaimedRecord[]>;
}

export function dispatchStore(db: Db): DispatchStore {
  return {
    findDispatchableTasks: () => findDispatchableTasks(db),
    claim: (taskId, budget) => claimRecordsForDispatch(db, taskId, budget),
  };
}

/** The dispatcher's fast path: first attempts sent by the dispatcher itself (see DirectSends). */
export interface DirectSendPath {
  /** Claims and sends first attempts. */
  sends: Pick<DirectSends, 'dispatch'>;
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
  private readonly store: DispatchStore;
  private readonly queue: Pick<UpgradeQueues, 'addBulk'>;
  private readonly rateLimiter: Pick<SendRateLimiter, 'available'>;
  private readonly logger: Pick<Logger, 'warn' | 'debug'>;
  private readonly options: Required<DispatcherOptions>;
  private readonly directPath: DirectSendPath | undefined;
  private readonly loop: RoundLoop;

  constructor(
    store: DispatchStore,
    queue: Pick<UpgradeQueues, 'addBulk'>,
    rateLimiter: Pick<SendRateLimiter, 'available'>,
    logger: Pick<Logger, 'warn' | 'debug'>,
    options: DispatcherOptions = {},
    directPath?: DirectSendPath,
  ) {
    this.store = store;
    this.queue = queue;
    this.rateLimiter = rateLimiter;
    this.logger = logger;
    this.options = { intervalMs: 250, perTaskPerRound: 2_000, maxBacklog: 5_000, ...options, jitter: options.jitter ?? Math.random, clock: options.clock ?? Date.now };
    this.directPath = directPath;
    this.loop = new RoundLoop(
      async () => {
        const pace = await this.round();
        return pace === 'busy' ? 'now' : pace === 'held_back' ? HELD_BACK_RETRY_MS : this.idlePause();
      },
      (err) => {
        this.logger.warn({ err }, 'dispatch round failed');
        return this.options.intervalMs;
      },
    );
  }

  /**
   * The pause after an idle round, jittered ±50 %: with a fixed one, the dispatchers of several
   * processes keep their phase, and the one polling just after the other takes nearly every slot
   * freed under maxInFlight (measured: 80 to 0 between two workers).
   */
  private idlePause(): number {
    return Math.round(this.options.intervalMs * (0.5 + this.options.jitter()));
  }

  start(): void {
    this.loop.start();
  }

  /** Runs a round now (after the current one), e.g. when a task was pushed or resumed. */
  poke(): void {
    this.loop.poke();
  }

  /**
   * One pass over the dispatchable tasks: 'busy' if a task had more than one round's share,
   * 'held_back' if one waited only for this process to catch up, else 'idle'.
   */
  async round(): Promise<RoundPace> {
    const tasks = await this.store.findDispatchableTasks();
    let pace: RoundPace = 'idle';
    for (const task of tasks) {
      const { claimed, heldBack } = await this.dispatchTask(task);
      if (claimed >= Math.min(this.options.perTaskPerRound, this.directPath?.perRound ?? Infinity)) pace = 'busy';
      else if (heldBack && pace === 'idle') pace = 'held_back';
    }
    return pace;
  }

  private async dispatchTask(task: DispatchableTask): Promise<{ claimed: number; heldBack: boolean }> {
    // outside its maintenance windows a task sends nothing (its in-flight upgrades go on)
    if (task.windows && !windowOpenAt(task.windows, new Date(this.options.clock()))) return { claimed: 0, heldBack: false };
    const { maxInFlight } = task.rollout ?? {};
    const maxPerMinute = currentRate(task.rollout ?? {}, task.success);
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
    const claimed = await this.store.claim(task.id, budget);
    for (let i = 0; i < claimed.length; i += ADD_CHUNK) {
      await this.queue.addBulk(
        claimed.slice(i, i + ADD_CHUNK).map((record) => upgradeJob({ ...record, taskId: task.id })),
      );
    }
    if (claimed.length > 0) this.logger.debug({ taskId: task.id, queued: claimed.length }, 'dispatched');
    return { claimed: claimed.length, heldBack };
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }
}
