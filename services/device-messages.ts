// Device messages in: each is validated (a bad one is refused, logged and counted, and changes
// nothing), then applied in batches — one read of the records concerned, the state machine per
// message in arrival order, one guarded write — and the jobs of records that changed are woken.
import type { Logger } from 'pino';
import {
  INBOUND_MESSAGE_TYPES,
  decodeDeviceMessage,
  isRefusal,
  type DeviceMessage,
  type IncomingDeviceMessage,
  type ProgressMessage,
  type ReadFirmwareReplyMessage,
  type ReportFirmwareMessage,
  type RefusalReason,
  type RequestFirmwareMessage,
  type UpgradeReplyMessage,
} from '../core/messages.ts';
import { isFinal, transition, type RecordInput, type TimelineEvent } from '../core/record-machine.ts';
import { upgradeJobId } from '../core/jobs.ts';
import { bindingRefusal } from '../core/device-binding.ts';
import { KeyedRateLimiter } from '../core/rate-limiter.ts';
import type { Db } from '../db/connection.ts';
import { loadDeviceBindings, loadDeviceStates, type DeviceState, type UpgradeState } from '../db/queries/upgrade-state.ts';
import { applyRecordChanges, changeOf, type RecordChange, type RecordNote } from '../db/queries/record-changes.ts';
import { applyFirmwareReports } from '../db/queries/firmware-reports.ts';
import type { Connector, DeviceMessageOutcome } from '../protocols/connector.ts';
import type { PullAnswer } from './pull-requests.ts';
import type { Metrics } from '../service/metrics.ts';
import { Batcher } from './batcher.ts';
import { isTransientDbError, retryTransient } from '../db/transient-errors.ts';
import { RefusalLog } from './refusal-log.ts';
import type { JobWaker } from './job-waker.ts';
import type { TaskSupervisor } from './task-supervisor.ts';

type RecordMessage = ProgressMessage | UpgradeReplyMessage | ReportFirmwareMessage | ReadFirmwareReplyMessage;
/** A record message as batched: `fromPlatform` when posted with an API key rather than sent by a device. */
type Queued = RecordMessage & { fromPlatform?: boolean };

/** Handles what the record batcher does not: pull requests, and replies to reads. */
export interface DeviceRequestHandlers {
  requestFirmware?(message: RequestFirmwareMessage): Promise<PullAnswer>;
  readReply?(message: ReadFirmwareReplyMessage): void;
}

/** Where the answer to a request goes: back through the connector (MQTT), or to the caller (REST). */
export type ReplyRoute = 'connector' | 'caller';

export interface DeviceMessageServiceDeps {
  db: Db;
  waker: JobWaker;
  supervisor: TaskSupervisor;
  metrics: Metrics;
  logger: Logger;
  connector?: Connector;
  handlers?: DeviceRequestHandlers;
  /** A report from an unknown device registers it (default: only a platform's REST report does). */
  selfRegistration?: boolean;
  /** Per-device message rate (per second, 0: none) and burst; default: no limit. */
  rateLimit?: { ratePerSecond: number; burst: number };
}

const STALE_RETRIES = 5;
const SHARDS = 2;
/**
 * Received messages wait for the database however long it is away (the backlog cap bounds how many
 * wait); each round of retries is this long, and a line is logged between rounds.
 */
const RETRY_ROUND_MS = 60_000;

export class DeviceMessageService {
  private readonly deps: DeviceMessageServiceDeps;
  /** Shards by device: a device's messages go through one shard, one batch at a time, in order. */
  private readonly shards: Array<Batcher<Queued, DeviceMessageOutcome>>;
  /** Per device, before any database work: a flooding device costs no more than its rate. */
  private readonly limiter: KeyedRateLimiter;
  /** One log line per reason per 10 s, however many messages are refused or fail. */
  private readonly refusals: RefusalLog;
  private readonly failures: RefusalLog;
  /** Messages received (any route) and not yet applied or refused: the backlog, and its highest. */
  private inFlight = 0;
  private peakInFlight = 0;

  constructor(deps: DeviceMessageServiceDeps) {
    this.deps = deps;
    this.refusals = new RefusalLog(deps.logger);
    this.failures = new RefusalLog(deps.logger, { level: 'error', message: 'device messages not applied' });
    deps.metrics.observeDeviceMessageBacklog(() => this.inFlight, () => this.peakInFlight);
    this.shards = Array.from({ length: SHARDS }, () =>
      new Batcher<Queued, DeviceMessageOutcome>((messages) => this.applyBatch(messages), { maxItems: 1_000, maxWaitMs: 5, concurrency: 1 }),
    );
    this.limiter = new KeyedRateLimiter(deps.rateLimit ?? { ratePerSecond: 0, burst: 1 });
  }

  /** Messages received and waiting for their batch. */
  get pending(): number {
    return this.shards.reduce((sum, shard) => sum + shard.size, 0);
  }

  /** Messages received and not yet applied or refused, from every route (the back-pressure measure). */
  get backlog(): number {
    return this.inFlight;
  }

  /** Whether `count` more messages fit under `cap` (an idle service takes any batch). */
  hasRoom(count: number, cap: number): boolean {
    return this.inFlight === 0 || this.inFlight + count <= cap;
  }

  /** Resolves once every message received so far is applied. */
  async drain(): Promise<void> {
    await Promise.all(this.shards.map((shard) => shard.idle()));
    this.refusals.flush();
    this.failures.flush();
  }

  private shardOf(deviceId: string): Batcher<Queued, DeviceMessageOutcome> {
    let hash = 0;
    for (let i = 0; i < deviceId.length; i += 1) hash = (hash * 31 + deviceId.charCodeAt(i)) | 0;
    return this.shards[Math.abs(hash) % this.shards.length]!;
  }

  /** Validates and applies one message; never throws for bad input. */
  async receive(incoming: IncomingDeviceMessage, replyRoute: ReplyRoute = 'connector'): Promise<DeviceMessageOutcome> {
    this.inFlight += 1;
    if (this.inFlight > this.peakInFlight) this.peakInFlight = this.inFlight;
    try {
      return await this.receiveOne(incoming, replyRoute);
    } finally {
      this.inFlight -= 1;
    }
  }

  private async receiveOne(incoming: IncomingDeviceMessage, replyRoute: ReplyRoute): Promise<DeviceMessageOutcome> {
    const decoded = decodeDeviceMessage(incoming);
    if (isRefusal(decoded)) {
      return this.refuse(decoded.messageType ?? incoming.messageType ?? 'unknown', decoded.reason, decoded.detail, decoded.deviceId ?? incoming.deviceId, incoming.source);
    }
    if (!this.limiter.take(decoded.deviceId)) {
      return this.refuse(decoded.messageType, 'rate_limited', `device ${decoded.deviceId} sends more than its rate`, decoded.deviceId, incoming.source);
    }
    try {
      return await this.dispatch(decoded, replyRoute);
    } catch (err) {
      this.failures.note('internal_error', { err: (err as Error).message, messageType: decoded.messageType, deviceId: decoded.deviceId });
      this.deps.metrics.deviceMessages.inc({ type: decoded.messageType, result: 'error', reason: 'internal_error' });
      return { accepted: false, code: 'internal_error', message: 'the message could not be applied; send it again' };
    }
  }

  private async dispatch(message: DeviceMessage, replyRoute: ReplyRoute): Promise<DeviceMessageOutcome> {
    let outcome: DeviceMessageOutcome;
    if (message.messageType === 'REQUEST_FIRMWARE') {
      outcome = await this.requestFirmware(message, replyRoute);
    } else {
      outcome = await this.shardOf(message.deviceId).add(replyRoute === 'caller' ? { ...message, fromPlatform: true } : message);
      if (outcome.accepted && message.messageType === 'READ_FIRMWARE_REPLY') this.deps.handlers?.readReply?.(message);
    }
    if (!outcome.accepted && outcome.code) {
      return this.refuse(message.messageType, outcome.code as RefusalReason, outcome.message ?? outcome.code, message.deviceId);
    }
    this.deps.metrics.deviceMessages.inc({ type: message.messageType, result: outcome.code === 'ignored' ? 'ignored' : 'accepted', reason: '' });
    return outcome;
  }

  private async requestFirmware(message: RequestFirmwareMessage, replyRoute: ReplyRoute): Promise<DeviceMessageOutcome> {
    const handler = this.deps.handlers?.requestFirmware;
    if (!handler) return { accepted: false, code: 'not_supported', message: 'pull upgrades are not handled by this process' };
    const binding = (await loadDeviceBindings(this.deps.db, [message.deviceId])).get(message.deviceId);
    if (!binding) return { accepted: false, code: 'unknown_device', message: `device ${message.deviceId} is not registered` };
    const refused = bindingRefusal(message, binding, replyRoute === 'caller');
    if (refused) return { accepted: false, code: refused.code, message: refused.message };
    const { reply } = await handler(message);
    if (replyRoute === 'caller') return { accepted: true, reply };
    try {
      // the reply goes back the way the request came: through the gateway for a child device
      await this.deps.connector?.send({ messageType: 'REQUEST_FIRMWARE_REPLY', productId: binding.productId, deviceId: message.deviceId, via: message.gateway ?? null, body: reply });
      this.deps.metrics.messagesSent.inc({ type: 'REQUEST_FIRMWARE_REPLY', result: 'ok' });
    } catch (err) {
      this.deps.metrics.messagesSent.inc({ type: 'REQUEST_FIRMWARE_REPLY', result: 'error' });
      this.deps.logger.warn({ deviceId: message.deviceId, err: (err as Error).message }, 'pull reply not delivered; the attempt will time out');
    }
    return { accepted: true };
  }

  private refuse(type: string, reason: string, detail: string, deviceId?: string, source?: string): DeviceMessageOutcome {
    // a type sent through the REST API can be any string: only ours become label values
    const label = (INBOUND_MESSAGE_TYPES as readonly string[]).includes(type) ? type : 'unknown';
    this.deps.metrics.deviceMessages.inc({ type: label, result: 'refused', reason });
    this.refusals.note(reason, { messageType: type, deviceId, detail, source });
    return { accepted: false, code: reason, message: detail };
  }

  /**
   * One batch, tried again for as long as the database fails transiently (a deadlock, a restart, an
   * outage): the messages wait here rather than being lost, and the backlog cap keeps how many wait
   * bounded. A batch that fails otherwise is split in halves, each applied on its own, so one
   * message the database will never take fails alone instead of taking the batch with it.
   */
  private async applyBatch(messages: Queued[]): Promise<DeviceMessageOutcome[]> {
    const since = Date.now();
    for (let round = 1; ; round += 1) {
      try {
        return await retryTransient(() => this.applyBatchOnce(messages), {
          maxRetryTime: RETRY_ROUND_MS,
          onRetry: (err, attempt) => {
            if (round === 1 && attempt === 1) {
              this.deps.logger.warn({ err: (err as Error).message, messages: messages.length }, 'device messages not applied yet; trying again');
            }
          },
        });
      } catch (err) {
        if (isTransientDbError(err)) {
          this.deps.logger.warn({ err: (err as Error).message, messages: messages.length, waitingSeconds: Math.round((Date.now() - since) / 1000) }, 'device messages still waiting for the database');
          continue;
        }
        if (messages.length === 1) throw err;
        const half = Math.ceil(messages.length / 2);
        // in order: a device's messages stay in the order they arrived
        const first = await this.applyBatch(messages.slice(0, half));
        const second = await this.applyBatch(messages.slice(half));
        return [...first, ...second];
      }
    }
  }

  /**
   * The devices and their records first (one read), and who may speak for them: a message that
   * is not its device's to send is refused before anything is written. Then device reports, then
   * every record message through the state machine.
   */
  private async applyBatchOnce(messages: Queued[]): Promise<DeviceMessageOutcome[]> {
    const outcomes: Array<DeviceMessageOutcome | undefined> = new Array(messages.length);
    const devices = await loadDeviceStates(this.deps.db, messages.map((m) => m.deviceId));
    const reportIndexes: number[] = [];
    messages.forEach((m, i) => {
      const device = devices.get(m.deviceId);
      const refused = device ? bindingRefusal(m, device.binding, m.fromPlatform === true) : undefined;
      if (refused) outcomes[i] = { accepted: false, code: refused.code, message: refused.message };
      else if (m.messageType === 'REPORT_FIRMWARE' || m.messageType === 'READ_FIRMWARE_REPLY') {
        if (device || this.mayRegister(m)) reportIndexes.push(i);
        else outcomes[i] = { accepted: false, code: 'unknown_device', message: `device ${m.deviceId} is not registered${m.fromPlatform ? ' and the report names no product' : ''}` };
      }
    });
    const reportOutcomes = await applyFirmwareReports(
      this.deps.db,
      reportIndexes.map((i) => {
        const m = messages[i] as ReportFirmwareMessage | ReadFirmwareReplyMessage;
        return { deviceId: m.deviceId, productId: m.productId, version: m.version, properties: m.properties, timestamp: m.timestamp, register: this.mayRegister(m) };
      }),
    );
    const registered = new Set<string>();
    reportIndexes.forEach((messageIndex, k) => {
      const result = reportOutcomes[k];
      if (result === 'applied' && !devices.has(messages[messageIndex]!.deviceId)) registered.add(messages[messageIndex]!.deviceId);
      if (result === 'stale') outcomes[messageIndex] = { accepted: false, code: 'stale_report', message: 'an equal or newer report is already stored' };
      if (result === 'unknown_device') outcomes[messageIndex] = { accepted: false, code: 'unknown_device', message: `device ${messages[messageIndex]!.deviceId} is not registered and the report names no product` };
    });

    let pending = messages.map((_, i) => i).filter((i) => outcomes[i] === undefined);
    for (let round = 0; pending.length > 0; round += 1) {
      if (round > STALE_RETRIES) {
        for (const i of pending) outcomes[i] = { accepted: false, code: 'internal_error', message: 'record kept changing; send again' };
        break;
      }
      // the first round uses what was read above; a raced record is read again
      const states = round === 0 ? devices : await loadDeviceStates(this.deps.db, pending.map((i) => messages[i]!.deviceId));
      pending = await this.applyToRecords(messages, pending, outcomes, states, registered);
    }
    return outcomes.map((outcome) => outcome ?? { accepted: true });
  }

  /**
   * Whether a report may register its unknown device: a platform's report names the product;
   * a device's own only with self-registration on, and never a child's (its topic names no product).
   */
  private mayRegister(message: Queued): boolean {
    if (message.productId === undefined) return false;
    if (message.fromPlatform) return true;
    return this.deps.selfRegistration === true && message.messageType === 'REPORT_FIRMWARE' && !message.gateway;
  }

  /** Applies messages[indexes] to their records; returns the indexes to try again (raced). */
  private async applyToRecords(
    messages: RecordMessage[],
    indexes: number[],
    outcomes: Array<DeviceMessageOutcome | undefined>,
    devices: Map<string, DeviceState>,
    registered: Set<string>,
  ): Promise<number[]> {
    const working = new Map<string, { original: UpgradeState; current: UpgradeState; events: TimelineEvent[]; wake: boolean }>();
    const notes: RecordNote[] = [];
    const touched = new Map<string, number[]>();

    for (const i of indexes) {
      const message = messages[i]!;
      const isReport = message.messageType === 'REPORT_FIRMWARE' || message.messageType === 'READ_FIRMWARE_REPLY';
      const entry = working.get(message.deviceId);
      const state = entry?.current ?? devices.get(message.deviceId)?.upgrade;
      if (!state) {
        if (isReport) outcomes[i] = { accepted: true };
        else if (!devices.has(message.deviceId) && !registered.has(message.deviceId)) outcomes[i] = { accepted: false, code: 'unknown_device', message: `device ${message.deviceId} is not registered` };
        else outcomes[i] = { accepted: false, code: 'no_active_upgrade', message: `device ${message.deviceId} has no upgrade` };
        continue;
      }
      if (message.messageType === 'UPGRADE_FIRMWARE_PROGRESS' && message.version !== state.snapshot.targetVersion) {
        outcomes[i] = {
          accepted: false,
          code: 'version_mismatch',
          message: `progress for version ${message.version}, but device ${message.deviceId} is upgrading to ${state.snapshot.targetVersion}`,
        };
        continue;
      }
      if (!isFinal(state.snapshot.state) && state.snapshot.state === 'waiting' && !isReport) {
        outcomes[i] = { accepted: false, code: 'not_started', message: `the upgrade of device ${message.deviceId} has not been sent yet` };
        continue;
      }
      const result = transition(state.snapshot, toInput(message, Date.now()), state.policy);
      if (!result.changed) {
        for (const event of result.events) notes.push({ recordId: state.id, event });
        outcomes[i] = result.events.some((e) => e.type === 'ignored') ? { accepted: true, code: 'ignored', message: result.events[0]!.message } : { accepted: true };
        continue;
      }
      const next = { ...state, snapshot: result.record };
      if (entry) {
        entry.current = next;
        entry.events.push(...result.events);
        entry.wake ||= result.wakeJob;
      } else {
        working.set(message.deviceId, { original: state, current: next, events: [...result.events], wake: result.wakeJob });
      }
      // a change with no event (a report of another version: heard from) is not an ignored message
      const ignored = result.events.length > 0 && result.events.every((e) => e.type === 'ignored');
      outcomes[i] = ignored ? { accepted: true, code: 'ignored', message: result.events[0]?.message } : { accepted: true };
      const list = touched.get(message.deviceId) ?? [];
      list.push(i);
      touched.set(message.deviceId, list);
    }

    const changes: RecordChange[] = [...working.values()].map(({ original, current, events }) => changeOf(original, { record: current.snapshot, events }));
    const { applied, stale } = await applyRecordChanges(this.deps.db, changes, notes);

    const wake: string[] = [];
    const finishedTasks = new Set<string>();
    for (const change of applied) {
      const entry = working.get(change.deviceId)!;
      const jobId = upgradeJobId(change.id, entry.original.dispatches);
      if (entry.wake) wake.push(jobId);
      // bull-board shows the device's progress on its job (100 once it succeeded)
      if (change.record.state === 'processing' || change.record.state === 'success') {
        this.deps.waker.mirrorProgress(jobId, change.record.progress);
      }
      if (isFinal(change.record.state)) finishedTasks.add(change.taskId);
    }
    this.deps.waker.wake(wake);
    this.deps.supervisor.touch(finishedTasks);
    this.deps.metrics.observeFinished(applied);

    const retry: number[] = [];
    for (const change of stale) retry.push(...(touched.get(change.deviceId) ?? []));
    return retry;
  }
}

function toInput(message: RecordMessage, now: number): RecordInput {
  switch (message.messageType) {
    case 'UPGRADE_FIRMWARE_PROGRESS':
      return {
        type: 'progress',
        now,
        version: message.version,
        progress: message.progress,
        complete: message.complete,
        success: message.success,
        errorReason: message.errorReason,
      };
    case 'UPGRADE_FIRMWARE_REPLY':
      return message.success
        ? { type: 'ack', now, messageId: message.messageId }
        : { type: 'reject', now, messageId: message.messageId, message: message.message ?? message.code };
    case 'REPORT_FIRMWARE':
    case 'READ_FIRMWARE_REPLY':
      return { type: 'report', now, version: message.version };
  }
}
