// Sends one attempt of an upgrade: the record is marked sent first (a guarded write, so a record
// that moved on is never sent), then UpgradeFirmwareMessage goes out through the connector; a
// failed delivery becomes a send_error, which the state machine turns into a retry or a failure.
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { transition, type RecordInput } from '../core/record-machine.ts';
import { upgradeFirmwareMessage } from '../core/platform-messages.ts';
import type { Connector } from '../protocols/connector.ts';
import type { UpgradeState } from '../db/queries/upgrade-state.ts';
import { changeOf, stateAfter } from '../db/queries/record-changes.ts';
import type { FirmwareOffers } from './firmware-offers.ts';
import type { RecordStore } from './record-store.ts';

export interface UpgradeSenderDeps {
  store: RecordStore;
  connector: Connector;
  offers: FirmwareOffers;
  logger: Logger;
  /** `queuedAt`: when the record was handed to the queue (epoch ms), for the dispatch latency. */
  onSent?: (state: UpgradeState, queuedAt: number | null) => void;
  onSendError?: (state: UpgradeState, detail: string) => void;
}

export type SendOutcome =
  /** the record was marked sent and the message delivered */
  | { kind: 'sent'; state: UpgradeState }
  /** the record was marked sent but delivery failed; the failure is recorded */
  | { kind: 'send_error'; state: UpgradeState }
  /** the record moved on before it could be marked sent: nothing was sent */
  | { kind: 'stale' };

export class UpgradeSender {
  private readonly deps: UpgradeSenderDeps;

  constructor(deps: UpgradeSenderDeps) {
    this.deps = deps;
  }

  /** Applies one input to the record; the record as written, or undefined if it moved on. */
  async apply(state: UpgradeState, input: RecordInput): Promise<UpgradeState | undefined> {
    const result = transition(state.snapshot, input, state.policy);
    if (!result.changed) return state;
    const change = changeOf(state, result);
    const outcome = await this.deps.store.apply(change);
    return outcome === 'applied' ? stateAfter(state, change) : undefined;
  }

  /** Sends the record's next attempt: marks it sent, then delivers the message. */
  async send(state: UpgradeState): Promise<SendOutcome> {
    const now = Date.now();
    const messageId = randomUUID();
    const sent = await this.apply(state, { type: 'send', now, messageId });
    if (!sent || sent === state) return { kind: 'stale' };
    return this.deliver(sent, state.snapshot.queuedAt);
  }

  /** Delivers the attempt a record was marked sent for (`sent`, as written; queued at `queuedAt`). */
  async deliver(sent: UpgradeState, queuedAt: number | null): Promise<SendOutcome> {
    const now = Date.now();
    try {
      const offer = await this.deps.offers.offer(sent.firmwareId, { deviceId: sent.deviceId, timeoutSeconds: sent.policy.timeoutSeconds }, now);
      if (!offer) throw new Error(`firmware ${sent.firmwareId} no longer exists`);
      await this.deps.connector.send({
        messageType: 'UPGRADE_FIRMWARE',
        productId: sent.productId,
        deviceId: sent.deviceId,
        body: upgradeFirmwareMessage({ messageId: sent.snapshot.messageId ?? '', deviceId: sent.deviceId }, offer, sent.snapshot.attemptStartedAt ?? now),
      });
      this.deps.onSent?.(sent, queuedAt);
      return { kind: 'sent', state: sent };
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      this.deps.logger.warn({ recordId: sent.id, deviceId: sent.deviceId, err: detail }, 'send failed');
      this.deps.onSendError?.(sent, detail);
      await this.apply(sent, { type: 'send_error', now: Date.now(), detail });
      return { kind: 'send_error', state: sent };
    }
  }
}
