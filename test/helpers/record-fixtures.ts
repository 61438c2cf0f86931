// Records at the points unit tests start from, around one moment T0, under one push policy.
import { newRecord, type RecordSnapshot, type UpgradePolicy } from '../../core/record-machine.ts';
import type { UpgradeState } from '../../db/queries/upgrade-state.ts';

export const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);

/** Push, 600 s per attempt, 60 s to answer, 3 attempts retried on every kind of failure. */
export const POLICY: UpgradePolicy = {
  mode: 'push',
  timeoutSeconds: 600,
  responseTimeoutSeconds: 60,
  retry: { maxAttempts: 3, backoffSeconds: 30, on: ['timeout', 'send_error', 'device_failure', 'rejected'] },
};

/** Pushed and queued `queuedMsAgo` before T0, with its first job. */
export function queuedRecord(queuedMsAgo: number): RecordSnapshot {
  return { ...newRecord('2.0.0'), pushRequested: true, queuedAt: T0 - queuedMsAgo, dispatches: 1 };
}

/** Attempt 1 sent 10 s before T0 as message m-1, not heard from yet. */
export function sentRecord(queued: RecordSnapshot): RecordSnapshot {
  return {
    ...queued,
    state: 'processing',
    attempts: 1,
    messageId: 'm-1',
    startedAt: T0 - 10_000,
    attemptStartedAt: T0 - 10_000,
    deadlineAt: T0 + 590_000,
    responseDeadlineAt: T0 + 50_000,
    pushRequested: false,
    queuedAt: null,
  };
}

/** Record 7 of task-1 (device dev-1) at revision 4, its task running, with `snapshot`. */
export function upgradeStateOf(snapshot: RecordSnapshot, overrides: Partial<Omit<UpgradeState, 'snapshot'>> = {}): UpgradeState {
  return {
    id: 7,
    taskId: 'task-1',
    firmwareId: 'fw-1',
    deviceId: 'dev-1',
    productId: 'prod-1',
    wave: 0,
    revision: 4,
    taskState: 'running',
    taskSuccess: 0,
    windows: null,
    rollout: {},
    policy: POLICY,
    snapshot,
    ...overrides,
  };
}
