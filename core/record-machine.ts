// The upgrade record state machine (docs/states-and-rules.md#upgrade-records) as one pure function: a record's state and an
// input (a send, a device message, a deadline, a cancel, an operator's push or retry, the
// dispatcher's claim) give the record's next state, the events to append to its timeline, and what
// the job that follows it must do. No I/O: every record change in Otter is computed here and
// written by one guarded update (db/queries/record-changes.ts), so a repeated or racing input
// changes nothing twice.

export type RecordState = 'waiting' | 'processing' | 'success' | 'failed' | 'canceled';
export type EventType =
  | 'released'
  | 'queued'
  | 'sent'
  | 'acknowledged'
  | 'pulled'
  /** the device's first download of the attempt's file (written by the download route, not by this machine) */
  | 'downloaded'
  | 'progress'
  | 'success'
  | 'failed'
  | 'timeout'
  | 'retry'
  | 'canceled'
  | 'ignored';
export type FailureReason = 'timeout' | 'send_error' | 'device_failure' | 'rejected';

export interface RetryPolicy {
  maxAttempts: number;
  backoffSeconds: number;
  on: FailureReason[];
}

export interface UpgradePolicy {
  mode: 'push' | 'pull';
  timeoutSeconds: number;
  responseTimeoutSeconds: number | null;
  retry: RetryPolicy;
}

/** The part of a record the rules read and write. Times are epoch milliseconds. */
export interface RecordSnapshot {
  state: RecordState;
  targetVersion: string;
  attempts: number;
  progress: number;
  errorReason: string | null;
  messageId: string | null;
  startedAt: number | null;
  attemptStartedAt: number | null;
  deadlineAt: number | null;
  responseDeadlineAt: number | null;
  retryAt: number | null;
  lastMessageAt: number | null;
  completedAt: number | null;
  /** While waiting: an operator asked for it to be pushed (docs/states-and-rules.md#push). */
  pushRequested: boolean;
  /** While waiting: when the dispatcher handed it to the queue (it has a job), else null. */
  queuedAt: number | null;
  /** How many jobs the record has been given; the current job's id carries it (core/jobs.ts). */
  dispatches: number;
}

export type RecordInput =
  /**
   * `pulled`: the device asked for it (a pull reply carries the upgrade), whatever the task's mode.
   * `newJob`: the send starts a job of its own (a pull reply, or the dispatcher's direct send).
   */
  | { type: 'send'; now: number; messageId: string; pulled?: boolean; newJob?: boolean }
  | { type: 'ack'; now: number; messageId: string }
  | { type: 'reject'; now: number; messageId: string; message: string | undefined }
  | {
      type: 'progress';
      now: number;
      version: string;
      progress: number;
      complete: boolean;
      success: boolean;
      errorReason: string | undefined;
    }
  | { type: 'report'; now: number; version: string }
  | { type: 'deadline'; now: number }
  | { type: 'send_error'; now: number; detail: string }
  | { type: 'cancel'; now: number; message?: string }
  /** An operator asks for a waiting record to be pushed (the task's Push, or release with push). */
  | { type: 'request_push'; now: number }
  /** The dispatcher hands a pushed, waiting record to the queue: it gets a job. */
  | { type: 'queue'; now: number }
  /** A queued record whose task stopped sending (paused) goes back to the dispatcher. */
  | { type: 'unqueue'; now: number }
  /** An operator's retry: a final record starts over, attempts reset (docs/states-and-rules.md#retry). */
  | { type: 'reopen'; now: number; push: boolean };

export interface TimelineEvent {
  type: EventType;
  attempt: number;
  progress?: number;
  message?: string;
}

export interface Transition {
  /** False when the input changed nothing (the record is untouched, perhaps one `ignored` event). */
  changed: boolean;
  record: RecordSnapshot;
  events: TimelineEvent[];
  /** The job following this record must run now (the record became final or a retry is due). */
  wakeJob: boolean;
}

/** A record no attempt has touched: how a release creates it, and what an operator's retry returns it to. */
const NOT_STARTED = {
  state: 'waiting',
  attempts: 0,
  progress: 0,
  errorReason: null,
  messageId: null,
  startedAt: null,
  attemptStartedAt: null,
  deadlineAt: null,
  responseDeadlineAt: null,
  retryAt: null,
  lastMessageAt: null,
  completedAt: null,
  pushRequested: false,
  queuedAt: null,
} as const satisfies Omit<RecordSnapshot, 'targetVersion' | 'dispatches'>;

/** A newly released record of `targetVersion` (not yet pushed, never given a job). */
export function newRecord(targetVersion: string): RecordSnapshot {
  return { ...NOT_STARTED, targetVersion, dispatches: 0 };
}

export const FINAL_STATES: readonly RecordState[] = ['success', 'failed', 'canceled'];
export const ACTIVE_STATES: readonly RecordState[] = ['waiting', 'processing'];

export function isFinal(state: RecordState): boolean {
  return FINAL_STATES.includes(state);
}

/**
 * A record the dispatcher may hand to the queue: waiting, pushed, without a job yet. The SQL side
 * selects the same records with DISPATCHABLE (db/queries/upgrade-state.ts), tested equal.
 */
export function isDispatchable(record: RecordSnapshot): boolean {
  return record.state === 'waiting' && record.pushRequested && record.queuedAt === null;
}

/** Delay before attempt `attempts + 1`: backoffSeconds × 2^(attempts−1). */
export function backoffMs(retry: RetryPolicy, attempts: number): number {
  return retry.backoffSeconds * 1000 * 2 ** Math.max(0, attempts - 1);
}

/** When the job must next look at a processing record: the retry time, or the attempt's deadline. */
export function nextWakeAt(record: RecordSnapshot): number | null {
  if (record.state !== 'processing') return null;
  if (record.retryAt !== null) return record.retryAt;
  const heardFrom = record.lastMessageAt !== null && record.attemptStartedAt !== null && record.lastMessageAt >= record.attemptStartedAt;
  if (record.responseDeadlineAt !== null && !heardFrom) {
    return Math.min(record.responseDeadlineAt, record.deadlineAt ?? record.responseDeadlineAt);
  }
  return record.deadlineAt;
}

function unchanged(record: RecordSnapshot, ignoredBecause?: string): Transition {
  const events: TimelineEvent[] = ignoredBecause
    ? [{ type: 'ignored', attempt: record.attempts, message: ignoredBecause }]
    : [];
  return { changed: false, record, events, wakeJob: false };
}

function heard(record: RecordSnapshot, now: number): RecordSnapshot {
  return { ...record, lastMessageAt: now };
}

/** An attempt ended badly: retry if the policy says so, otherwise the record fails. */
function attemptFailed(
  record: RecordSnapshot,
  policy: UpgradePolicy,
  now: number,
  reason: FailureReason,
  errorReason: string,
  leadingEvents: TimelineEvent[],
): Transition {
  const canRetry = policy.retry.on.includes(reason) && record.attempts < policy.retry.maxAttempts;
  const cleared = { deadlineAt: null, responseDeadlineAt: null, messageId: record.messageId };
  if (canRetry) {
    if (policy.mode === 'pull') {
      // a pulled upgrade is retried by the device asking again
      return {
        changed: true,
        record: { ...record, ...cleared, state: 'waiting', errorReason, retryAt: null, progress: 0 },
        events: [...leadingEvents, { type: 'retry', attempt: record.attempts, message: `${errorReason}; waiting for the device to ask again` }],
        wakeJob: true,
      };
    }
    const retryAt = now + backoffMs(policy.retry, record.attempts);
    return {
      changed: true,
      record: { ...record, ...cleared, errorReason, retryAt },
      events: [
        ...leadingEvents,
        { type: 'retry', attempt: record.attempts, message: `${errorReason}; attempt ${record.attempts + 1} at ${new Date(retryAt).toISOString()}` },
      ],
      wakeJob: true,
    };
  }
  return {
    changed: true,
    record: { ...record, ...cleared, state: 'failed', errorReason, retryAt: null, completedAt: now },
    events: [...leadingEvents, { type: 'failed', attempt: record.attempts, message: errorReason }],
    wakeJob: true,
  };
}

function succeeded(record: RecordSnapshot, now: number, message?: string): Transition {
  return {
    changed: true,
    record: {
      ...record,
      state: 'success',
      progress: 100,
      errorReason: null,
      deadlineAt: null,
      responseDeadlineAt: null,
      retryAt: null,
      lastMessageAt: now,
      completedAt: now,
    },
    events: [{ type: 'success', attempt: record.attempts, progress: 100, ...(message ? { message } : {}) }],
    wakeJob: true,
  };
}

export function transition(record: RecordSnapshot, input: RecordInput, policy: UpgradePolicy): Transition {
  const result = next(record, input, policy);
  if (!result.changed || result.record.state === 'waiting') return result;
  // only a waiting record is queued or asked to be pushed: leaving `waiting` clears both
  return { ...result, record: { ...result.record, queuedAt: null, pushRequested: false } };
}

/** Several inputs one after the other, as one transition (the dispatcher's claim and send in one write). */
export function transitionAll(record: RecordSnapshot, inputs: readonly RecordInput[], policy: UpgradePolicy): Transition {
  let result: Transition = { changed: false, record, events: [], wakeJob: false };
  for (const input of inputs) {
    const step = transition(result.record, input, policy);
    result = {
      changed: result.changed || step.changed,
      record: step.record,
      events: [...result.events, ...step.events],
      wakeJob: result.wakeJob || step.wakeJob,
    };
  }
  return result;
}

function next(record: RecordSnapshot, input: RecordInput, policy: UpgradePolicy): Transition {
  const { now } = input;

  switch (input.type) {
    case 'request_push':
      if (record.state !== 'waiting' || record.pushRequested) return unchanged(record);
      return { changed: true, record: { ...record, pushRequested: true }, events: [], wakeJob: false };
    case 'queue':
      if (!isDispatchable(record)) return unchanged(record);
      return {
        changed: true,
        record: { ...record, queuedAt: now, dispatches: record.dispatches + 1 },
        events: [{ type: 'queued', attempt: record.attempts }],
        wakeJob: false,
      };
    case 'unqueue':
      if (record.state !== 'waiting' || record.queuedAt === null) return unchanged(record);
      return { changed: true, record: { ...record, queuedAt: null }, events: [], wakeJob: false };
    case 'reopen':
      if (record.state !== 'failed' && record.state !== 'canceled') return unchanged(record);
      return {
        changed: true,
        record: { ...record, ...NOT_STARTED, pushRequested: input.push },
        events: [{ type: 'retry', attempt: 0, message: `reopened by an operator (was ${record.state})` }],
        wakeJob: false,
      };
  }

  if (input.type === 'cancel') {
    if (isFinal(record.state)) return unchanged(record);
    return {
      changed: true,
      record: { ...record, state: 'canceled', deadlineAt: null, responseDeadlineAt: null, retryAt: null, completedAt: now },
      events: [{ type: 'canceled', attempt: record.attempts, ...(input.message ? { message: input.message } : {}) }],
      wakeJob: true,
    };
  }

  if (isFinal(record.state)) {
    if (input.type === 'send' || input.type === 'deadline' || input.type === 'send_error') return unchanged(record);
    return unchanged(record, `${describeInput(input)} after the record was ${record.state}`);
  }

  switch (input.type) {
    case 'send': {
      const firstOrRetry = record.state === 'waiting' || (record.state === 'processing' && record.retryAt !== null);
      if (!firstOrRetry) return unchanged(record);
      const attempts = record.attempts + 1;
      return {
        changed: true,
        record: {
          ...record,
          state: 'processing',
          attempts,
          progress: 0,
          messageId: input.messageId,
          startedAt: record.startedAt ?? now,
          attemptStartedAt: now,
          deadlineAt: now + policy.timeoutSeconds * 1000,
          responseDeadlineAt: policy.responseTimeoutSeconds ? now + policy.responseTimeoutSeconds * 1000 : null,
          retryAt: null,
          dispatches: input.newJob ? record.dispatches + 1 : record.dispatches,
        },
        events: [{ type: input.pulled || policy.mode === 'pull' ? 'pulled' : 'sent', attempt: attempts }],
        wakeJob: false,
      };
    }
    case 'send_error': {
      if (record.state !== 'processing' || record.retryAt !== null) return unchanged(record);
      return attemptFailed(record, policy, now, 'send_error', `send_error: ${input.detail}`, []);
    }
    case 'deadline': {
      if (record.state !== 'processing' || record.retryAt !== null || record.deadlineAt === null) return unchanged(record);
      if (now >= record.deadlineAt) {
        return attemptFailed(record, policy, now, 'timeout', 'timeout', [{ type: 'timeout', attempt: record.attempts }]);
      }
      const wake = nextWakeAt(record);
      if (record.responseDeadlineAt !== null && wake === record.responseDeadlineAt && now >= record.responseDeadlineAt) {
        return attemptFailed(record, policy, now, 'timeout', 'timeout: no response', [
          { type: 'timeout', attempt: record.attempts, message: 'no response' },
        ]);
      }
      return unchanged(record);
    }
    case 'ack':
    case 'reject': {
      if (record.state !== 'processing' || record.retryAt !== null) {
        return unchanged(record, `${describeInput(input)} while the record was ${describeState(record)}`);
      }
      if (record.messageId !== null && input.messageId !== record.messageId) {
        // not about this attempt, but the device is alive: that counts for the response deadline
        return {
          changed: true,
          record: heard(record, now),
          events: [{ type: 'ignored', attempt: record.attempts, message: `${describeInput(input)} for message ${input.messageId}, not the current ${record.messageId}` }],
          wakeJob: false,
        };
      }
      if (input.type === 'ack') {
        return { changed: true, record: heard(record, now), events: [{ type: 'acknowledged', attempt: record.attempts }], wakeJob: false };
      }
      const reason = `rejected: ${input.message ?? 'no reason given'}`;
      return attemptFailed(heard(record, now), policy, now, 'rejected', reason, []);
    }
    case 'progress': {
      if (record.state !== 'processing' || record.retryAt !== null) {
        return unchanged(record, `${describeInput(input)} while the record was ${describeState(record)}`);
      }
      const current = heard(record, now);
      if (!input.success) {
        const reason = input.errorReason?.trim() || 'device reported failure';
        return attemptFailed(current, policy, now, 'device_failure', reason, []);
      }
      if (input.complete) return succeeded(current, now);
      if (input.progress <= record.progress) {
        return { changed: true, record: current, events: [{ type: 'ignored', attempt: record.attempts, progress: input.progress, message: `progress ${input.progress} is not above ${record.progress}` }], wakeJob: false };
      }
      return {
        changed: true,
        record: { ...current, progress: input.progress },
        events: [{ type: 'progress', attempt: record.attempts, progress: input.progress }],
        wakeJob: false,
      };
    }
    case 'report': {
      if (record.state !== 'processing') return unchanged(record);
      if (input.version === record.targetVersion) return succeeded(record, now, `device reported version ${input.version}`);
      if (record.retryAt !== null) return unchanged(record);
      // still on another version (e.g. rebooting mid-upgrade): alive, so no response timeout
      return { changed: true, record: heard(record, now), events: [], wakeJob: false };
    }
  }
}

function describeState(record: RecordSnapshot): string {
  return record.state === 'processing' && record.retryAt !== null ? 'waiting to retry' : record.state;
}

function describeInput(input: RecordInput): string {
  switch (input.type) {
    case 'progress':
      return input.complete ? 'final report' : !input.success ? 'failure report' : `progress ${input.progress}`;
    case 'ack':
      return 'acknowledgement';
    case 'reject':
      return 'rejection';
    default:
      return input.type;
  }
}
