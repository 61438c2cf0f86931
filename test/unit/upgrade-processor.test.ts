// The upgrade job's step loop (workers/upgrade-processor.ts) without services: every plan of
// core/job-plan.ts as the loop carries it out — complete, fail, drop, hold, abandon, deadline,
// send, wait — its bound on steps, and what it does when the database is away. The record store
// keeps one record in memory and writes changes as the guarded write does (a change applies only
// over the revision it was computed from); the sender applies the state machine's inputs to it.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DelayedError, UnrecoverableError, type Job, type JobsOptions } from 'bullmq';
import { createUpgradeProcessor, type UpgradeProcessorDeps } from '../../workers/upgrade-processor.ts';
import { upgradeJobId, type UpgradeJobData } from '../../core/jobs.ts';
import {
  isDispatchable,
  transition,
  type RecordInput,
  type RecordSnapshot,
} from '../../core/record-machine.ts';
import { changeOf, stateAfter, type RecordChange } from '../../db/queries/record-changes.ts';
import type { UpgradeState } from '../../db/queries/upgrade-state.ts';
import type { ApplyResult } from '../../workers/record-store.ts';
import type { SendOutcome } from '../../workers/upgrade-sender.ts';
import { DatabaseUnavailableError } from '../../db/transient-errors.ts';
import { POLICY, T0, queuedRecord, sentRecord, upgradeStateOf } from '../helpers/record-fixtures.ts';

const RECORD_ID = 7;

const WAITING: RecordSnapshot = queuedRecord(5_000);

/** Sent 10 s ago, not heard from: response deadline in 50 s, deadline in 590 s. */
const PROCESSING: RecordSnapshot = sentRecord(WAITING);

function upgradeState(snapshot: Partial<RecordSnapshot>, overrides: Partial<Omit<UpgradeState, 'snapshot'>> = {}): UpgradeState {
  return upgradeStateOf({ ...WAITING, ...snapshot }, { id: RECORD_ID, ...overrides });
}

/** One record in memory; changes are written as otter_write_records writes them: over their revision only. */
class FakeRecordStore {
  state: UpgradeState | undefined;
  readonly written: RecordChange[] = [];
  loads = 0;
  /** Thrown by the next loads (a database that is away). */
  loadError: Error | undefined;

  constructor(state: UpgradeState | undefined) {
    this.state = state;
  }

  async load(recordId: number): Promise<UpgradeState | undefined> {
    this.loads += 1;
    if (this.loadError) throw this.loadError;
    return this.state?.id === recordId ? structuredClone(this.state) : undefined;
  }

  async apply(change: RecordChange): Promise<ApplyResult> {
    if (!this.state || this.state.id !== change.id || this.state.revision !== change.revision) return 'stale';
    this.state = stateAfter(this.state, change);
    this.written.push(change);
    return 'applied';
  }
}

/** The sender's contract over the fake store: inputs through the state machine; delivery as told. */
class FakeSender {
  readonly inputs: RecordInput[] = [];
  sends = 0;
  /** `ok`: delivered; `error`: the broker refused it; `stale`: the record moved on before it was marked sent. */
  delivery: 'ok' | 'error' | 'stale' = 'ok';
  private readonly store: FakeRecordStore;

  constructor(store: FakeRecordStore) {
    this.store = store;
  }

  async apply(state: UpgradeState, input: RecordInput): Promise<UpgradeState | undefined> {
    this.inputs.push(input);
    const result = transition(state.snapshot, input, state.policy);
    if (!result.changed) return state;
    const change = changeOf(state, result);
    return (await this.store.apply(change)) === 'applied' ? stateAfter(state, change) : undefined;
  }

  async send(state: UpgradeState): Promise<SendOutcome> {
    this.sends += 1;
    if (this.delivery === 'stale') return { kind: 'stale' };
    const sent = await this.apply(state, { type: 'send', now: Date.now(), messageId: `m-sent-${this.sends}` });
    if (!sent || sent === state) return { kind: 'stale' };
    if (this.delivery === 'error') {
      await this.apply(sent, { type: 'send_error', now: Date.now(), detail: 'broker unreachable' });
      return { kind: 'send_error', state: sent };
    }
    return { kind: 'sent', state: sent };
  }
}

class FakeRateLimiter {
  readonly acquired: Array<{ taskId: string; maxPerMinute: number | undefined; member: string }> = [];
  waitMs = 0;
  async acquire(taskId: string, maxPerMinute: number | undefined, member: string): Promise<number> {
    this.acquired.push({ taskId, maxPerMinute, member });
    return this.waitMs;
  }
}

/** A BullMQ job as the processor uses it: id, data, opts, and moveToDelayed (recorded). */
function fakeJob(dispatches: number, id = upgradeJobId(RECORD_ID, dispatches)) {
  const delayed: Array<{ timestamp: number; token: string | undefined }> = [];
  const opts: JobsOptions = {};
  const job = {
    id,
    data: { recordId: RECORD_ID, taskId: 'task-1', deviceId: 'dev-1' } satisfies UpgradeJobData,
    opts,
    async moveToDelayed(timestamp: number, token?: string) {
      delayed.push({ timestamp, token });
    },
  };
  return { job: job as unknown as Job<UpgradeJobData>, delayed, opts };
}

function setup(state: UpgradeState | undefined) {
  const store = new FakeRecordStore(state);
  const sender = new FakeSender(store);
  const rateLimiter = new FakeRateLimiter();
  const logger = { warn: vi.fn() };
  const deps: UpgradeProcessorDeps = { store, sender, rateLimiter, logger };
  const processUpgrade = createUpgradeProcessor(deps);
  const run = (dispatches = state?.snapshot.dispatches ?? 1) => {
    const job = fakeJob(dispatches);
    return { ...job, result: processUpgrade(job.job, 'lock-token') };
  };
  return { store, sender, rateLimiter, logger, processUpgrade, run };
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(T0);
});

afterEach(() => {
  vi.useRealTimers();
});

describe('upgrade job step: final records', () => {
  it('complete: a successful record completes the job with its attempts', async () => {
    const { run, sender, store } = setup(upgradeState({ ...PROCESSING, state: 'success', progress: 100, completedAt: T0 - 1 }));
    const { result, delayed, opts } = run();
    await expect(result).resolves.toEqual({ state: 'success', attempts: 1 });
    expect(delayed).toEqual([]);
    expect(opts.removeOnComplete).toBeUndefined();
    expect(sender.inputs).toEqual([]);
    expect(store.loads).toBe(1);
  });

  it('fail: a failed record fails the job for good (UnrecoverableError) with its reason', async () => {
    const { run, sender } = setup(upgradeState({ ...PROCESSING, state: 'failed', errorReason: 'rejected: low battery', completedAt: T0 - 1 }));
    const { result, delayed } = run();
    await expect(result).rejects.toThrow(UnrecoverableError);
    await expect(result).rejects.toThrow('rejected: low battery');
    expect(delayed).toEqual([]);
    expect(sender.inputs).toEqual([]);
  });

  it('drop: a canceled record completes the job and removes it', async () => {
    const { run, sender } = setup(upgradeState({ ...PROCESSING, state: 'canceled', completedAt: T0 - 1 }));
    const { result, opts, delayed } = run();
    await expect(result).resolves.toEqual({ dropped: 'record canceled' });
    expect(opts.removeOnComplete).toBe(true);
    expect(delayed).toEqual([]);
    expect(sender.inputs).toEqual([]);
  });
});

describe('upgrade job step: jobs with nothing to do', () => {
  it('drop: a job superseded by a newer dispatch of its record', async () => {
    const { run, sender } = setup(upgradeState({ ...PROCESSING, dispatches: 3 }));
    const { result, opts } = run(2);
    await expect(result).resolves.toEqual({ dropped: 'superseded by a newer job' });
    expect(opts.removeOnComplete).toBe(true);
    expect(sender.sends).toBe(0);
  });

  it('drop: a job whose id names no dispatch is treated as superseded', async () => {
    const { processUpgrade } = setup(upgradeState({ ...PROCESSING }));
    const job = fakeJob(1, 'hand-made-job');
    await expect(processUpgrade(job.job)).resolves.toEqual({ dropped: 'superseded by a newer job' });
    expect(job.opts.removeOnComplete).toBe(true);
  });

  it('drop: the record no longer exists', async () => {
    const { run, sender } = setup(undefined);
    const { result, opts } = run(1);
    await expect(result).resolves.toEqual({ dropped: 'record no longer exists' });
    expect(opts.removeOnComplete).toBe(true);
    expect(sender.inputs).toEqual([]);
  });

  it('drop: a waiting record of a pull task waits for its device, not for a job', async () => {
    const { run, sender } = setup(upgradeState({}, { policy: { ...POLICY, mode: 'pull' } }));
    const { result, opts } = run();
    await expect(result).resolves.toEqual({ dropped: 'waiting for the device to ask' });
    expect(opts.removeOnComplete).toBe(true);
    expect(sender.sends).toBe(0);
  });

  it('hold: a queued record of a paused task is given back to the dispatcher (unqueue)', async () => {
    const { run, sender, store, rateLimiter } = setup(upgradeState({}, { taskState: 'paused' }));
    const { result, opts, delayed } = run();
    await expect(result).resolves.toEqual({ dropped: 'task paused: back to the dispatcher' });
    expect(opts.removeOnComplete).toBe(true);
    expect(delayed).toEqual([]);
    expect(sender.inputs).toEqual([{ type: 'unqueue', now: T0 }]);
    expect(sender.sends).toBe(0);
    expect(rateLimiter.acquired).toEqual([]);
    // written over the revision it was read at; dispatchable again once the task resumes
    expect(store.written).toHaveLength(1);
    expect(store.written[0]!.revision).toBe(4);
    expect(store.state!.revision).toBe(5);
    expect(store.state!.snapshot).toEqual({ ...WAITING, queuedAt: null });
    expect(isDispatchable(store.state!.snapshot)).toBe(true);
  });

  it.each(['created', 'completed'] as const)('hold: likewise for a task %s', async (taskState) => {
    const { run, store } = setup(upgradeState({}, { taskState }));
    await expect(run().result).resolves.toEqual({ dropped: `task ${taskState}: back to the dispatcher` });
    expect(store.state!.snapshot.queuedAt).toBeNull();
  });
});

describe('upgrade job step: sending', () => {
  it('send: takes a rate slot, marks the record sent, and parks until the response deadline', async () => {
    const { run, sender, store, rateLimiter } = setup(upgradeState({}, { rollout: { maxPerMinute: 60 } }));
    const { result, delayed } = run();
    await expect(result).rejects.toBeInstanceOf(DelayedError);
    expect(rateLimiter.acquired).toEqual([{ taskId: 'task-1', maxPerMinute: 60, member: `${RECORD_ID}-0` }]);
    expect(sender.sends).toBe(1);
    expect(store.state!.snapshot).toMatchObject({ state: 'processing', attempts: 1, messageId: 'm-sent-1', queuedAt: null, dispatches: 1 });
    // parked at nextWakeAt of the record as sent: the response deadline (60 s) before the deadline (600 s)
    expect(delayed).toEqual([{ timestamp: T0 + 60_000, token: 'lock-token' }]);
    // the record is not read again after a send
    expect(store.loads).toBe(1);
  });

  it('send without a response timeout: parks until the attempt\'s deadline', async () => {
    const { run } = setup(upgradeState({}, { policy: { ...POLICY, responseTimeoutSeconds: null } }));
    const { result, delayed } = run();
    await expect(result).rejects.toBeInstanceOf(DelayedError);
    expect(delayed.map((d) => d.timestamp)).toEqual([T0 + 600_000]);
  });

  it('send, rate limited: parks for as long as the limiter says, sends nothing', async () => {
    const { run, sender, store, rateLimiter } = setup(upgradeState({}, { rollout: { maxPerMinute: 10 } }));
    rateLimiter.waitMs = 4_500;
    const before = structuredClone(store.state);
    const { result, delayed } = run();
    await expect(result).rejects.toBeInstanceOf(DelayedError);
    expect(delayed).toEqual([{ timestamp: T0 + 4_500, token: 'lock-token' }]);
    expect(sender.sends).toBe(0);
    expect(store.state).toEqual(before);
  });

  it('send, due retry: the next attempt goes out (a paused task finishes its in-flight upgrades)', async () => {
    const retrying = { ...PROCESSING, errorReason: 'timeout', deadlineAt: null, responseDeadlineAt: null, retryAt: T0 - 1 };
    const { run, store, rateLimiter } = setup(upgradeState(retrying, { taskState: 'paused' }));
    const { result, delayed } = run();
    await expect(result).rejects.toBeInstanceOf(DelayedError);
    // the slot is named by the attempt, so a rerun of the same attempt takes the same one
    expect(rateLimiter.acquired.map((a) => a.member)).toEqual([`${RECORD_ID}-1`]);
    expect(store.state!.snapshot).toMatchObject({ state: 'processing', attempts: 2, retryAt: null, attemptStartedAt: T0 });
    expect(delayed.map((d) => d.timestamp)).toEqual([T0 + 60_000]);
  });

  it('send, delivery failed: the send_error schedules a retry and the job parks until it', async () => {
    const { run, sender, store } = setup(upgradeState({}));
    sender.delivery = 'error';
    const { result, delayed } = run();
    await expect(result).rejects.toBeInstanceOf(DelayedError);
    expect(sender.inputs.map((i) => i.type)).toEqual(['send', 'send_error']);
    expect(store.state!.snapshot).toMatchObject({ state: 'processing', attempts: 1, retryAt: T0 + 30_000, errorReason: 'send_error: broker unreachable' });
    // read again after the failed send: the retry time comes from the record
    expect(store.loads).toBe(2);
    expect(delayed.map((d) => d.timestamp)).toEqual([T0 + 30_000]);
  });

  it('send, delivery failed on the last attempt: the record fails and so does the job', async () => {
    const lastTry = { ...PROCESSING, attempts: 2, errorReason: 'timeout', deadlineAt: null, responseDeadlineAt: null, retryAt: T0 - 1 };
    const { run, sender, store } = setup(upgradeState(lastTry, { policy: { ...POLICY, retry: { ...POLICY.retry, maxAttempts: 3 } } }));
    // attempt 3 of 3 is sent and its delivery fails: no attempt left
    sender.delivery = 'error';
    const { result, delayed } = run();
    await expect(result).rejects.toThrow(UnrecoverableError);
    await expect(result).rejects.toThrow('send_error: broker unreachable');
    expect(store.state!.snapshot).toMatchObject({ state: 'failed', attempts: 3 });
    expect(delayed).toEqual([]);
  });
});

describe('upgrade job step: waiting and deadlines', () => {
  it('wait: a processing record not yet due parks the job until its response deadline', async () => {
    const { run, sender, rateLimiter } = setup(upgradeState(PROCESSING));
    const { result, delayed } = run();
    await expect(result).rejects.toBeInstanceOf(DelayedError);
    expect(delayed).toEqual([{ timestamp: T0 + 50_000, token: 'lock-token' }]);
    expect(sender.inputs).toEqual([]);
    expect(rateLimiter.acquired).toEqual([]);
  });

  it('wait: heard from, the job parks until the attempt\'s deadline', async () => {
    const { run } = setup(upgradeState({ ...PROCESSING, lastMessageAt: T0 - 5_000 }));
    const { result, delayed } = run();
    await expect(result).rejects.toBeInstanceOf(DelayedError);
    expect(delayed.map((d) => d.timestamp)).toEqual([T0 + 590_000]);
  });

  it('wait: a retry not yet due parks the job until it', async () => {
    const { run, sender } = setup(upgradeState({ ...PROCESSING, deadlineAt: null, responseDeadlineAt: null, retryAt: T0 + 12_000 }, { taskState: 'canceled' }));
    const { result, delayed } = run();
    await expect(result).rejects.toBeInstanceOf(DelayedError);
    expect(delayed.map((d) => d.timestamp)).toEqual([T0 + 12_000]);
    // a stopped task's retry is abandoned only once it is due
    expect(sender.inputs).toEqual([]);
  });

  it('deadline: a passed deadline with attempts left schedules a retry, and the job parks until it', async () => {
    const { run, sender, store } = setup(upgradeState({ ...PROCESSING, lastMessageAt: T0 - 2_000, deadlineAt: T0 - 1 }));
    const { result, delayed } = run();
    await expect(result).rejects.toBeInstanceOf(DelayedError);
    expect(sender.inputs).toEqual([{ type: 'deadline', now: T0 }]);
    expect(store.state!.snapshot).toMatchObject({ state: 'processing', errorReason: 'timeout', retryAt: T0 + 30_000, deadlineAt: null });
    expect(store.written[0]!.events.map((e) => e.type)).toEqual(['timeout', 'retry']);
    expect(delayed.map((d) => d.timestamp)).toEqual([T0 + 30_000]);
  });

  it('deadline: no response in time, attempts used up: the record fails and so does the job', async () => {
    const { run, store } = setup(upgradeState({ ...PROCESSING, attempts: 3, responseDeadlineAt: T0 - 1 }));
    const { result, delayed } = run();
    await expect(result).rejects.toThrow(UnrecoverableError);
    await expect(result).rejects.toThrow('timeout: no response');
    expect(store.state!.snapshot).toMatchObject({ state: 'failed', completedAt: T0 });
    expect(delayed).toEqual([]);
  });

  it.each(['aborted', 'canceled'] as const)('abandon: a due retry of a task %s cancels the record, and the job is dropped', async (taskState) => {
    const retrying = { ...PROCESSING, errorReason: 'timeout', deadlineAt: null, responseDeadlineAt: null, retryAt: T0 - 1 };
    const { run, sender, store, rateLimiter } = setup(upgradeState(retrying, { taskState }));
    const { result, opts, delayed } = run();
    await expect(result).resolves.toEqual({ dropped: 'record canceled' });
    expect(sender.inputs).toEqual([{ type: 'cancel', now: T0, message: `task ${taskState}` }]);
    expect(store.state!.snapshot).toMatchObject({ state: 'canceled', retryAt: null, completedAt: T0 });
    expect(store.written[0]!.events).toEqual([{ type: 'canceled', attempt: 1, message: `task ${taskState}` }]);
    expect(opts.removeOnComplete).toBe(true);
    expect(delayed).toEqual([]);
    expect(rateLimiter.acquired).toEqual([]);
  });
});

describe('upgrade job step: bounds and the database', () => {
  it('a record that keeps moving on: at most 8 steps, then the job parks for a second', async () => {
    const { run, sender, store, rateLimiter } = setup(upgradeState({}));
    // every send finds the record changed under it (stale), so every step plans a send again
    sender.delivery = 'stale';
    const { result, delayed } = run();
    await expect(result).rejects.toBeInstanceOf(DelayedError);
    expect(store.loads).toBe(8);
    expect(sender.sends).toBe(8);
    expect(rateLimiter.acquired).toHaveLength(8);
    expect(delayed).toEqual([{ timestamp: T0 + 1_000, token: 'lock-token' }]);
  });

  it('a transient database error (57P01, admin shutdown) parks the job 3 s later and logs it', async () => {
    const { run, store, logger } = setup(upgradeState({}));
    store.loadError = Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' });
    const { result, delayed } = run();
    await expect(result).rejects.toBeInstanceOf(DelayedError);
    expect(delayed).toEqual([{ timestamp: T0 + 3_000, token: 'lock-token' }]);
    expect(logger.warn).toHaveBeenCalledWith(
      { jobId: upgradeJobId(RECORD_ID, 1), err: 'terminating connection due to administrator command' },
      'database unavailable; job parked',
    );
  });

  it('a connection lost mid-step (no SQLSTATE) is transient too, wherever in the step it happens', async () => {
    const { run, sender } = setup(upgradeState({}));
    sender.send = async () => {
      throw new Error('Connection terminated unexpectedly');
    };
    const { result, delayed } = run();
    await expect(result).rejects.toBeInstanceOf(DelayedError);
    expect(delayed.map((d) => d.timestamp)).toEqual([T0 + 3_000]);
  });

  it('a send that cannot read what its message needs (DatabaseUnavailableError) parks the job', async () => {
    const { run, sender, store } = setup(upgradeState({}));
    sender.send = async () => {
      throw new DatabaseUnavailableError(new Error('connect ECONNREFUSED 127.0.0.1:5432'), 15_000);
    };
    const { result, delayed } = run();
    await expect(result).rejects.toBeInstanceOf(DelayedError);
    expect(delayed.map((d) => d.timestamp)).toEqual([T0 + 3_000]);
    expect(store.written).toEqual([]);
  });

  it('any other error is rethrown as it is, and the job is not parked', async () => {
    const { run, store, logger } = setup(upgradeState({}));
    const uniqueViolation = Object.assign(new Error('duplicate key value violates unique constraint'), { code: '23505' });
    store.loadError = uniqueViolation;
    const { result, delayed } = run();
    await expect(result).rejects.toBe(uniqueViolation);
    expect(delayed).toEqual([]);
    expect(logger.warn).not.toHaveBeenCalled();
  });
});
