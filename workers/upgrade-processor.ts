// The BullMQ processor of an upgrade job: one step per run, decided by planJob from the record in
// Postgres. Sending is a short step; waiting for the device is a parked (delayed) job, so a device
// that takes hours costs no worker slot. Device messages wake the job when the record changes.
import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import type { Logger } from 'pino';
import { planJob } from '../core/job-plan.ts';
import { parseUpgradeJobId, type UpgradeJobData } from '../core/jobs.ts';
import { nextWakeAt, type RecordInput } from '../core/record-machine.ts';
import type { UpgradeState } from '../db/queries/upgrade-state.ts';
import type { RecordStore } from './record-store.ts';
import type { SendRateLimiter } from './send-rate-limiter.ts';
import type { UpgradeSender } from './upgrade-sender.ts';
import { isTransientDbError } from '../db/transient-errors.ts';
import { nextWindowAt, windowOpenAt } from '../core/maintenance-windows.ts';
import { currentRate } from '../core/waves.ts';

/** Steps one run may take before it parks (a send, then its immediate failure, then a retry…). */
const MAX_STEPS = 8;
// BullMQ only needs to recognise the error; one instance spares a stack trace for every park
const PARKED = new DelayedError();
const DATABASE_RETRY_MS = 3_000;
/** A send held outside its task's windows looks again after this at the latest: the windows may change. */
const WINDOW_RECHECK_MS = 60_000;

// only the members a step uses, so unit tests can hand in fakes
export interface UpgradeProcessorDeps {
  store: Pick<RecordStore, 'load'>;
  sender: Pick<UpgradeSender, 'apply' | 'send'>;
  rateLimiter: Pick<SendRateLimiter, 'acquire'>;
  logger: Pick<Logger, 'warn'>;
  /** The clock maintenance windows are read by; Date.now unless a test moves it. */
  clock?: () => number;
  /** A send held outside its windows looks again at least this often (a test's clock may jump). */
  windowRecheckMs?: number;
}

export type UpgradeJobResult = { state: string; attempts: number } | { dropped: string };

export function createUpgradeProcessor(deps: UpgradeProcessorDeps) {
  const { store, sender, logger } = deps;
  const clock = deps.clock ?? Date.now;
  const windowRecheckMs = deps.windowRecheckMs ?? WINDOW_RECHECK_MS;
  const applyInput = (state: UpgradeState, input: RecordInput) => sender.apply(state, input);

  async function processUpgrade(job: Job<UpgradeJobData>, token?: string): Promise<UpgradeJobResult> {
    try {
      return await step(job, token);
    } catch (error) {
      if (!isTransientDbError(error)) throw error;
      // the database is away (restarting, unreachable): the record is unchanged, look again soon
      logger.warn({ jobId: job.id, err: (error as Error).message }, 'database unavailable; job parked');
      return park(job, token, Date.now() + DATABASE_RETRY_MS);
    }
  }

  async function step(job: Job<UpgradeJobData>, token?: string): Promise<UpgradeJobResult> {
    const jobDispatches = parseUpgradeJobId(job.id ?? '')?.dispatches ?? -1;
    for (let step = 0; step < MAX_STEPS; step += 1) {
      const state = await store.load(job.data.recordId);
      if (!state) {
        job.opts.removeOnComplete = true;
        return { dropped: 'record no longer exists' };
      }
      const now = Date.now();
      const plan = planJob({
        record: state.snapshot,
        mode: state.policy.mode,
        taskState: state.taskState,
        recordDispatches: state.snapshot.dispatches,
        jobDispatches,
        now,
      });
      switch (plan.kind) {
        case 'complete':
          return { state: 'success', attempts: state.snapshot.attempts };
        case 'fail':
          throw new UnrecoverableError(plan.reason);
        case 'drop':
          // a canceled record leaves no job behind (docs/states-and-rules.md#tasks, cancel); BullMQ reads this option
          // from the job object when it moves the job to completed
          job.opts.removeOnComplete = true;
          return { dropped: plan.reason };
        case 'hold':
          await applyInput(state, { type: 'unqueue', now });
          job.opts.removeOnComplete = true;
          return { dropped: `task ${state.taskState}: back to the dispatcher` };
        case 'abandon':
          await applyInput(state, { type: 'cancel', now, message: plan.reason });
          continue;
        case 'deadline':
          await applyInput(state, { type: 'deadline', now });
          continue;
        case 'send': {
          const closedFor = windowClosedFor(state, clock());
          if (closedFor !== null) return park(job, token, now + Math.min(closedFor, windowRecheckMs));
          const rate = currentRate(state.rollout, state.taskSuccess);
          const waitMs = await deps.rateLimiter.acquire(state.taskId, rate, `${state.id}-${state.snapshot.attempts}`);
          if (waitMs > 0) return park(job, token, now + waitMs);
          const sent = await sender.send(state);
          // just sent: the record is as written, no need to read it again to know when to wake
          const wakeAt = sent.kind === 'sent' ? nextWakeAt(sent.state.snapshot) : null;
          if (wakeAt !== null) return park(job, token, wakeAt);
          continue;
        }
        case 'wait':
          return park(job, token, plan.until);
      }
    }
    // the record kept changing under us; look again shortly
    return park(job, token, Date.now() + 1_000);
  }

  return processUpgrade;
}

/**
 * How long until the record's task may send again (docs/strategies.md#windows): null inside a
 * window (or with none), else the time to the next window.
 */
function windowClosedFor(state: UpgradeState, at: number): number | null {
  if (!state.windows || windowOpenAt(state.windows, new Date(at))) return null;
  const next = nextWindowAt(state.windows, new Date(at));
  return next === null ? WINDOW_RECHECK_MS : Math.max(next.getTime() - at, 1);
}

async function park(job: Job, token: string | undefined, until: number): Promise<never> {
  await job.moveToDelayed(Math.max(until, Date.now() + 1), token);
  throw PARKED;
}
