// The dispatcher's fast path for first attempts: one transaction claims a batch of waiting records,
// reads what their messages need (UpgradeSender.prepare) and marks them sent (the state machine's
// send, with their `queued` events); then their jobs are added already parked until each attempt's
// deadline, and only then do the messages leave — so a device that answers at once always finds a
// job to wake. After the commit only Redis and the transport are left: a database that drops then
// loses no message. A device upgrade costs one job run (when its answer wakes the job) instead of
// two, and one write of the record fewer.
import type { UpgradeQueues } from '../services/upgrade-queues.ts';
import { randomUUID } from 'node:crypto';
import { upgradeJob } from '../core/jobs.ts';
import { nextWakeAt, transitionAll } from '../core/record-machine.ts';
import type { Db } from '../db/connection.ts';
import { claimRecordsAndSend, type InFlight } from '../db/queries/dispatch.ts';
import { changeOf, stateAfter, type RecordChange } from '../db/queries/record-changes.ts';
import { jobbed, loadUpgradeStatesByIds, type UpgradeState } from '../db/queries/upgrade-state.ts';
import { isTransientDbError, retryTransient } from '../db/transient-errors.ts';
import type { JobWaker } from './job-waker.ts';
import type { PreparedSend, UpgradeSender } from './upgrade-sender.ts';

/** How long to wait for PostgreSQL to come back and say whether a claim committed. */
const COMMIT_CHECK_MS = 30_000;

export class DirectSends {
  private readonly db: Db;
  private readonly sender: UpgradeSender;
  private readonly queue: UpgradeQueues;
  private readonly waker: JobWaker;

  constructor(db: Db, sender: UpgradeSender, queue: UpgradeQueues, waker: JobWaker) {
    this.db = db;
    this.sender = sender;
    this.queue = queue;
    this.waker = waker;
  }

  /** Claims and sends as many of the task's waiting records as `budget` allows; returns how many. */
  async dispatch(taskId: string, budget: (inFlight: InFlight) => Promise<number>): Promise<number> {
    const sent = new Map<number, UpgradeState>();
    const prepared = new Map<number, PreparedSend>();
    // dispatch latency (claimed → delivered) is measured from here
    const claimedAt = Date.now();
    const claim = claimRecordsAndSend(this.db, taskId, budget, async (states) => {
      // a database gone now fails the claim, and nothing is written
      const ready = await Promise.all(states.map((state) => this.sender.prepare(state, claimedAt)));
      return states.flatMap((state, i) => {
        // queued (the record's dispatch count, and so its job id, moves on) and sent, in one write
        const result = transitionAll(state.snapshot, [{ type: 'queue', now: claimedAt }, { type: 'send', now: Date.now(), messageId: randomUUID() }], state.policy);
        if (!result.changed) return [];
        const change = changeOf(state, result);
        sent.set(state.id, stateAfter(state, change));
        prepared.set(state.id, ready[i]!);
        return [change];
      });
    });
    const states = await claim.then(
      (applied: RecordChange[]) => applied.map((change) => sent.get(change.id)!),
      (error: unknown) => this.writtenAnyway(sent, error),
    );
    if (states.length === 0) return 0;
    await this.queue.addBulk(states.map((state) => upgradeJob(jobbed(state), nextWakeAt(state.snapshot) ?? 0)));
    await Promise.all(
      states.map(async (state) => {
        const outcome = await this.sender.deliver(state, prepared.get(state.id)!, claimedAt);
        // a failed delivery may have scheduled a retry sooner than the deadline the job waits for
        if (outcome.kind === 'send_error') this.waker.wake([upgradeJob(jobbed(state)).opts.jobId]);
      }),
    );
    return states.length;
  }

  /**
   * The claim failed on its way back (PostgreSQL restarting at the commit): it may have committed
   * all the same. The records tell — each one written carries the message id this claim gave it —
   * so those are sent now rather than left to time out and be sent a second time.
   */
  private async writtenAnyway(sent: ReadonlyMap<number, UpgradeState>, error: unknown): Promise<UpgradeState[]> {
    if (sent.size === 0 || !isTransientDbError(error)) throw error;
    const now = await retryTransient(() => loadUpgradeStatesByIds(this.db, [...sent.keys()]), { maxRetryTime: COMMIT_CHECK_MS });
    const written = [...sent.values()].filter((state) => {
      const current = now.get(state.id);
      return current !== undefined && current.revision === state.revision && current.snapshot.messageId === state.snapshot.messageId;
    });
    if (written.length === 0) throw error;
    return written;
  }
}
