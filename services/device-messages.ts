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
  type ReadFirmwareReplyMessage,
  type ReportFirmwareMessage,
  type OutcomeRefusalCode,
  type RequestFirmwareMessage,
  type RequestFirmwareReply,
} from '../core/messages.ts';
import { isFinal } from '../core/record-machine.ts';
import { bindingRefusal } from '../core/device-binding.ts';
import { KeyedRateLimiter } from '../core/rate-limiter.ts';
import type { Db } from '../db/connection.ts';
import { loadDeviceBindings, loadDeviceStates } from '../db/queries/upgrade-state.ts';
import { applyRecordChanges, type RecordChange } from '../db/queries/record-changes.ts';
import { applyFirmwareReports } from '../db/queries/firmware-reports.ts';
import type { Connector, DeviceMessageOutcome } from '../protocols/connector.ts';
import type { Metrics } from './metrics.ts';
import { Batcher } from '../core/batcher.ts';
import { isTransientDbError, retryTransient } from '../db/transient-errors.ts';
import { RefusalLog } from './refusal-log.ts';
import {
  applyRecordMessages,
  mayRegister,
  reportResults,
  screenDeviceMessages,
  type BatchedMessage,
  type DeviceMessageFold,
} from './device-message-batch.ts';

/** Handles what the record batcher does not: pull requests, and replies to reads. */
/** A pull request's answer: the reply, and the record that started an attempt, if any. */
export interface PullAnswer {
  reply: RequestFirmwareReply;
  recordId?: number;
}

/** The jobs that follow records (workers/job-waker.ts): woken when their record changed. */
export interface RecordJobs {
  wake(jobIds: Iterable<string>): void;
  /** bull-board shows a device's progress on its job. */
  mirrorProgress(jobId: string, progress: number): void;
}

/** Who completes or aborts tasks whose records ended (workers/task-supervisor.ts). */
export interface TaskReviews {
  touch(taskIds: Iterable<string>): void;
}

export interface DeviceRequestHandlers {
  requestFirmware?(message: RequestFirmwareMessage): Promise<PullAnswer>;
  readReply?(message: ReadFirmwareReplyMessage): void;
}

/** Where the answer to a request goes: back through the connector (MQTT), or to the caller (REST). */
export type ReplyRoute = 'connector' | 'caller';

export interface DeviceMessageServiceDeps {
  db: Db;
  waker: RecordJobs;
  supervisor: TaskReviews;
  metrics: Metrics;
  logger: Logger;
  connector?: Connector;
  handlers?: DeviceRequestHandlers;
  /** A report from an unknown device registers it (default: only a platform's REST report does). */
  selfRegistration?: boolean;
  /** Per-device message rate (per second, 0: none) and burst; default: no limit. */
  rateLimit?: { ratePerSecond: number; burst: number };
  /** Batches written at once (DEVICE_MESSAGE_SHARDS); a device's messages always share one. */
  shards?: number;
}

/** Two writers keep PostgreSQL busy while one waits for its answer; more mostly add lock waits. */
const DEFAULT_SHARDS = 2;
/**
 * Received messages wait for the database however long it is away (the backlog cap bounds how many
 * wait); each round of retries is this long, and a line is logged between rounds.
 */
const RETRY_ROUND_MS = 60_000;

export class DeviceMessageService {
  private readonly deps: DeviceMessageServiceDeps;
  /** Shards by device: a device's messages go through one shard, one batch at a time, in order. */
  private readonly shards: Array<Batcher<BatchedMessage, DeviceMessageOutcome>>;
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
    this.shards = Array.from({ length: deps.shards ?? DEFAULT_SHARDS }, () =>
      new Batcher<BatchedMessage, DeviceMessageOutcome>((messages) => this.applyBatch(messages), { maxItems: 1_000, maxWaitMs: 5, concurrency: 1 }),
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

  private shardOf(deviceId: string): Batcher<BatchedMessage, DeviceMessageOutcome> {
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
    if (!outcome.accepted) {
      return this.refuse(message.messageType, outcome.code, outcome.message ?? outcome.code, message.deviceId);
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

  private refuse(type: string, reason: OutcomeRefusalCode, detail: string, deviceId?: string, source?: string): DeviceMessageOutcome {
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
  private async applyBatch(messages: BatchedMessage[]): Promise<DeviceMessageOutcome[]> {
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
   * every record message through the state machine (device-message-batch.ts).
   */
  private async applyBatchOnce(messages: BatchedMessage[]): Promise<DeviceMessageOutcome[]> {
    const selfRegistration = this.deps.selfRegistration === true;
    const devices = await loadDeviceStates(this.deps.db, messages.map((m) => m.deviceId));
    const screened = screenDeviceMessages(messages, devices, selfRegistration);
    const stored = await applyFirmwareReports(
      this.deps.db,
      screened.reports.map((i) => {
        const m = messages[i] as ReportFirmwareMessage | ReadFirmwareReplyMessage;
        return { deviceId: m.deviceId, productId: m.productId, version: m.version, properties: m.properties, timestamp: m.timestamp, register: mayRegister(m, selfRegistration) };
      }),
    );
    const reports = reportResults(messages, screened.reports, stored, devices);
    const refused = new Map([...screened.outcomes, ...reports.outcomes]);
    const pending = messages.map((_, i) => i).filter((i) => !refused.has(i));
    const applied = await applyRecordMessages(messages, pending, devices, reports.registered, {
      reload: (deviceIds) => loadDeviceStates(this.deps.db, deviceIds),
      write: (fold) => this.writeFold(fold),
    });
    return messages.map((_, i) => refused.get(i) ?? applied.get(i) ?? { accepted: true });
  }

  /** Writes a fold's changes and notes, wakes the jobs of the records that changed; returns the stale changes. */
  private async writeFold(fold: DeviceMessageFold): Promise<RecordChange[]> {
    const changes = [...fold.records.values()].map((record) => record.change);
    const { applied, stale } = await applyRecordChanges(this.deps.db, changes, fold.notes);

    const wake: string[] = [];
    const finishedTasks = new Set<string>();
    for (const change of applied) {
      const { jobId, wakeJob } = fold.records.get(change.deviceId)!;
      if (wakeJob) wake.push(jobId);
      // bull-board shows the device's progress on its job (100 once it succeeded)
      if (change.record.state === 'processing' || change.record.state === 'success') {
        this.deps.waker.mirrorProgress(jobId, change.record.progress);
      }
      if (isFinal(change.record.state)) finishedTasks.add(change.taskId);
    }
    this.deps.waker.wake(wake);
    this.deps.supervisor.touch(finishedTasks);
    this.deps.metrics.observeFinished(applied);
    return stale;
  }
}
