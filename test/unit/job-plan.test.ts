// planJob: the one step the per-record job takes next, for every branch — and the job ids it uses.
import { describe, expect, it } from 'vitest';
import { planJob, type JobPlan, type JobPlanInput, type TaskRunState } from '../../core/job-plan.ts';
import { UPGRADE_QUEUE, parseUpgradeJobId, upgradeJobId } from '../../core/jobs.ts';
import { newRecord, type RecordSnapshot } from '../../core/record-machine.ts';

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);
const TASK_STATES: TaskRunState[] = ['created', 'running', 'paused', 'completed', 'canceled', 'aborted'];

const WAITING: RecordSnapshot = newRecord('2.0.0');

/** Sent at T0: response deadline T0 + 60 s, deadline T0 + 600 s, not heard from yet. */
const PROCESSING: RecordSnapshot = {
  ...WAITING,
  state: 'processing',
  attempts: 1,
  messageId: 'm-1',
  startedAt: T0,
  attemptStartedAt: T0,
  deadlineAt: T0 + 600_000,
  responseDeadlineAt: T0 + 60_000,
};

const RETRY_WAIT: RecordSnapshot = { ...PROCESSING, errorReason: 'timeout', deadlineAt: null, responseDeadlineAt: null, retryAt: T0 + 30_000 };

function plan(record: RecordSnapshot, overrides: Partial<Omit<JobPlanInput, 'record'>> = {}): JobPlan {
  return planJob({ record, mode: 'push', taskState: 'running', recordDispatches: 1, jobDispatches: 1, now: T0 + 1_000, ...overrides });
}

describe('planJob: final records', () => {
  it.each(TASK_STATES)('a successful record completes the job (task %s, even a superseded job)', (taskState) => {
    const record = { ...PROCESSING, state: 'success' as const, progress: 100 };
    expect(plan(record, { taskState })).toEqual({ kind: 'complete' });
    expect(plan(record, { taskState, jobDispatches: 0, mode: 'pull' })).toEqual({ kind: 'complete' });
  });

  it('a failed record fails the job with its errorReason', () => {
    expect(plan({ ...PROCESSING, state: 'failed', errorReason: 'rejected: low battery' })).toEqual({ kind: 'fail', reason: 'rejected: low battery' });
    expect(plan({ ...PROCESSING, state: 'failed', errorReason: 'timeout' }, { jobDispatches: 7 })).toEqual({ kind: 'fail', reason: 'timeout' });
  });

  it('a failed record without errorReason fails with "failed"', () => {
    expect(plan({ ...PROCESSING, state: 'failed', errorReason: null })).toEqual({ kind: 'fail', reason: 'failed' });
  });

  it('a canceled record drops the job', () => {
    expect(plan({ ...WAITING, state: 'canceled' })).toEqual({ kind: 'drop', reason: 'record canceled' });
    expect(plan({ ...PROCESSING, state: 'canceled' }, { taskState: 'aborted' })).toEqual({ kind: 'drop', reason: 'record canceled' });
  });
});

describe('planJob: superseded jobs', () => {
  it.each([
    ['waiting', WAITING, 1, 2],
    ['waiting', WAITING, 3, 2],
    ['processing', PROCESSING, 1, 2],
    ['waiting for a retry', RETRY_WAIT, 2, 1],
  ] as Array<[string, RecordSnapshot, number, number]>)('a %s record whose job is not its latest dispatch drops the job', (_name, record, jobDispatches, recordDispatches) => {
    expect(plan(record, { jobDispatches, recordDispatches, now: T0 + 10_000_000 })).toEqual({ kind: 'drop', reason: 'superseded by a newer job' });
  });
});

describe('planJob: waiting records', () => {
  it('push, task running → send', () => {
    expect(plan(WAITING)).toEqual({ kind: 'send' });
  });

  it.each(TASK_STATES.filter((s) => s !== 'running'))('push, task %s → hold', (taskState) => {
    expect(plan(WAITING, { taskState })).toEqual({ kind: 'hold' });
  });

  it.each(TASK_STATES)('pull, task %s → drop: the device asks for itself', (taskState) => {
    expect(plan(WAITING, { mode: 'pull', taskState })).toEqual({ kind: 'drop', reason: 'waiting for the device to ask' });
  });
});

describe('planJob: processing, waiting for a retry', () => {
  it.each(TASK_STATES)('before retryAt → wait until retryAt (task %s)', (taskState) => {
    expect(plan(RETRY_WAIT, { taskState, now: T0 + 29_999 })).toEqual({ kind: 'wait', until: T0 + 30_000 });
  });

  it.each(['running', 'paused', 'created', 'completed'] as TaskRunState[])('due, task %s → send', (taskState) => {
    expect(plan(RETRY_WAIT, { taskState, now: T0 + 30_000 })).toEqual({ kind: 'send' });
    expect(plan(RETRY_WAIT, { taskState, now: T0 + 90_000 })).toEqual({ kind: 'send' });
  });

  it.each(['aborted', 'canceled'] as TaskRunState[])('due, task %s → abandon', (taskState) => {
    expect(plan(RETRY_WAIT, { taskState, now: T0 + 30_000 })).toEqual({ kind: 'abandon', reason: `task ${taskState}` });
  });

  it('in pull mode too: a processing record with retryAt follows the same rule', () => {
    expect(plan(RETRY_WAIT, { mode: 'pull', now: T0 + 30_000 })).toEqual({ kind: 'send' });
  });
});

describe('planJob: processing, an attempt open', () => {
  it('silent device: waits until the response deadline', () => {
    expect(plan(PROCESSING, { now: T0 + 1_000 })).toEqual({ kind: 'wait', until: T0 + 60_000 });
  });

  it('silent device at the response deadline → deadline', () => {
    expect(plan(PROCESSING, { now: T0 + 59_999 })).toEqual({ kind: 'wait', until: T0 + 60_000 });
    expect(plan(PROCESSING, { now: T0 + 60_000 })).toEqual({ kind: 'deadline' });
  });

  it('heard from during this attempt: waits until the final deadline, then deadline', () => {
    const heard = { ...PROCESSING, lastMessageAt: T0 + 5_000 };
    expect(plan(heard, { now: T0 + 60_000 })).toEqual({ kind: 'wait', until: T0 + 600_000 });
    expect(plan(heard, { now: T0 + 599_999 })).toEqual({ kind: 'wait', until: T0 + 600_000 });
    expect(plan(heard, { now: T0 + 600_000 })).toEqual({ kind: 'deadline' });
    expect(plan(heard, { now: T0 + 700_000 })).toEqual({ kind: 'deadline' });
  });

  it('no deadline at all → deadline (the machine decides)', () => {
    expect(plan({ ...PROCESSING, deadlineAt: null, responseDeadlineAt: null })).toEqual({ kind: 'deadline' });
  });

  it.each(TASK_STATES)('the task state does not matter while an attempt is open (task %s)', (taskState) => {
    expect(plan(PROCESSING, { taskState })).toEqual({ kind: 'wait', until: T0 + 60_000 });
  });
});

describe('upgrade job ids', () => {
  it('derives the id from the record and its dispatch count', () => {
    expect(UPGRADE_QUEUE).toBe('upgrades');
    expect(upgradeJobId(42, 3)).toBe('rec-42-3');
    expect(parseUpgradeJobId('rec-42-3')).toEqual({ recordId: 42, dispatches: 3 });
    expect(parseUpgradeJobId(upgradeJobId(9_007_199, 0))).toEqual({ recordId: 9_007_199, dispatches: 0 });
  });

  it('ids are valid BullMQ ids: no ":" and not all digits', () => {
    const id = upgradeJobId(123, 456);
    expect(id).not.toContain(':');
    expect(/^\d+$/.test(id)).toBe(false);
  });

  it.each(['rec-42', 'rec-42-3-1', 'rec-a-1', 'job-42-3', '42-3', ' rec-42-3', 'rec--3', ''])('refuses %j', (jobId) => {
    expect(parseUpgradeJobId(jobId)).toBeUndefined();
  });
});
