// The upgrade record state machine against docs/states-and-rules.md: every state × every input, then the rules
// one by one (retries and their backoff, pull mode, progress, final records, deadlines).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ACTIVE_STATES,
  FINAL_STATES,
  backoffMs,
  isDispatchable,
  isFinal,
  nextWakeAt,
  transition,
  transitionAll,
  type FailureReason,
  type RecordInput,
  type RecordSnapshot,
  type RecordState,
  type TimelineEvent,
  type UpgradePolicy,
  newRecord,
} from '../../core/record-machine.ts';

/** The attempt under test started at T0 (2026-01-01T12:00:00.000Z). */
const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);
const SECOND = 1000;
/** When device messages arrive: after the attempt started, before its response deadline. */
const NOW = T0 + 30 * SECOND;
/** After the response deadline (T0 + 60 s), before the final deadline (T0 + 600 s). */
const AFTER_RESPONSE_DEADLINE = T0 + 90 * SECOND;
const AFTER_DEADLINE = T0 + 600 * SECOND;
const TARGET = '2.0.0';

const PUSH: UpgradePolicy = {
  mode: 'push',
  timeoutSeconds: 600,
  responseTimeoutSeconds: 60,
  retry: { maxAttempts: 3, backoffSeconds: 30, on: ['timeout', 'send_error'] },
};
const PULL: UpgradePolicy = { ...PUSH, mode: 'pull' };

function policyWith(on: FailureReason[], maxAttempts = 3, mode: 'push' | 'pull' = 'push'): UpgradePolicy {
  return { ...PUSH, mode, retry: { maxAttempts, backoffSeconds: 30, on } };
}

const WAITING: RecordSnapshot = newRecord(TARGET);

/** Sent at T0, heard from at T0 + 10 s, at 40 %. */
const PROCESSING: RecordSnapshot = {
  ...WAITING,
  state: 'processing',
  attempts: 1,
  progress: 40,
  messageId: 'm-1',
  startedAt: T0,
  attemptStartedAt: T0,
  deadlineAt: T0 + 600 * SECOND,
  responseDeadlineAt: T0 + 60 * SECOND,
  lastMessageAt: T0 + 10 * SECOND,
};

/** Sent at T0, nothing heard from the device since. */
const SILENT: RecordSnapshot = { ...PROCESSING, progress: 0, lastMessageAt: null };

/** Attempt 1 timed out; attempt 2 is due at T0 + 630 s. */
const RETRY_WAIT: RecordSnapshot = {
  ...PROCESSING,
  errorReason: 'timeout',
  deadlineAt: null,
  responseDeadlineAt: null,
  retryAt: T0 + 630 * SECOND,
};

const SUCCESS: RecordSnapshot = {
  ...PROCESSING,
  state: 'success',
  progress: 100,
  deadlineAt: null,
  responseDeadlineAt: null,
  completedAt: T0 + 20 * SECOND,
};

const FAILED: RecordSnapshot = {
  ...PROCESSING,
  state: 'failed',
  attempts: 3,
  errorReason: 'timeout',
  deadlineAt: null,
  responseDeadlineAt: null,
  completedAt: T0 + 20 * SECOND,
};

const CANCELED: RecordSnapshot = { ...WAITING, state: 'canceled', completedAt: T0 + 20 * SECOND };

const FIXTURES = {
  waiting: WAITING,
  processing: PROCESSING,
  silent: SILENT,
  retryWait: RETRY_WAIT,
  success: SUCCESS,
  failed: FAILED,
  canceled: CANCELED,
} satisfies Record<string, RecordSnapshot>;
type FixtureName = keyof typeof FIXTURES;

const INPUTS = {
  send: { type: 'send', now: NOW, messageId: 'm-2' },
  ack: { type: 'ack', now: NOW, messageId: 'm-1' },
  reject: { type: 'reject', now: NOW, messageId: 'm-1', message: 'low battery' },
  progressRaise: { type: 'progress', now: NOW, version: TARGET, progress: 60, complete: false, success: true, errorReason: undefined },
  progressNotAbove: { type: 'progress', now: NOW, version: TARGET, progress: 30, complete: false, success: true, errorReason: undefined },
  progressComplete: { type: 'progress', now: NOW, version: TARGET, progress: 100, complete: true, success: true, errorReason: undefined },
  progressFailure: { type: 'progress', now: NOW, version: TARGET, progress: 70, complete: false, success: false, errorReason: 'flash write error' },
  reportTarget: { type: 'report', now: NOW, version: TARGET },
  reportOther: { type: 'report', now: NOW, version: '1.0.0' },
  deadlineEarly: { type: 'deadline', now: NOW },
  deadlineNoResponse: { type: 'deadline', now: AFTER_RESPONSE_DEADLINE },
  deadlineLate: { type: 'deadline', now: AFTER_DEADLINE },
  sendError: { type: 'send_error', now: NOW, detail: 'broker unreachable' },
  cancel: { type: 'cancel', now: NOW },
} satisfies Record<string, RecordInput>;
type InputName = keyof typeof INPUTS;

interface Expected {
  state: RecordState;
  changed: boolean;
  wakeJob: boolean;
  events: TimelineEvent[];
  /** What differs from the fixture besides `state`. */
  patch?: Partial<RecordSnapshot>;
}

const same = (): Expected => ({ state: 'waiting', changed: false, wakeJob: false, events: [] });
const ignored = (message: string, attempt: number): Pick<Expected, 'changed' | 'wakeJob' | 'events'> => ({
  changed: false,
  wakeJob: false,
  events: [{ type: 'ignored', attempt, message }],
});

const SENT_AT_NOW = {
  messageId: 'm-2',
  attemptStartedAt: NOW,
  deadlineAt: NOW + 600 * SECOND,
  responseDeadlineAt: NOW + 60 * SECOND,
  retryAt: null,
  progress: 0,
};
const CANCELED_AT_NOW = { deadlineAt: null, responseDeadlineAt: null, retryAt: null, completedAt: NOW };
const SUCCEEDED_AT_NOW = {
  progress: 100,
  errorReason: null,
  deadlineAt: null,
  responseDeadlineAt: null,
  retryAt: null,
  lastMessageAt: NOW,
  completedAt: NOW,
};
const ENDED = { deadlineAt: null, responseDeadlineAt: null };

type Row = [FixtureName, InputName, Expected];

const waitingRows: Row[] = [
  ['waiting', 'send', { state: 'processing', changed: true, wakeJob: false, events: [{ type: 'sent', attempt: 1 }], patch: { ...SENT_AT_NOW, attempts: 1, startedAt: NOW } }],
  ['waiting', 'ack', { state: 'waiting', ...ignored('acknowledgement while the record was waiting', 0) }],
  ['waiting', 'reject', { state: 'waiting', ...ignored('rejection while the record was waiting', 0) }],
  ['waiting', 'progressRaise', { state: 'waiting', ...ignored('progress 60 while the record was waiting', 0) }],
  ['waiting', 'progressNotAbove', { state: 'waiting', ...ignored('progress 30 while the record was waiting', 0) }],
  ['waiting', 'progressComplete', { state: 'waiting', ...ignored('final report while the record was waiting', 0) }],
  ['waiting', 'progressFailure', { state: 'waiting', ...ignored('failure report while the record was waiting', 0) }],
  ['waiting', 'reportTarget', same()],
  ['waiting', 'reportOther', same()],
  ['waiting', 'deadlineEarly', same()],
  ['waiting', 'deadlineNoResponse', same()],
  ['waiting', 'deadlineLate', same()],
  ['waiting', 'sendError', same()],
  ['waiting', 'cancel', { state: 'canceled', changed: true, wakeJob: true, events: [{ type: 'canceled', attempt: 0 }], patch: CANCELED_AT_NOW }],
];

const unchangedProcessing: Expected = { state: 'processing', changed: false, wakeJob: false, events: [] };
const processingRows: Row[] = [
  ['processing', 'send', unchangedProcessing],
  ['processing', 'ack', { state: 'processing', changed: true, wakeJob: false, events: [{ type: 'acknowledged', attempt: 1 }], patch: { lastMessageAt: NOW } }],
  [
    'processing',
    'reject',
    {
      state: 'failed',
      changed: true,
      wakeJob: true,
      events: [{ type: 'failed', attempt: 1, message: 'rejected: low battery' }],
      patch: { ...ENDED, errorReason: 'rejected: low battery', retryAt: null, completedAt: NOW, lastMessageAt: NOW },
    },
  ],
  ['processing', 'progressRaise', { state: 'processing', changed: true, wakeJob: false, events: [{ type: 'progress', attempt: 1, progress: 60 }], patch: { progress: 60, lastMessageAt: NOW } }],
  [
    'processing',
    'progressNotAbove',
    {
      state: 'processing',
      changed: true,
      wakeJob: false,
      events: [{ type: 'ignored', attempt: 1, progress: 30, message: 'progress 30 is not above 40' }],
      patch: { lastMessageAt: NOW },
    },
  ],
  ['processing', 'progressComplete', { state: 'success', changed: true, wakeJob: true, events: [{ type: 'success', attempt: 1, progress: 100 }], patch: SUCCEEDED_AT_NOW }],
  [
    'processing',
    'progressFailure',
    {
      state: 'failed',
      changed: true,
      wakeJob: true,
      events: [{ type: 'failed', attempt: 1, message: 'flash write error' }],
      patch: { ...ENDED, errorReason: 'flash write error', retryAt: null, completedAt: NOW, lastMessageAt: NOW },
    },
  ],
  [
    'processing',
    'reportTarget',
    {
      state: 'success',
      changed: true,
      wakeJob: true,
      events: [{ type: 'success', attempt: 1, progress: 100, message: 'device reported version 2.0.0' }],
      patch: SUCCEEDED_AT_NOW,
    },
  ],
  // a report of another version: the device is alive, nothing else changes
  ['processing', 'reportOther', { state: 'processing', changed: true, wakeJob: false, events: [], patch: { lastMessageAt: NOW } }],
  ['processing', 'deadlineEarly', unchangedProcessing],
  // heard from at T0 + 10 s: the response deadline no longer applies
  ['processing', 'deadlineNoResponse', unchangedProcessing],
  [
    'processing',
    'deadlineLate',
    {
      state: 'processing',
      changed: true,
      wakeJob: true,
      events: [
        { type: 'timeout', attempt: 1 },
        { type: 'retry', attempt: 1, message: 'timeout; attempt 2 at 2026-01-01T12:10:30.000Z' },
      ],
      patch: { ...ENDED, errorReason: 'timeout', retryAt: AFTER_DEADLINE + 30 * SECOND },
    },
  ],
  [
    'processing',
    'sendError',
    {
      state: 'processing',
      changed: true,
      wakeJob: true,
      events: [{ type: 'retry', attempt: 1, message: 'send_error: broker unreachable; attempt 2 at 2026-01-01T12:01:00.000Z' }],
      patch: { ...ENDED, errorReason: 'send_error: broker unreachable', retryAt: NOW + 30 * SECOND },
    },
  ],
  ['processing', 'cancel', { state: 'canceled', changed: true, wakeJob: true, events: [{ type: 'canceled', attempt: 1 }], patch: CANCELED_AT_NOW }],
];

const silentRows: Row[] = [
  ['silent', 'deadlineEarly', unchangedProcessing],
  [
    'silent',
    'deadlineNoResponse',
    {
      state: 'processing',
      changed: true,
      wakeJob: true,
      events: [
        { type: 'timeout', attempt: 1, message: 'no response' },
        { type: 'retry', attempt: 1, message: 'timeout: no response; attempt 2 at 2026-01-01T12:02:00.000Z' },
      ],
      patch: { ...ENDED, errorReason: 'timeout: no response', retryAt: AFTER_RESPONSE_DEADLINE + 30 * SECOND },
    },
  ],
  [
    'silent',
    'deadlineLate',
    {
      state: 'processing',
      changed: true,
      wakeJob: true,
      events: [
        { type: 'timeout', attempt: 1 },
        { type: 'retry', attempt: 1, message: 'timeout; attempt 2 at 2026-01-01T12:10:30.000Z' },
      ],
      patch: { ...ENDED, errorReason: 'timeout', retryAt: AFTER_DEADLINE + 30 * SECOND },
    },
  ],
  // the first message of the attempt: progress 0 → 60, and the device now counts as heard from
  ['silent', 'progressRaise', { state: 'processing', changed: true, wakeJob: false, events: [{ type: 'progress', attempt: 1, progress: 60 }], patch: { progress: 60, lastMessageAt: NOW } }],
];

const unchangedRetryWait: Expected = { state: 'processing', changed: false, wakeJob: false, events: [] };
const retryWaitIgnored = (what: string): Expected => ({ state: 'processing', ...ignored(`${what} while the record was waiting to retry`, 1) });
const retryWaitRows: Row[] = [
  // errorReason of the failed attempt stays until the record ends
  ['retryWait', 'send', { state: 'processing', changed: true, wakeJob: false, events: [{ type: 'sent', attempt: 2 }], patch: { ...SENT_AT_NOW, attempts: 2 } }],
  ['retryWait', 'ack', retryWaitIgnored('acknowledgement')],
  ['retryWait', 'reject', retryWaitIgnored('rejection')],
  ['retryWait', 'progressRaise', retryWaitIgnored('progress 60')],
  ['retryWait', 'progressNotAbove', retryWaitIgnored('progress 30')],
  ['retryWait', 'progressComplete', retryWaitIgnored('final report')],
  ['retryWait', 'progressFailure', retryWaitIgnored('failure report')],
  [
    'retryWait',
    'reportTarget',
    {
      state: 'success',
      changed: true,
      wakeJob: true,
      events: [{ type: 'success', attempt: 1, progress: 100, message: 'device reported version 2.0.0' }],
      patch: SUCCEEDED_AT_NOW,
    },
  ],
  ['retryWait', 'reportOther', unchangedRetryWait],
  ['retryWait', 'deadlineEarly', unchangedRetryWait],
  ['retryWait', 'deadlineNoResponse', unchangedRetryWait],
  ['retryWait', 'deadlineLate', unchangedRetryWait],
  ['retryWait', 'sendError', unchangedRetryWait],
  ['retryWait', 'cancel', { state: 'canceled', changed: true, wakeJob: true, events: [{ type: 'canceled', attempt: 1 }], patch: CANCELED_AT_NOW }],
];

const MESSAGE_DESCRIPTIONS: Partial<Record<InputName, string>> = {
  ack: 'acknowledgement',
  reject: 'rejection',
  progressRaise: 'progress 60',
  progressNotAbove: 'progress 30',
  progressComplete: 'final report',
  progressFailure: 'failure report',
  reportTarget: 'report',
  reportOther: 'report',
};

function finalRows(name: 'success' | 'failed' | 'canceled'): Row[] {
  const fixture = FIXTURES[name];
  return (Object.keys(INPUTS) as InputName[]).map((input): Row => {
    const description = MESSAGE_DESCRIPTIONS[input];
    const expected: Expected = description
      ? { state: name, ...ignored(`${description} after the record was ${name}`, fixture.attempts) }
      : { state: name, changed: false, wakeJob: false, events: [] };
    return [name, input, expected];
  });
}

const TABLE: Row[] = [
  ...waitingRows,
  ...processingRows,
  ...silentRows,
  ...retryWaitRows,
  ...finalRows('success'),
  ...finalRows('failed'),
  ...finalRows('canceled'),
];

describe('transition: every state × every input (push policy, retry on timeout and send_error)', () => {
  it('covers every input for every state but the silent variant', () => {
    const inputs = Object.keys(INPUTS).sort();
    for (const state of ['waiting', 'processing', 'retryWait', 'success', 'failed', 'canceled'] as const) {
      expect(TABLE.filter(([s]) => s === state).map(([, input]) => input).sort()).toEqual(inputs);
    }
  });

  it.each(TABLE)('%s + %s', (fixtureName, inputName, expected) => {
    const fixture = FIXTURES[fixtureName];
    const result = transition(fixture, INPUTS[inputName], PUSH);
    expect(result.record).toEqual({ ...fixture, ...expected.patch, state: expected.state });
    expect(result.events).toEqual(expected.events);
    expect(result.wakeJob).toBe(expected.wakeJob);
    expect(result.changed).toBe(expected.changed);
    if (!expected.changed) expect(result.record).toBe(fixture);
  });
});

describe('retry decisions (docs/states-and-rules.md)', () => {
  const failures: Array<[FailureReason, RecordInput, string]> = [
    ['timeout', { type: 'deadline', now: AFTER_DEADLINE }, 'timeout'],
    ['send_error', { type: 'send_error', now: AFTER_DEADLINE, detail: 'ECONNREFUSED' }, 'send_error: ECONNREFUSED'],
    ['device_failure', { type: 'progress', now: AFTER_DEADLINE - 1, version: TARGET, progress: 50, complete: false, success: false, errorReason: 'checksum mismatch' }, 'checksum mismatch'],
    ['rejected', { type: 'reject', now: AFTER_DEADLINE - 1, messageId: 'm-1', message: 'busy' }, 'rejected: busy'],
  ];

  it.each(failures)('%s in retry.on with attempts < maxAttempts → retry after the backoff', (reason, input, errorReason) => {
    const result = transition(PROCESSING, input, policyWith([reason]));
    expect(result.changed).toBe(true);
    expect(result.wakeJob).toBe(true);
    expect(result.record.state).toBe('processing');
    expect(result.record.errorReason).toBe(errorReason);
    expect(result.record.retryAt).toBe(input.now + 30 * SECOND);
    expect(result.record.completedAt).toBeNull();
    expect(result.record.deadlineAt).toBeNull();
    expect(result.record.responseDeadlineAt).toBeNull();
    expect(result.record.attempts).toBe(1);
    const retry = result.events.at(-1);
    expect(retry).toEqual({ type: 'retry', attempt: 1, message: `${errorReason}; attempt 2 at ${new Date(input.now + 30 * SECOND).toISOString()}` });
  });

  it.each(failures)('%s not in retry.on → failed with its errorReason', (reason, input, errorReason) => {
    const others = (['timeout', 'send_error', 'device_failure', 'rejected'] as const).filter((r) => r !== reason);
    const result = transition(PROCESSING, input, policyWith([...others], 5));
    expect(result.record.state).toBe('failed');
    expect(result.record.errorReason).toBe(errorReason);
    expect(result.record.completedAt).toBe(input.now);
    expect(result.record.retryAt).toBeNull();
    expect(result.record.deadlineAt).toBeNull();
    expect(result.record.responseDeadlineAt).toBeNull();
    expect(result.events.at(-1)).toEqual({ type: 'failed', attempt: 1, message: errorReason });
    expect(result.wakeJob).toBe(true);
    expect(result.changed).toBe(true);
  });

  it.each(failures)('%s in retry.on but attempts = maxAttempts → failed', (reason, input, errorReason) => {
    const last = { ...PROCESSING, attempts: 3 };
    const result = transition(last, input, policyWith([reason], 3));
    expect(result.record.state).toBe('failed');
    expect(result.record.errorReason).toBe(errorReason);
    expect(result.record.attempts).toBe(3);
    expect(result.events.at(-1)).toEqual({ type: 'failed', attempt: 3, message: errorReason });
  });

  it('maxAttempts 1 never retries', () => {
    const result = transition(PROCESSING, { type: 'deadline', now: AFTER_DEADLINE }, policyWith(['timeout'], 1));
    expect(result.record.state).toBe('failed');
    expect(result.events).toEqual([
      { type: 'timeout', attempt: 1 },
      { type: 'failed', attempt: 1, message: 'timeout' },
    ]);
  });

  it('backs off 30 s, 60 s, 120 s, 240 s for attempts 1 to 4', () => {
    const policy = policyWith(['timeout'], 5);
    const delays = [1, 2, 3, 4].map((attempts) => {
      const result = transition({ ...PROCESSING, attempts }, { type: 'deadline', now: AFTER_DEADLINE }, policy);
      expect(result.record.state).toBe('processing');
      return (result.record.retryAt ?? 0) - AFTER_DEADLINE;
    });
    expect(delays).toEqual([30_000, 60_000, 120_000, 240_000]);
  });

  it('the attempt after attempts = maxAttempts − 1 fails: a run of timeouts sends exactly maxAttempts times', () => {
    const policy = policyWith(['timeout'], 3);
    let record = WAITING;
    let now = T0;
    const sent: number[] = [];
    for (let round = 0; round < 10 && record.state !== 'failed'; round += 1) {
      const send = transition(record, { type: 'send', now, messageId: `m-${round}` }, policy);
      expect(send.changed).toBe(true);
      sent.push(send.events[0]!.attempt);
      now += 600 * SECOND;
      const timeout = transition(send.record, { type: 'deadline', now }, policy);
      record = timeout.record;
      if (record.state === 'processing') now = record.retryAt!;
    }
    expect(sent).toEqual([1, 2, 3]);
    expect(record.state).toBe('failed');
    expect(record.attempts).toBe(3);
    expect(record.errorReason).toBe('timeout');
  });

  it('a rejection without a message says so', () => {
    const result = transition(PROCESSING, { type: 'reject', now: NOW, messageId: 'm-1', message: undefined }, PUSH);
    expect(result.record.errorReason).toBe('rejected: no reason given');
    expect(result.events).toEqual([{ type: 'failed', attempt: 1, message: 'rejected: no reason given' }]);
  });

  it.each([
    [undefined, 'device reported failure'],
    ['', 'device reported failure'],
    ['   ', 'device reported failure'],
    ['  out of flash \n', 'out of flash'],
  ])('a device failure with errorReason %j fails with %j', (errorReason, expected) => {
    const input: RecordInput = { type: 'progress', now: NOW, version: TARGET, progress: 10, complete: false, success: false, errorReason };
    const result = transition(PROCESSING, input, PUSH);
    expect(result.record.state).toBe('failed');
    expect(result.record.errorReason).toBe(expected);
  });

  it('a failure report wins over complete: true', () => {
    const input: RecordInput = { type: 'progress', now: NOW, version: TARGET, progress: 100, complete: true, success: false, errorReason: 'verify failed' };
    const result = transition(PROCESSING, input, PUSH);
    expect(result.record.state).toBe('failed');
    expect(result.record.errorReason).toBe('verify failed');
    expect(result.record.progress).toBe(40);
  });
});

describe('pull mode', () => {
  it('the reply to a request is a "pulled" event and starts the attempt', () => {
    const result = transition(WAITING, { type: 'send', now: NOW, messageId: 'req-1' }, PULL);
    expect(result.events).toEqual([{ type: 'pulled', attempt: 1 }]);
    expect(result.record.state).toBe('processing');
    expect(result.record.messageId).toBe('req-1');
    expect(result.record.deadlineAt).toBe(NOW + 600 * SECOND);
    expect(result.wakeJob).toBe(false);
  });

  it('a retry goes back to waiting for the device to ask again', () => {
    const result = transition({ ...PROCESSING, progress: 70 }, { type: 'deadline', now: AFTER_DEADLINE }, PULL);
    expect(result.changed).toBe(true);
    expect(result.wakeJob).toBe(true);
    expect(result.record).toEqual({
      ...PROCESSING,
      state: 'waiting',
      progress: 0,
      errorReason: 'timeout',
      retryAt: null,
      deadlineAt: null,
      responseDeadlineAt: null,
    });
    expect(result.events).toEqual([
      { type: 'timeout', attempt: 1 },
      { type: 'retry', attempt: 1, message: 'timeout; waiting for the device to ask again' },
    ]);
  });

  it('the next request is attempt 2 and keeps the first start time', () => {
    const retried = transition(PROCESSING, { type: 'send_error', now: NOW, detail: 'no route' }, PULL).record;
    expect(retried.state).toBe('waiting');
    const again = transition(retried, { type: 'send', now: NOW + 5 * SECOND, messageId: 'req-2' }, PULL);
    expect(again.events).toEqual([{ type: 'pulled', attempt: 2 }]);
    expect(again.record.attempts).toBe(2);
    expect(again.record.startedAt).toBe(T0);
    expect(again.record.attemptStartedAt).toBe(NOW + 5 * SECOND);
  });

  it('a push task\'s waiting record handed to a device that pulls: the send is a "pulled" event', () => {
    const result = transition(WAITING, { type: 'send', now: NOW, messageId: 'req-1', pulled: true }, PUSH);
    expect(result.events).toEqual([{ type: 'pulled', attempt: 1 }]);
    expect(result.record).toMatchObject({ state: 'processing', attempts: 1, messageId: 'req-1', deadlineAt: NOW + 600 * SECOND });
    // and, being processing now, it cannot be sent a second time
    expect(transition(result.record, { type: 'send', now: NOW + 1, messageId: 'push-1' }, PUSH).changed).toBe(false);
  });

  it('a push retry that is not due yet starts when the device pulls; a running attempt is not restarted', () => {
    const backingOff = transition(PROCESSING, { type: 'send_error', now: NOW, detail: 'no route' }, PUSH).record;
    expect(backingOff.retryAt).not.toBeNull();
    const pulled = transition(backingOff, { type: 'send', now: NOW + SECOND, messageId: 'req-2', pulled: true }, PUSH);
    expect(pulled.events).toEqual([{ type: 'pulled', attempt: 2 }]);
    expect(pulled.record).toMatchObject({ state: 'processing', attempts: 2, retryAt: null });
    expect(transition(PROCESSING, { type: 'send', now: NOW, messageId: 'req-3', pulled: true }, PUSH).changed).toBe(false);
  });

  it('a pull-mode failure with no retry left fails like push', () => {
    const result = transition({ ...PROCESSING, attempts: 3 }, { type: 'deadline', now: AFTER_DEADLINE }, PULL);
    expect(result.record.state).toBe('failed');
    expect(result.record.errorReason).toBe('timeout');
  });
});

describe('progress', () => {
  const progress = (now: number, value: number): RecordInput => ({
    type: 'progress',
    now,
    version: TARGET,
    progress: value,
    complete: false,
    success: true,
    errorReason: undefined,
  });

  it('an equal report is ignored, with the reported value on the event', () => {
    const result = transition(PROCESSING, progress(NOW, 40), PUSH);
    expect(result.record.progress).toBe(40);
    expect(result.events).toEqual([{ type: 'ignored', attempt: 1, progress: 40, message: 'progress 40 is not above 40' }]);
  });

  it('a report of 0 at the start of an attempt is ignored (already 0)', () => {
    const result = transition(SILENT, progress(NOW, 0), PUSH);
    expect(result.record.progress).toBe(0);
    expect(result.events[0]?.type).toBe('ignored');
    // it is still a message from the device
    expect(result.record.lastMessageAt).toBe(NOW);
  });

  it('never lowers: over any sequence of reports, progress is the running maximum', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 100 }), { maxLength: 40 }), (values) => {
        let record = SILENT;
        let max = 0;
        values.forEach((value, i) => {
          const result = transition(record, progress(NOW + i, value), PUSH);
          record = result.record;
          const raised = value > max;
          max = Math.max(max, value);
          expect(result.events).toHaveLength(1);
          expect(result.events[0]!.type).toBe(raised ? 'progress' : 'ignored');
          expect(record.progress).toBe(max);
          expect(record.state).toBe('processing');
        });
      }),
      { seed: 42, numRuns: 300 },
    );
  });

  it('a full push rollout: sent, acknowledged, progress, out-of-order report ignored, success', () => {
    const steps: RecordInput[] = [
      { type: 'send', now: T0, messageId: 'm-1' },
      { type: 'ack', now: T0 + 1, messageId: 'm-1' },
      progress(T0 + 2, 30),
      progress(T0 + 3, 80),
      progress(T0 + 4, 50),
      { type: 'progress', now: T0 + 5, version: TARGET, progress: 100, complete: true, success: true, errorReason: undefined },
      progress(T0 + 6, 90),
    ];
    let record = WAITING;
    const timeline: TimelineEvent[] = [];
    const trace: Array<[RecordState, number]> = [];
    for (const step of steps) {
      const result = transition(record, step, PUSH);
      record = result.record;
      timeline.push(...result.events);
      trace.push([record.state, record.progress]);
    }
    expect(trace).toEqual([
      ['processing', 0],
      ['processing', 0],
      ['processing', 30],
      ['processing', 80],
      ['processing', 80],
      ['success', 100],
      ['success', 100],
    ]);
    expect(timeline.map((e) => e.type)).toEqual(['sent', 'acknowledged', 'progress', 'progress', 'ignored', 'success', 'ignored']);
    expect(timeline.every((e) => e.attempt === 1)).toBe(true);
    expect(timeline.at(-1)?.message).toBe('progress 90 after the record was success');
    expect(record.completedAt).toBe(T0 + 5);
    expect(record.startedAt).toBe(T0);
  });

  it('a successful completion sets progress 100, completedAt, and clears an earlier attempt\'s errorReason', () => {
    const second = { ...PROCESSING, attempts: 2, progress: 10, errorReason: 'timeout' };
    const complete: RecordInput = { type: 'progress', now: NOW, version: TARGET, progress: 37, complete: true, success: true, errorReason: undefined };
    const result = transition(second, complete, PUSH);
    expect(result.record.state).toBe('success');
    expect(result.record.progress).toBe(100);
    expect(result.record.completedAt).toBe(NOW);
    expect(result.record.errorReason).toBeNull();
    expect(result.events).toEqual([{ type: 'success', attempt: 2, progress: 100 }]);
  });
});

describe('final records change nothing (docs/states-and-rules.md)', () => {
  const finals = [SUCCESS, FAILED, CANCELED];
  const messages = (Object.keys(MESSAGE_DESCRIPTIONS) as InputName[]).map((name) => INPUTS[name]);

  it.each(finals.map((record) => [record.state, record] as const))('%s: each device message is logged as ignored, the record untouched', (_state, record) => {
    for (const input of messages) {
      const result = transition(record, input, PUSH);
      expect(result.record).toBe(record);
      expect(result.changed).toBe(false);
      expect(result.wakeJob).toBe(false);
      expect(result.events).toHaveLength(1);
      expect(result.events[0]!.type).toBe('ignored');
      expect(result.events[0]!.attempt).toBe(record.attempts);
    }
  });

  it.each(finals.map((record) => [record.state, record] as const))('%s: send, deadline, send_error and cancel are silent no-ops', (_state, record) => {
    for (const input of [INPUTS.send, INPUTS.deadlineLate, INPUTS.sendError, INPUTS.cancel, { type: 'cancel', now: NOW, message: 'task aborted' } as RecordInput]) {
      expect(transition(record, input, PUSH)).toEqual({ changed: false, record, events: [], wakeJob: false });
    }
  });

  it('a repeated final report is harmless', () => {
    const complete = INPUTS.progressComplete;
    const first = transition(PROCESSING, complete, PUSH);
    const second = transition(first.record, { ...complete, now: NOW + 1 }, PUSH);
    expect(second.record).toBe(first.record);
    expect(second.changed).toBe(false);
    expect(second.events).toEqual([{ type: 'ignored', attempt: 1, message: 'final report after the record was success' }]);
  });
});

describe('acknowledgements and rejections', () => {
  it.each([
    ['ack', { type: 'ack', now: NOW, messageId: 'm-0' }, 'acknowledgement for message m-0, not the current m-1'],
    ['reject', { type: 'reject', now: NOW, messageId: 'm-0', message: 'busy' }, 'rejection for message m-0, not the current m-1'],
  ] as Array<[string, RecordInput, string]>)('a %s for another messageId is ignored, but counts as hearing from the device', (_name, input, message) => {
    const result = transition(PROCESSING, input, PUSH);
    expect(result.changed).toBe(true);
    expect(result.record.lastMessageAt).toBe(NOW);
    expect(result.wakeJob).toBe(false);
    expect(result.events).toEqual([{ type: 'ignored', attempt: 1, message }]);
    expect(result.record.state).toBe('processing');
    expect(result.record.errorReason).toBeNull();
    expect(result.record.progress).toBe(40);
  });

  it('without a stored messageId any acknowledgement counts', () => {
    const result = transition({ ...PROCESSING, messageId: null }, { type: 'ack', now: NOW, messageId: 'whatever' }, PUSH);
    expect(result.changed).toBe(true);
    expect(result.events).toEqual([{ type: 'acknowledged', attempt: 1 }]);
    expect(result.record.lastMessageAt).toBe(NOW);
  });

  it('a cancel carries its message onto the event', () => {
    const result = transition(PROCESSING, { type: 'cancel', now: NOW, message: 'task aborted' }, PUSH);
    expect(result.events).toEqual([{ type: 'canceled', attempt: 1, message: 'task aborted' }]);
  });
});

describe('deadlines', () => {
  it('times out exactly at deadlineAt, not a millisecond before', () => {
    const deadlineAt = PROCESSING.deadlineAt!;
    expect(transition(PROCESSING, { type: 'deadline', now: deadlineAt - 1 }, PUSH).changed).toBe(false);
    const at = transition(PROCESSING, { type: 'deadline', now: deadlineAt }, PUSH);
    expect(at.record.errorReason).toBe('timeout');
    expect(at.events[0]).toEqual({ type: 'timeout', attempt: 1 });
  });

  it('the response deadline ends a silent attempt exactly at responseDeadlineAt', () => {
    const responseDeadlineAt = SILENT.responseDeadlineAt!;
    expect(transition(SILENT, { type: 'deadline', now: responseDeadlineAt - 1 }, PUSH).changed).toBe(false);
    const at = transition(SILENT, { type: 'deadline', now: responseDeadlineAt }, policyWith([]));
    expect(at.record.state).toBe('failed');
    expect(at.record.errorReason).toBe('timeout: no response');
    expect(at.events).toEqual([
      { type: 'timeout', attempt: 1, message: 'no response' },
      { type: 'failed', attempt: 1, message: 'timeout: no response' },
    ]);
  });

  it('a message heard only before this attempt started does not count', () => {
    const stale = { ...SILENT, lastMessageAt: T0 - 1 };
    const result = transition(stale, { type: 'deadline', now: AFTER_RESPONSE_DEADLINE }, PUSH);
    expect(result.record.errorReason).toBe('timeout: no response');
  });

  it('a message heard at the very moment the attempt started counts', () => {
    const heard = { ...SILENT, lastMessageAt: T0 };
    expect(transition(heard, { type: 'deadline', now: AFTER_RESPONSE_DEADLINE }, PUSH).changed).toBe(false);
  });

  it('an acknowledgement is enough to disarm the response deadline', () => {
    const acked = transition(SILENT, { type: 'ack', now: NOW, messageId: 'm-1' }, PUSH).record;
    expect(transition(acked, { type: 'deadline', now: AFTER_RESPONSE_DEADLINE }, PUSH).changed).toBe(false);
    expect(transition(acked, { type: 'deadline', now: AFTER_DEADLINE }, PUSH).record.errorReason).toBe('timeout');
  });

  it('without responseTimeoutSeconds (null or 0) there is no response deadline', () => {
    for (const responseTimeoutSeconds of [null, 0]) {
      const policy = { ...PUSH, responseTimeoutSeconds };
      const sent = transition(WAITING, { type: 'send', now: T0, messageId: 'm-1' }, policy).record;
      expect(sent.responseDeadlineAt).toBeNull();
      expect(sent.deadlineAt).toBe(T0 + 600 * SECOND);
      expect(transition(sent, { type: 'deadline', now: AFTER_RESPONSE_DEADLINE }, policy).changed).toBe(false);
    }
  });

  it('a response deadline later than the final deadline ends the attempt as a plain timeout', () => {
    const late = { ...SILENT, responseDeadlineAt: T0 + 900 * SECOND };
    expect(transition(late, { type: 'deadline', now: T0 + 700 * SECOND }, PUSH).record.errorReason).toBe('timeout');
  });

  it('a deadline on a processing record without deadlineAt changes nothing', () => {
    const open = { ...SILENT, deadlineAt: null };
    expect(transition(open, { type: 'deadline', now: AFTER_DEADLINE * 2 }, PUSH)).toEqual({ changed: false, record: open, events: [], wakeJob: false });
  });

  // docs/states-and-rules.md#attempts-timeouts-and-retries: responseTimeoutSeconds ends an attempt early
  // only when the device sends no message at all. A ReportFirmwareMessage is a device → platform
  // message (docs/device-protocol.md#topics) and is
  // accepted (stored), but the machine does not count a report of another version as "heard".
  it('a firmware report of another version is a message from the device, so the response deadline does not fire', () => {
    const reported = transition(SILENT, { type: 'report', now: NOW, version: '1.0.0' }, PUSH);
    const later = transition(reported.record, { type: 'deadline', now: AFTER_RESPONSE_DEADLINE }, PUSH);
    expect(later.record.state).toBe('processing');
    expect(later.record.errorReason).toBeNull();
    expect(later.events).toEqual([]);
  });
});

describe('send', () => {
  it('records the first start once and each attempt\'s own start and deadlines', () => {
    const first = transition(WAITING, { type: 'send', now: T0, messageId: 'm-1' }, PUSH).record;
    expect(first).toMatchObject({ attempts: 1, startedAt: T0, attemptStartedAt: T0, deadlineAt: T0 + 600_000, responseDeadlineAt: T0 + 60_000 });
    const failed = transition(first, { type: 'send_error', now: T0 + 1, detail: 'x' }, PUSH).record;
    const second = transition(failed, { type: 'send', now: T0 + 31_000, messageId: 'm-2' }, PUSH).record;
    expect(second).toMatchObject({
      attempts: 2,
      startedAt: T0,
      attemptStartedAt: T0 + 31_000,
      deadlineAt: T0 + 631_000,
      responseDeadlineAt: T0 + 91_000,
      messageId: 'm-2',
      retryAt: null,
    });
  });

  it('a send_error while no attempt is open changes nothing', () => {
    expect(transition(WAITING, INPUTS.sendError, PUSH).changed).toBe(false);
    expect(transition(RETRY_WAIT, INPUTS.sendError, PUSH).changed).toBe(false);
  });
});

describe('backoffMs', () => {
  it.each([
    [30, 0, 30_000],
    [30, 1, 30_000],
    [30, 2, 60_000],
    [30, 3, 120_000],
    [30, 4, 240_000],
    [1, 10, 512_000],
    [0, 5, 0],
  ])('backoffSeconds %i after %i attempts → %i ms', (backoffSeconds, attempts, expected) => {
    expect(backoffMs({ maxAttempts: 10, backoffSeconds, on: [] }, attempts)).toBe(expected);
  });
});

describe('nextWakeAt', () => {
  it.each([
    ['waiting', WAITING, null],
    ['success', SUCCESS, null],
    ['failed', FAILED, null],
    ['canceled', CANCELED, null],
    ['processing waiting for a retry', RETRY_WAIT, T0 + 630_000],
    ['processing, heard from', PROCESSING, T0 + 600_000],
    ['processing, silent: the response deadline', SILENT, T0 + 60_000],
    ['processing, heard before this attempt only', { ...SILENT, lastMessageAt: T0 - 1 }, T0 + 60_000],
    ['processing, silent, response deadline after the deadline', { ...SILENT, responseDeadlineAt: T0 + 900_000 }, T0 + 600_000],
    ['processing, silent, no response deadline', { ...SILENT, responseDeadlineAt: null }, T0 + 600_000],
    ['processing, silent, only a response deadline', { ...SILENT, deadlineAt: null }, T0 + 60_000],
    ['processing, no deadlines at all', { ...SILENT, deadlineAt: null, responseDeadlineAt: null }, null],
    ['processing, retry wins over deadlines', { ...SILENT, retryAt: T0 + 5 }, T0 + 5],
  ] as Array<[string, RecordSnapshot, number | null]>)('%s', (_name, record, expected) => {
    expect(nextWakeAt(record)).toBe(expected);
  });
});

describe('states', () => {
  it('success, failed and canceled are final; waiting and processing are active', () => {
    expect([...FINAL_STATES]).toEqual(['success', 'failed', 'canceled']);
    expect([...ACTIVE_STATES]).toEqual(['waiting', 'processing']);
    expect((['waiting', 'processing', 'success', 'failed', 'canceled'] as const).map(isFinal)).toEqual([false, false, true, true, true]);
  });
});

describe('operator and dispatcher inputs: every record change goes through the machine', () => {
  const QUEUED: RecordSnapshot = { ...WAITING, pushRequested: true, queuedAt: T0 - 5 * SECOND, dispatches: 1 };

  it('request_push marks a waiting record, once; nothing else', () => {
    const pushed = transition(WAITING, { type: 'request_push', now: NOW }, PUSH);
    expect(pushed).toMatchObject({ changed: true, events: [], record: { ...WAITING, pushRequested: true } });
    expect(transition(pushed.record, { type: 'request_push', now: NOW }, PUSH).changed).toBe(false);
    for (const record of [PROCESSING, SUCCESS, FAILED, CANCELED]) {
      expect(transition(record, { type: 'request_push', now: NOW }, PUSH)).toMatchObject({ changed: false, events: [] });
    }
  });

  it('queue takes only a dispatchable record: gives it a job (dispatches + 1) and a `queued` event', () => {
    const pushed = { ...WAITING, pushRequested: true };
    expect(isDispatchable(pushed)).toBe(true);
    const queued = transition(pushed, { type: 'queue', now: NOW }, PUSH);
    expect(queued).toMatchObject({ changed: true, record: { state: 'waiting', queuedAt: NOW, dispatches: 1 }, events: [{ type: 'queued', attempt: 0 }] });
    expect(isDispatchable(queued.record)).toBe(false);
    for (const record of [WAITING, QUEUED, PROCESSING, SUCCESS]) {
      expect(transition(record, { type: 'queue', now: NOW }, PUSH).changed).toBe(false);
    }
  });

  it('unqueue gives a queued record back to the dispatcher, keeping its push request', () => {
    const back = transition(QUEUED, { type: 'unqueue', now: NOW }, PUSH);
    expect(back).toMatchObject({ changed: true, events: [], record: { ...QUEUED, queuedAt: null } });
    expect(isDispatchable(back.record)).toBe(true);
    expect(transition(WAITING, { type: 'unqueue', now: NOW }, PUSH).changed).toBe(false);
  });

  it('leaving `waiting` clears the queue marks (send, cancel)', () => {
    const sent = transition(QUEUED, { type: 'send', now: NOW, messageId: 'm-9' }, PUSH);
    expect(sent.record).toMatchObject({ state: 'processing', queuedAt: null, pushRequested: false, dispatches: 1 });
    const canceled = transition(QUEUED, { type: 'cancel', now: NOW }, PUSH);
    expect(canceled.record).toMatchObject({ state: 'canceled', queuedAt: null, pushRequested: false });
  });

  it('a send that starts its own job (pull reply, direct send) counts a dispatch', () => {
    expect(transition(WAITING, { type: 'send', now: NOW, messageId: 'm', newJob: true }, PULL).record.dispatches).toBe(1);
    expect(transition(WAITING, { type: 'send', now: NOW, messageId: 'm' }, PULL).record.dispatches).toBe(0);
  });

  it('transitionAll: queue then send, as one change with both events', () => {
    const result = transitionAll({ ...WAITING, pushRequested: true }, [{ type: 'queue', now: NOW }, { type: 'send', now: NOW, messageId: 'm' }], PUSH);
    expect(result.changed).toBe(true);
    expect(result.events.map((e) => e.type)).toEqual(['queued', 'sent']);
    expect(result.record).toMatchObject({ state: 'processing', attempts: 1, dispatches: 1, queuedAt: null });
  });

  it.each([['failed', FAILED], ['canceled', CANCELED]] as const)('reopen starts a %s record over, with a `retry` event', (state, record) => {
    const reopened = transition({ ...record, dispatches: 3 }, { type: 'reopen', now: NOW, push: true }, PUSH);
    expect(reopened.changed).toBe(true);
    expect(reopened.record).toEqual({ ...WAITING, pushRequested: true, dispatches: 3 });
    expect(reopened.events).toEqual([{ type: 'retry', attempt: 0, message: `reopened by an operator (was ${state})` }]);
    expect(transition(record, { type: 'reopen', now: NOW, push: false }, PUSH).record.pushRequested).toBe(false);
  });

  it('reopen leaves active and succeeded records alone', () => {
    for (const record of [WAITING, PROCESSING, SUCCESS]) {
      expect(transition(record, { type: 'reopen', now: NOW, push: true }, PUSH)).toMatchObject({ changed: false, events: [] });
    }
  });
});
