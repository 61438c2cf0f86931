// What the job following an upgrade record does next, decided from the record alone. The job is
// a pump: whenever it runs (first dispatch, woken by a device message, at a deadline, rebuilt by
// the reconciler) it looks at the record in Postgres and takes the one step this function names.
import { isFinal, nextWakeAt, type RecordSnapshot } from './record-machine.ts';

import type { TaskState } from './tasks.ts';

/** The state of the record's task, as the job reads it. */
export type TaskRunState = TaskState;

export type JobPlan =
  /** the upgrade succeeded: the job completes */
  | { kind: 'complete' }
  /** the upgrade failed: the job fails with the record's reason */
  | { kind: 'fail'; reason: string }
  /** nothing more for this job to do (canceled record, superseded job): it completes and is removed */
  | { kind: 'drop'; reason: string }
  /** the record waits but its task does not send now (paused): give it back to the dispatcher */
  | { kind: 'hold' }
  /** send the upgrade message (first attempt or a retry that is due) */
  | { kind: 'send' }
  /** park until then; a device message may wake the job earlier */
  | { kind: 'wait'; until: number }
  /** the attempt's deadline has passed */
  | { kind: 'deadline' }
  /** a retry is due but its task sends nothing more (aborted or canceled): the record is canceled */
  | { kind: 'abandon'; reason: string };

export interface JobPlanInput {
  record: RecordSnapshot;
  mode: 'push' | 'pull';
  taskState: TaskRunState;
  /** The record's dispatch count, and the one the job was created for. */
  recordDispatches: number;
  jobDispatches: number;
  now: number;
}

export function planJob(input: JobPlanInput): JobPlan {
  const { record, now } = input;
  if (record.state === 'success') return { kind: 'complete' };
  if (record.state === 'failed') return { kind: 'fail', reason: record.errorReason ?? 'failed' };
  if (isFinal(record.state)) return { kind: 'drop', reason: `record ${record.state}` };
  if (input.jobDispatches !== input.recordDispatches) return { kind: 'drop', reason: 'superseded by a newer job' };

  if (record.state === 'waiting') {
    if (input.mode === 'pull') return { kind: 'drop', reason: 'waiting for the device to ask' };
    return input.taskState === 'running' ? { kind: 'send' } : { kind: 'hold' };
  }

  // processing
  if (record.retryAt !== null) {
    if (now < record.retryAt) return { kind: 'wait', until: record.retryAt };
    // in-flight upgrades of a paused task finish, retries included; a stopped task sends no more
    if (input.taskState === 'aborted' || input.taskState === 'canceled') {
      return { kind: 'abandon', reason: `task ${input.taskState}` };
    }
    return { kind: 'send' };
  }
  const wakeAt = nextWakeAt(record);
  if (wakeAt === null) return { kind: 'deadline' };
  return now >= wakeAt ? { kind: 'deadline' } : { kind: 'wait', until: wakeAt };
}
