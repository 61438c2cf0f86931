// The dispatcher's fast path for first attempts: one transaction claims a batch of waiting records
// and marks them sent (the state machine's send, with their `queued` events); then their jobs are
// added already parked until each attempt's deadline, and only then do the messages leave — so a
// device that answers at once always finds a job to wake. A device upgrade then costs one job run
// (when its answer wakes the job) instead of two, and one write of the record fewer.
import { randomUUID } from 'node:crypto';
import type { Queue } from 'bullmq';
import { upgradeJob, type UpgradeJobData } from '../core/jobs.ts';
import { nextWakeAt, transitionAll } from '../core/record-machine.ts';
import type { Db } from '../db/connection.ts';
import { claimRecordsAndSend, type InFlight } from '../db/queries/dispatch.ts';
import { changeOf, stateAfter, type RecordChange } from '../db/queries/record-changes.ts';
import { jobbed, type UpgradeState } from '../db/queries/upgrade-state.ts';
import type { JobWaker } from './job-waker.ts';
import type { UpgradeSender } from './upgrade-sender.ts';

export class DirectSends {
  private readonly db: Db;
  private readonly sender: UpgradeSender;
  private readonly queue: Queue<UpgradeJobData>;
  private readonly waker: JobWaker;

  constructor(db: Db, sender: UpgradeSender, queue: Queue<UpgradeJobData>, waker: JobWaker) {
    this.db = db;
    this.sender = sender;
    this.queue = queue;
    this.waker = waker;
  }

  /** Claims and sends as many of the task's waiting records as `budget` allows; returns how many. */
  async dispatch(taskId: string, budget: (inFlight: InFlight) => Promise<number>): Promise<number> {
    const sent = new Map<number, UpgradeState>();
    // dispatch latency (claimed → delivered) is measured from here
    const claimedAt = Date.now();
    const applied = await claimRecordsAndSend(this.db, taskId, budget, (state) => {
      // queued (the record's dispatch count, and so its job id, moves on) and sent, in one write
      const result = transitionAll(state.snapshot, [{ type: 'queue', now: claimedAt }, { type: 'send', now: Date.now(), messageId: randomUUID() }], state.policy);
      if (!result.changed) return undefined;
      const change = changeOf(state, result);
      sent.set(state.id, stateAfter(state, change));
      return change;
    });
    if (applied.length === 0) return 0;
    const states = applied.map((change: RecordChange) => sent.get(change.id)!);
    await this.queue.addBulk(states.map((state) => upgradeJob(jobbed(state), nextWakeAt(state.snapshot) ?? 0)));
    await Promise.all(
      states.map(async (state) => {
        const outcome = await this.sender.deliver(state, claimedAt);
        // a failed delivery may have scheduled a retry sooner than the deadline the job waits for
        if (outcome.kind === 'send_error') this.waker.wake([upgradeJob(jobbed(state)).opts.jobId]);
      }),
    );
    return applied.length;
  }
}
