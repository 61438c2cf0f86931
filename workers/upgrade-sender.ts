// Sends one attempt of an upgrade: what its message needs from PostgreSQL (the firmware offer, the
// device's gateway route) is read first, then the record is marked sent (a guarded write, so a
// record that moved on is never sent), then UpgradeFirmwareMessage goes out through the connector.
// Between the write and the message there is only the transport, so a database that drops right
// after the commit cannot lose the message. A failed delivery becomes a send_error, which the state
// machine turns into a retry or a failure; a database that is away is never one.
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { transition, type RecordInput } from '../core/record-machine.ts';
import type { FirmwareOffer, GatewayRoute } from '../core/messages.ts';
import { upgradeFirmwareMessage } from '../core/platform-messages.ts';
import type { Connector } from '../protocols/connector.ts';
import type { UpgradeState } from '../db/queries/upgrade-state.ts';
import { changeOf, stateAfter } from '../db/queries/record-changes.ts';
import { DatabaseUnavailableError, isTransientDbError } from '../db/transient-errors.ts';
import type { FirmwareOffers } from './firmware-offers.ts';
import type { GatewayDirectory } from './gateway-routes.ts';
import type { RecordStore } from './record-store.ts';

export interface UpgradeSenderDeps {
  store: Pick<RecordStore, 'apply' | 'load'>;
  connector: Connector;
  offers: Pick<FirmwareOffers, 'offer'>;
  routes: Pick<GatewayDirectory, 'routeTo'>;
  logger: Pick<Logger, 'warn'>;
  /** `queuedAt`: when the record was handed to the queue (epoch ms), for the dispatch latency. */
  onSent?: (state: UpgradeState, queuedAt: number | null) => void;
  onSendError?: (state: UpgradeState, detail: string) => void;
}

/** What a send's message needs from the database, read before the send is written. */
export type PreparedSend =
  | { ready: true; offer: FirmwareOffer; via: GatewayRoute | null }
  /** the message cannot be made (its firmware was deleted, its gateway is unknown): a send_error once written */
  | { ready: false; detail: string };

export type SendOutcome =
  /** the record was marked sent and the message delivered */
  | { kind: 'sent'; state: UpgradeState }
  /** the record was marked sent but delivery failed; the failure is recorded */
  | { kind: 'send_error'; state: UpgradeState }
  /** the record moved on before it could be marked sent: nothing was sent */
  | { kind: 'stale' };

type SendInput = Extract<RecordInput, { type: 'send' }>;

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

  /**
   * Reads what the record's message needs. Throws a DatabaseUnavailableError when PostgreSQL stays
   * away longer than those reads wait: then nothing is written, and the send is made later.
   */
  async prepare(state: UpgradeState, now = Date.now()): Promise<PreparedSend> {
    try {
      const [offer, via] = await Promise.all([
        this.deps.offers.offer(state.firmwareId, { deviceId: state.deviceId, timeoutSeconds: state.policy.timeoutSeconds }, now),
        this.deps.routes.routeTo(state.deviceId, now),
      ]);
      if (!offer) return { ready: false, detail: `firmware ${state.firmwareId} no longer exists` };
      return { ready: true, offer, via };
    } catch (error) {
      // only the database is asked here: a transient failure is its absence, not the device's
      if (isTransientDbError(error)) throw error instanceof DatabaseUnavailableError ? error : new DatabaseUnavailableError(error);
      return { ready: false, detail: messageOf(error) };
    }
  }

  /** Sends the record's next attempt: reads what it needs, marks it sent, then delivers the message. */
  async send(state: UpgradeState): Promise<SendOutcome> {
    const now = Date.now();
    const prepared = await this.prepare(state, now);
    const sent = await this.markSent(state, { type: 'send', now, messageId: randomUUID() });
    if (!sent) return { kind: 'stale' };
    return this.deliver(sent, prepared, state.snapshot.queuedAt);
  }

  /**
   * Delivers the attempt a record was marked sent for (`sent`, as written; queued at `queuedAt`)
   * with what `prepare` read for it. Only the transport is used: every failure here is a send_error.
   */
  async deliver(sent: UpgradeState, prepared: PreparedSend, queuedAt: number | null): Promise<SendOutcome> {
    const detail = prepared.ready ? await this.transmit(sent, prepared) : prepared.detail;
    if (detail === undefined) {
      this.deps.onSent?.(sent, queuedAt);
      return { kind: 'sent', state: sent };
    }
    this.deps.logger.warn({ recordId: sent.id, deviceId: sent.deviceId, err: detail }, 'send failed');
    this.deps.onSendError?.(sent, detail);
    await this.apply(sent, { type: 'send_error', now: Date.now(), detail });
    return { kind: 'send_error', state: sent };
  }

  /** The message through the connector: undefined once it accepted it, else why not. */
  private async transmit(sent: UpgradeState, prepared: Extract<PreparedSend, { ready: true }>): Promise<string | undefined> {
    try {
      await this.deps.connector.send({
        messageType: 'UPGRADE_FIRMWARE',
        productId: sent.productId,
        deviceId: sent.deviceId,
        via: prepared.via,
        body: upgradeFirmwareMessage({ messageId: sent.snapshot.messageId ?? '', deviceId: sent.deviceId }, prepared.offer, sent.snapshot.attemptStartedAt ?? Date.now()),
      });
      return undefined;
    } catch (error) {
      return messageOf(error);
    }
  }

  /**
   * Writes the send: the record as written, or undefined if it moved on. A write whose commit
   * answer was lost (the database restarting) is tried again by the store and then looks stale;
   * the record holding this send's message id, and nothing since, says it was written after all.
   */
  private async markSent(state: UpgradeState, input: SendInput): Promise<UpgradeState | undefined> {
    const sent = await this.apply(state, input);
    if (sent === state) return undefined;
    if (sent) return sent;
    const current = await this.deps.store.load(state.id);
    return current && current.revision === state.revision + 1 && current.snapshot.messageId === input.messageId ? current : undefined;
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
