// How a batch of device messages becomes one outcome per message and one change per record: who
// may speak for a device, then each device's messages through the state machine in arrival order,
// folded into one change of its record; a change whose record moved on meanwhile is folded again
// from a fresh read. No I/O here: DeviceMessageService (device-messages.ts) reads and writes.
import { isFinal, transition, type RecordInput, type TimelineEvent } from '../core/record-machine.ts';
import { upgradeJobId } from '../core/jobs.ts';
import { bindingRefusal } from '../core/device-binding.ts';
import type { ProgressMessage, ReadFirmwareReplyMessage, ReportFirmwareMessage, UpgradeReplyMessage } from '../core/messages.ts';
import type { DeviceState, UpgradeState } from '../db/queries/upgrade-state.ts';
import { changeOf, type RecordChange, type RecordNote } from '../db/queries/record-changes.ts';
import type { ReportOutcome } from '../db/queries/firmware-reports.ts';
import type { DeviceMessageOutcome } from '../protocols/connector.ts';

export type RecordMessage = ProgressMessage | UpgradeReplyMessage | ReportFirmwareMessage | ReadFirmwareReplyMessage;
/** A record message as batched: `fromPlatform` when posted with an API key rather than sent by a device. */
export type BatchedMessage = RecordMessage & { fromPlatform?: boolean };

/** Times a batch reads its records again after a write found them moved on. */
export const STALE_RETRIES = 5;

function isReport(message: RecordMessage): message is ReportFirmwareMessage | ReadFirmwareReplyMessage {
  return message.messageType === 'REPORT_FIRMWARE' || message.messageType === 'READ_FIRMWARE_REPLY';
}

/**
 * Whether a report may register its unknown device: a platform's report names the product;
 * a device's own only with self-registration on, and never a child's (its topic names no product).
 */
export function mayRegister(message: BatchedMessage, selfRegistration: boolean): boolean {
  if (message.productId === undefined) return false;
  if (message.fromPlatform) return true;
  return selfRegistration && message.messageType === 'REPORT_FIRMWARE' && !message.gateway;
}

export interface ScreenedBatch {
  /** Messages refused before anything is written, by batch index. */
  outcomes: Map<number, DeviceMessageOutcome>;
  /** Batch indexes of the device reports to store (their device is known, or may register). */
  reports: number[];
}

/**
 * The first pass over a batch, on the devices as read: a message that is not its device's to send
 * is refused, and so is a report of an unknown device that may not register it.
 */
export function screenDeviceMessages(
  messages: readonly BatchedMessage[],
  devices: ReadonlyMap<string, DeviceState>,
  selfRegistration: boolean,
): ScreenedBatch {
  const outcomes = new Map<number, DeviceMessageOutcome>();
  const reports: number[] = [];
  messages.forEach((m, i) => {
    const device = devices.get(m.deviceId);
    const refused = device ? bindingRefusal(m, device.binding, m.fromPlatform === true) : undefined;
    if (refused) outcomes.set(i, { accepted: false, code: refused.code, message: refused.message });
    else if (isReport(m)) {
      if (device || mayRegister(m, selfRegistration)) reports.push(i);
      else outcomes.set(i, { accepted: false, code: 'unknown_device', message: `device ${m.deviceId} is not registered${m.fromPlatform ? ' and the report names no product' : ''}` });
    }
  });
  return { outcomes, reports };
}

/**
 * What storing the reports (`results`, one per index of `reports`) means for their messages:
 * refusals of stale reports and of unknown devices, and the devices the reports registered.
 */
export function reportResults(
  messages: readonly RecordMessage[],
  reports: readonly number[],
  results: ReadonlyArray<ReportOutcome | undefined>,
  devices: ReadonlyMap<string, DeviceState>,
): { outcomes: Map<number, DeviceMessageOutcome>; registered: Set<string> } {
  const outcomes = new Map<number, DeviceMessageOutcome>();
  const registered = new Set<string>();
  reports.forEach((messageIndex, k) => {
    const result = results[k];
    const deviceId = messages[messageIndex]!.deviceId;
    if (result === 'applied' && !devices.has(deviceId)) registered.add(deviceId);
    if (result === 'stale') outcomes.set(messageIndex, { accepted: false, code: 'stale_report', message: 'an equal or newer report is already stored' });
    if (result === 'unknown_device') outcomes.set(messageIndex, { accepted: false, code: 'unknown_device', message: `device ${deviceId} is not registered and the report names no product` });
  });
  return { outcomes, registered };
}

/** A record's change from a batch, and what its job needs once it is written. */
export interface FoldedRecord {
  change: RecordChange;
  /** The job following the record (its id as the record was read). */
  jobId: string;
  /** The job must run now (the record became final, or a retry is due). */
  wakeJob: boolean;
  /** Batch indexes of the messages folded into the change, in arrival order: tried again together if it is stale. */
  messages: number[];
}

export interface DeviceMessageFold {
  /** By device: one change of its record, every message that changed it folded in. */
  records: Map<string, FoldedRecord>;
  /** Events of messages that changed nothing (an ignored message on the record's timeline). */
  notes: RecordNote[];
  /** The outcome of each message folded, by batch index. */
  outcomes: Map<number, DeviceMessageOutcome>;
}

/**
 * Applies messages[indexes] to their devices' records (`devices`, as read), in arrival order, each
 * message on the record as the previous ones left it. `registered`: devices this batch's reports
 * registered (they have no record yet). `now` is read once per message.
 */
export function foldDeviceMessages(
  messages: readonly RecordMessage[],
  indexes: readonly number[],
  devices: ReadonlyMap<string, DeviceState>,
  registered: ReadonlySet<string>,
  now: () => number = Date.now,
): DeviceMessageFold {
  const working = new Map<string, { original: UpgradeState; current: UpgradeState; events: TimelineEvent[]; wake: boolean; messages: number[] }>();
  const notes: RecordNote[] = [];
  const outcomes = new Map<number, DeviceMessageOutcome>();

  for (const i of indexes) {
    const message = messages[i]!;
    const report = isReport(message);
    const entry = working.get(message.deviceId);
    const state = entry?.current ?? devices.get(message.deviceId)?.upgrade;
    if (!state) {
      if (report) outcomes.set(i, { accepted: true });
      else if (!devices.has(message.deviceId) && !registered.has(message.deviceId)) outcomes.set(i, { accepted: false, code: 'unknown_device', message: `device ${message.deviceId} is not registered` });
      else outcomes.set(i, { accepted: false, code: 'no_active_upgrade', message: `device ${message.deviceId} has no upgrade` });
      continue;
    }
    if (message.messageType === 'UPGRADE_FIRMWARE_PROGRESS' && message.version !== state.snapshot.targetVersion) {
      outcomes.set(i, {
        accepted: false,
        code: 'version_mismatch',
        message: `progress for version ${message.version}, but device ${message.deviceId} is upgrading to ${state.snapshot.targetVersion}`,
      });
      continue;
    }
    if (!isFinal(state.snapshot.state) && state.snapshot.state === 'waiting' && !report) {
      outcomes.set(i, { accepted: false, code: 'not_started', message: `the upgrade of device ${message.deviceId} has not been sent yet` });
      continue;
    }
    const result = transition(state.snapshot, toInput(message, now()), state.policy);
    if (!result.changed) {
      for (const event of result.events) notes.push({ recordId: state.id, event });
      outcomes.set(i, result.events.some((e) => e.type === 'ignored') ? { accepted: true, code: 'ignored', message: result.events[0]!.message } : { accepted: true });
      continue;
    }
    const next = { ...state, snapshot: result.record };
    if (entry) {
      entry.current = next;
      entry.events.push(...result.events);
      entry.wake ||= result.wakeJob;
      entry.messages.push(i);
    } else {
      working.set(message.deviceId, { original: state, current: next, events: [...result.events], wake: result.wakeJob, messages: [i] });
    }
    // a change with no event (a report of another version: heard from) is not an ignored message
    const ignored = result.events.length > 0 && result.events.every((e) => e.type === 'ignored');
    outcomes.set(i, ignored ? { accepted: true, code: 'ignored', message: result.events[0]?.message } : { accepted: true });
  }

  const records = new Map<string, FoldedRecord>();
  for (const [deviceId, { original, current, events, wake, messages: folded }] of working) {
    records.set(deviceId, {
      change: changeOf(original, { record: current.snapshot, events }),
      jobId: upgradeJobId(original.id, original.snapshot.dispatches),
      wakeJob: wake,
      messages: folded,
    });
  }
  return { records, notes, outcomes };
}

/** The batch indexes to fold again: every message folded into a change that was `stale`. */
export function staleMessages(fold: DeviceMessageFold, stale: readonly RecordChange[]): number[] {
  return stale.flatMap((change) => fold.records.get(change.deviceId)?.messages ?? []);
}

/** Where applyRecordMessages reads and writes. */
export interface RecordMessageStore {
  /** The devices' states read again (after a write found their records moved on). */
  reload(deviceIds: string[]): Promise<Map<string, DeviceState>>;
  /** Writes a fold's changes and notes; returns the changes whose record moved on meanwhile. */
  write(fold: DeviceMessageFold): Promise<RecordChange[]>;
}

/**
 * Folds messages[indexes] into their records and writes them; the messages of a record that moved
 * on meanwhile are folded again from a fresh read, up to STALE_RETRIES times, then refused with
 * internal_error. The first round uses `devices`, as the batch read them. Returns their outcomes.
 */
export async function applyRecordMessages(
  messages: readonly RecordMessage[],
  indexes: readonly number[],
  devices: ReadonlyMap<string, DeviceState>,
  registered: ReadonlySet<string>,
  store: RecordMessageStore,
  now: () => number = Date.now,
): Promise<Map<number, DeviceMessageOutcome>> {
  const outcomes = new Map<number, DeviceMessageOutcome>();
  let pending = [...indexes];
  for (let round = 0; pending.length > 0; round += 1) {
    if (round > STALE_RETRIES) {
      for (const i of pending) outcomes.set(i, { accepted: false, code: 'internal_error', message: 'record kept changing; send again' });
      break;
    }
    const states = round === 0 ? devices : await store.reload(pending.map((i) => messages[i]!.deviceId));
    const fold = foldDeviceMessages(messages, pending, states, registered, now);
    for (const [i, outcome] of fold.outcomes) outcomes.set(i, outcome);
    pending = staleMessages(fold, await store.write(fold));
  }
  return outcomes;
}

/** The state machine's input for a record message received at `now`. */
export function toInput(message: RecordMessage, now: number): RecordInput {
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
