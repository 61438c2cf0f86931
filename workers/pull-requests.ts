// Device-pulled upgrades (CONTRACT §8 "Pull"): a RequestFirmwareMessage from a device with an
// active record of a running pull task starts an attempt — the record becomes `processing`, the
// timeout clock starts at the reply — and a parked job enforces the deadline. Anything else is
// answered `success: false, code: "not_found"`.
import type { Queue } from 'bullmq';
import type { Logger } from 'pino';
import { upgradeJobId, type UpgradeJobData } from '../core/jobs.ts';
import type { RequestFirmwareMessage, RequestFirmwareReply } from '../core/messages.ts';
import { nextWakeAt, transition } from '../core/record-machine.ts';
import type { Db } from '../db/connection.ts';
import { applyRecordChanges, changeOf } from '../db/queries/record-changes.ts';
import { loadUpgradeStatesByDevices, type UpgradeState } from '../db/queries/upgrade-state.ts';
import type { FirmwareOffers } from './firmware-offers.ts';

export interface PullAnswer {
  reply: RequestFirmwareReply;
  /** The record that started an attempt, if any. */
  recordId?: number;
}

const STALE_RETRIES = 3;

export class PullRequests {
  private readonly db: Db;
  private readonly queue: Queue<UpgradeJobData>;
  private readonly offers: FirmwareOffers;
  private readonly logger: Logger;

  constructor(db: Db, queue: Queue<UpgradeJobData>, offers: FirmwareOffers, logger: Logger) {
    this.db = db;
    this.queue = queue;
    this.offers = offers;
    this.logger = logger;
  }

  async answer(message: RequestFirmwareMessage): Promise<PullAnswer> {
    for (let round = 0; round <= STALE_RETRIES; round += 1) {
      const state = (await loadUpgradeStatesByDevices(this.db, [message.deviceId])).get(message.deviceId);
      const refusal = this.refusal(message, state);
      if (refusal || !state) return { reply: refusal ?? this.notFound(message, 'no upgrade for this device') };

      const offer = await this.offers.offer(state.firmwareId);
      if (!offer) return { reply: this.notFound(message, 'the firmware no longer exists') };

      if (state.snapshot.state === 'processing') {
        // asked again mid-upgrade (e.g. after a reboot): the same firmware, the attempt goes on
        return { reply: { ...offer, messageId: message.messageId, deviceId: message.deviceId, success: true, timestamp: Date.now() }, recordId: state.id };
      }
      const now = Date.now();
      const result = transition(state.snapshot, { type: 'send', now, messageId: message.messageId }, state.policy);
      const { applied } = await applyRecordChanges(this.db, [changeOf(state, result, true)]);
      if (applied.length === 0) continue;
      await this.parkDeadlineJob(state, nextWakeAt(result.record) ?? now + state.policy.timeoutSeconds * 1000);
      return { reply: { ...offer, messageId: message.messageId, deviceId: message.deviceId, success: true, timestamp: now }, recordId: state.id };
    }
    return { reply: this.notFound(message, 'the upgrade record kept changing; ask again') };
  }

  private refusal(message: RequestFirmwareMessage, state: UpgradeState | undefined): RequestFirmwareReply | undefined {
    if (!state || (state.snapshot.state !== 'waiting' && state.snapshot.state !== 'processing')) {
      return this.notFound(message, 'no active upgrade for this device');
    }
    if (state.policy.mode !== 'pull') return this.notFound(message, 'the active upgrade of this device is pushed by the platform');
    if (state.taskState !== 'running') return this.notFound(message, `the upgrade task is ${state.taskState}`);
    if (message.requestVersion && message.requestVersion !== state.snapshot.targetVersion) {
      return this.notFound(message, `no upgrade to version ${message.requestVersion} (the active one is ${state.snapshot.targetVersion})`);
    }
    return undefined;
  }

  private notFound(message: RequestFirmwareMessage, text: string): RequestFirmwareReply {
    return { messageId: message.messageId, deviceId: message.deviceId, success: false, code: 'not_found', message: text, timestamp: Date.now() };
  }

  /** The attempt's job, parked until its deadline: it times the attempt out if the device goes quiet. */
  private async parkDeadlineJob(state: UpgradeState, wakeAt: number): Promise<void> {
    const jobId = upgradeJobId(state.id, state.dispatches + 1);
    await this.queue.add(state.deviceId, { recordId: state.id, taskId: state.taskId, deviceId: state.deviceId }, { jobId, delay: Math.max(1, wakeAt - Date.now()) });
    this.logger.debug({ recordId: state.id, jobId }, 'pull attempt started');
  }
}
