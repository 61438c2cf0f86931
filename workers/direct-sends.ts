// The dispatcher's fast path for first attempts: the dispatcher sends the upgrade itself and adds
// the record's job already parked until the attempt's deadline, so a device upgrade costs one job
// run (when the device's answer wakes it) instead of two (send, then finish). The job is added
// before the message leaves, so a device that answers at once always finds a job to wake.
// A record that cannot go this way (it moved on, its task paused) gets an ordinary job, whose run
// decides from the record what to do.
import type { Queue } from 'bullmq';
import { planJob } from '../core/job-plan.ts';
import { upgradeJobId, type UpgradeJobData } from '../core/jobs.ts';
import { nextWakeAt } from '../core/record-machine.ts';
import type { ClaimedRecord } from '../db/queries/dispatch.ts';
import type { JobWaker } from './job-waker.ts';
import type { RecordStore } from './record-store.ts';
import type { UpgradeSender } from './upgrade-sender.ts';

export class DirectSends {
  private readonly store: RecordStore;
  private readonly sender: UpgradeSender;
  private readonly queue: Queue<UpgradeJobData>;
  private readonly waker: JobWaker;

  constructor(store: RecordStore, sender: UpgradeSender, queue: Queue<UpgradeJobData>, waker: JobWaker) {
    this.store = store;
    this.sender = sender;
    this.queue = queue;
    this.waker = waker;
  }

  /** Sends the claimed records' first attempts; returns those left to an ordinary job. */
  async send(taskId: string, claimed: readonly ClaimedRecord[]): Promise<ClaimedRecord[]> {
    const leftToJobs: ClaimedRecord[] = [];
    await Promise.all(
      claimed.map(async (record) => {
        if (!(await this.sendOne(taskId, record))) leftToJobs.push(record);
      }),
    );
    return leftToJobs;
  }

  /** True when the record was taken care of here (sent, or gone). */
  private async sendOne(taskId: string, record: ClaimedRecord): Promise<boolean> {
    const state = await this.store.load(record.id);
    if (!state) return true;
    const plan = planJob({
      record: state.snapshot,
      mode: state.policy.mode,
      taskState: state.taskState,
      recordDispatches: state.dispatches,
      jobDispatches: record.dispatches,
      now: Date.now(),
    });
    if (plan.kind !== 'send') return false;
    const jobId = upgradeJobId(record.id, record.dispatches);
    const outcome = await this.sender.send(state, async (sent) => {
      const wakeAt = nextWakeAt(sent.snapshot) ?? Date.now();
      await this.queue.add(record.deviceId, { recordId: record.id, taskId, deviceId: record.deviceId }, {
        jobId,
        delay: Math.max(0, wakeAt - Date.now()),
      });
    });
    if (outcome.kind === 'stale') return false;
    // a failed delivery may have scheduled a retry sooner than the deadline the job waits for
    if (outcome.kind === 'send_error') this.waker.wake([jobId]);
    return true;
  }
}
