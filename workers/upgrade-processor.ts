// The BullMQ processor of an upgrade job: one step per run, decided by planJob from the record in
// Postgres. Sending is a short step; waiting for the device is a parked (delayed) job, so a device
// that takes hours costs no worker slot. Device messages wake the job when the record changes.
import { randomUUID } from 'node:crypto';
import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import type { Logger } from 'pino';
import { planJob } from '../core/job-plan.ts';
import { parseUpgradeJobId, type UpgradeJobData } from '../core/jobs.ts';
import { transition, type RecordInput } from '../core/record-machine.ts';
import type { Connector } from '../protocols/connector.ts';
import type { UpgradeState } from '../db/queries/upgrade-state.ts';
import type { FirmwareOffers } from './firmware-offers.ts';
import type { RecordStore } from './record-store.ts';
import type { SendRateLimiter } from './send-rate-limiter.ts';
import { isTransientDbError } from '../db/transient-errors.ts';
import { changeOf } from '../db/queries/record-changes.ts';

/** Steps one run may take before it parks (a send, then its immediate failure, then a retry…). */
const MAX_STEPS = 8;
// BullMQ only needs to recognise the error; one instance spares a stack trace for every park
const PARKED = new DelayedError();
const DATABASE_RETRY_MS = 3_000;

export interface UpgradeProcessorDeps {
  store: RecordStore;
  connector: Connector;
  offers: FirmwareOffers;
  rateLimiter: SendRateLimiter;
  logger: Logger;
  onSent?: (state: UpgradeState) => void;
  onSendError?: (state: UpgradeState, detail: string) => void;
}

export type UpgradeJobResult = { state: string; attempts: number } | { dropped: string };

export function createUpgradeProcessor(deps: UpgradeProcessorDeps) {
  const { store, logger } = deps;

  /** Applies one input to the record; the record as written, or undefined if it moved on. */
  async function applyInput(state: UpgradeState, input: RecordInput): Promise<UpgradeState | undefined> {
    const result = transition(state.snapshot, input, state.policy);
    if (!result.changed) return state;
    const outcome = await store.apply(changeOf(state, result));
    return outcome === 'applied' ? { ...state, revision: state.revision + 1, snapshot: result.record } : undefined;
  }

  async function send(state: UpgradeState): Promise<void> {
    const now = Date.now();
    const messageId = randomUUID();
    const sent = await applyInput(state, { type: 'send', now, messageId });
    if (!sent || sent === state) return;
    try {
      const offer = await deps.offers.offer(state.firmwareId, now);
      if (!offer) throw new Error(`firmware ${state.firmwareId} no longer exists`);
      await deps.connector.send({
        messageType: 'UPGRADE_FIRMWARE',
        productId: state.productId,
        deviceId: state.deviceId,
        body: { messageId, deviceId: state.deviceId, ...offer, timestamp: now },
      });
      deps.onSent?.(sent);
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      logger.warn({ recordId: state.id, deviceId: state.deviceId, err: detail }, 'send failed');
      deps.onSendError?.(sent, detail);
      await applyInput(sent, { type: 'send_error', now: Date.now(), detail });
    }
  }

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
        recordDispatches: state.dispatches,
        jobDispatches,
        now,
      });
      switch (plan.kind) {
        case 'complete':
          return { state: 'success', attempts: state.snapshot.attempts };
        case 'fail':
          throw new UnrecoverableError(plan.reason);
        case 'drop':
          // a canceled record leaves no job behind (CONTRACT §4 cancel); BullMQ reads this option
          // from the job object when it moves the job to completed
          job.opts.removeOnComplete = true;
          return { dropped: plan.reason };
        case 'hold':
          await store.unqueue(state.id, state.revision);
          job.opts.removeOnComplete = true;
          return { dropped: `task ${state.taskState}: back to the dispatcher` };
        case 'abandon':
          await applyInput(state, { type: 'cancel', now, message: plan.reason });
          continue;
        case 'deadline':
          await applyInput(state, { type: 'deadline', now });
          continue;
        case 'send': {
          const waitMs = await deps.rateLimiter.acquire(state.taskId, state.rollout.maxPerMinute, `${state.id}-${state.snapshot.attempts}`);
          if (waitMs > 0) return park(job, token, now + waitMs);
          await send(state);
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

async function park(job: Job, token: string | undefined, until: number): Promise<never> {
  await job.moveToDelayed(Math.max(until, Date.now() + 1), token);
  throw PARKED;
}
