// Device-pulled upgrades (docs/states-and-rules.md#push-and-pull): a RequestFirmwareMessage from a device with an
// active record starts an attempt — the record becomes `processing`, the timeout clock starts at the
// reply — and a parked job enforces the deadline. As JetLinks does, a device that asks is answered
// for its active record in any task that is not held: a push task's waiting record too (released,
// pushed or not), and the reply then counts as its push — the dispatcher claims only waiting records
// through the same guarded write, so it never sends it again. A paused, canceled, aborted or
// completed task answers only an attempt already under way. Anything else is answered
// `success: false, code: "not_found"`.
import type { UpgradeQueues } from '../services/upgrade-queues.ts';
import type { Logger } from 'pino';
import { upgradeJob } from '../core/jobs.ts';
import type { RequestFirmwareMessage, RequestFirmwareReply } from '../core/messages.ts';
import { firmwareFoundReply, firmwareNotFoundReply } from '../core/platform-messages.ts';
import { nextWakeAt, transition } from '../core/record-machine.ts';
import type { Db } from '../db/connection.ts';
import { applyRecordChanges, changeOf } from '../db/queries/record-changes.ts';
import { jobbed, loadUpgradeStatesByDevices, type UpgradeState } from '../db/queries/upgrade-state.ts';
import type { FirmwareOffers } from './firmware-offers.ts';
import type { PullAnswer } from '../services/device-messages.ts';


const STALE_RETRIES = 3;

export class PullRequests {
  private readonly db: Db;
  private readonly queue: UpgradeQueues;
  private readonly offers: FirmwareOffers;
  private readonly logger: Logger;

  constructor(db: Db, queue: UpgradeQueues, offers: FirmwareOffers, logger: Logger) {
    this.db = db;
    this.queue = queue;
    this.offers = offers;
    this.logger = logger;
  }

  async answer(message: RequestFirmwareMessage): Promise<PullAnswer> {
    for (let round = 0; round <= STALE_RETRIES; round += 1) {
      const state = (await loadUpgradeStatesByDevices(this.db, [message.deviceId])).get(message.deviceId);
      const refusal = await this.refusal(message, state);
      if (refusal || !state) return { reply: refusal ?? this.notFound(message, 'no upgrade for this device') };

      const offer = await this.offers.offer(state.firmwareId, { deviceId: message.deviceId, timeoutSeconds: state.policy.timeoutSeconds });
      if (!offer) return { reply: this.notFound(message, 'the firmware no longer exists') };

      const now = Date.now();
      if (state.snapshot.state === 'processing' && state.snapshot.retryAt === null) {
        // asked again mid-upgrade (e.g. after a reboot): the same firmware, the attempt goes on
        return { reply: firmwareFoundReply(message, offer, now), recordId: state.id };
      }
      // a waiting record, or a push retry that is not due yet: this reply is its send, written
      // with the same guarded update as the dispatcher's, so only one of them ever sends it
      // the reply starts an attempt followed by a job of its own
      const result = transition(state.snapshot, { type: 'send', now, messageId: message.messageId, pulled: true, newJob: true }, state.policy);
      if (!result.changed) return { reply: this.notFound(message, 'no active upgrade for this device') };
      const { applied } = await applyRecordChanges(this.db, [changeOf(state, result)]);
      if (applied.length === 0) continue;
      await this.parkDeadlineJob(state, nextWakeAt(result.record) ?? now + state.policy.timeoutSeconds * 1000);
      return { reply: firmwareFoundReply(message, offer, now), recordId: state.id };
    }
    return { reply: this.notFound(message, 'the upgrade record kept changing; ask again') };
  }

  private async refusal(message: RequestFirmwareMessage, state: UpgradeState | undefined): Promise<RequestFirmwareReply | undefined> {
    if (!state || (state.snapshot.state !== 'waiting' && state.snapshot.state !== 'processing')) {
      return this.notFound(message, 'no active upgrade for this device');
    }
    const inFlight = state.snapshot.state === 'processing' && state.snapshot.retryAt === null;
    // an attempt under way finishes even in a paused task: a device that reboots mid-upgrade gets its firmware again
    const answers = state.taskState === 'running' || state.taskState === 'created';
    if (!answers && !inFlight) return this.notFound(message, `the upgrade task is ${state.taskState}`);
    if (message.requestVersion && message.requestVersion !== state.snapshot.targetVersion) {
      return this.notFound(message, `no upgrade to version ${message.requestVersion} (the active one is ${state.snapshot.targetVersion})`);
    }
    return undefined;
  }

  private notFound(message: RequestFirmwareMessage, text: string): RequestFirmwareReply {
    return firmwareNotFoundReply(message, text, Date.now());
  }

  /** The attempt's job, parked until its deadline: it times the attempt out if the device goes quiet. */
  private async parkDeadlineJob(state: UpgradeState, wakeAt: number): Promise<void> {
    // the reply's send counted a dispatch: the attempt's job is the record's next one
    const job = upgradeJob({ ...jobbed(state), dispatches: state.snapshot.dispatches + 1 }, Math.max(wakeAt, Date.now() + 1));
    await this.queue.add(job);
    this.logger.debug({ recordId: state.id, jobId: job.opts.jobId }, 'pull attempt started');
  }
}
