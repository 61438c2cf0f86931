// A batch of device messages without services (workers/device-message-batch.ts): who may speak
// for a device, which reports are stored or may register their device, and how each device's
// messages go through the state machine in arrival order and fold into one change of its record —
// one outcome per message (accepted, ignored, or refused with a code), notes for the messages that
// changed nothing, and a change whose record moved on meanwhile folded again from a fresh read.
import { describe, expect, it } from 'vitest';
import {
  STALE_RETRIES,
  applyRecordMessages,
  foldDeviceMessages,
  mayRegister,
  reportResults,
  screenDeviceMessages,
  staleMessages,
  type BatchedMessage,
  type DeviceMessageFold,
  type RecordMessage,
  type RecordMessageStore,
} from '../../services/device-message-batch.ts';
import type { DeviceBinding } from '../../core/device-binding.ts';
import { upgradeJobId } from '../../core/jobs.ts';
import type {
  GatewayRoute,
  ProgressMessage,
  ReadFirmwareReplyMessage,
  ReportFirmwareMessage,
  UpgradeReplyMessage,
} from '../../core/messages.ts';
import type { RecordSnapshot } from '../../core/record-machine.ts';
import { stateAfter, type RecordChange, type RecordNote } from '../../db/queries/record-changes.ts';
import type { DeviceState, UpgradeState } from '../../db/queries/upgrade-state.ts';
import type { DeviceMessageOutcome } from '../../protocols/connector.ts';
import { POLICY, T0, queuedRecord, sentRecord } from '../helpers/record-fixtures.ts';


const WAITING: RecordSnapshot = queuedRecord(60_000);

/** Attempt 1 sent 10 s before T0 as message m-1, not heard from yet. */
const PROCESSING: RecordSnapshot = sentRecord(WAITING);

const BINDING: DeviceBinding = { productId: 'prod', gatewayId: null, gatewayProductId: null };

let nextRecordId = 100;

function record(deviceId: string, snapshot: Partial<RecordSnapshot> = {}, overrides: Partial<Omit<UpgradeState, 'snapshot'>> = {}): UpgradeState {
  return {
    id: nextRecordId++,
    taskId: 'task-1',
    firmwareId: 'fw-1',
    deviceId,
    productId: 'prod',
    wave: 0,
    revision: 3,
    taskState: 'running',
    taskSuccess: 0,
    windows: null,
    rollout: {},
    policy: POLICY,
    snapshot: { ...PROCESSING, ...snapshot },
    ...overrides,
  };
}

/** Registered devices: each with its record (undefined: none) and binding. */
function devicesOf(entries: Record<string, UpgradeState | undefined | { upgrade: UpgradeState | undefined; binding: DeviceBinding }>): Map<string, DeviceState> {
  return new Map(
    Object.entries(entries).map(([deviceId, entry]) => [
      deviceId,
      entry && 'binding' in entry ? entry : { binding: BINDING, upgrade: entry },
    ]),
  );
}

const addressed = (deviceId: string) => ({ deviceId, productId: 'prod' as string | undefined, timestamp: undefined });

function progress(deviceId: string, value: number, extra: Partial<ProgressMessage> = {}): ProgressMessage {
  return { ...addressed(deviceId), messageType: 'UPGRADE_FIRMWARE_PROGRESS', progress: value, complete: false, success: true, version: '2.0.0', errorReason: undefined, ...extra };
}
const done = (deviceId: string) => progress(deviceId, 100, { complete: true });

function reply(deviceId: string, messageId: string, extra: Partial<UpgradeReplyMessage> = {}): UpgradeReplyMessage {
  return { ...addressed(deviceId), messageType: 'UPGRADE_FIRMWARE_REPLY', messageId, success: true, code: undefined, message: undefined, ...extra };
}

function report(deviceId: string, version: string, extra: Partial<ReportFirmwareMessage> & { fromPlatform?: boolean } = {}): BatchedMessage {
  return { ...addressed(deviceId), messageType: 'REPORT_FIRMWARE', version, properties: undefined, ...extra };
}

function readReply(deviceId: string, version: string, extra: Partial<ReadFirmwareReplyMessage> = {}): ReadFirmwareReplyMessage {
  return { ...addressed(deviceId), messageType: 'READ_FIRMWARE_REPLY', messageId: 'r-1', version, properties: undefined, ...extra };
}

/** A clock that moves 1 s on each read: the first message is at T0 + 1 s, the next at T0 + 2 s… */
function ticking(start = T0): () => number {
  let now = start;
  return () => (now += 1_000);
}

const all = (messages: readonly unknown[]) => messages.map((_, i) => i);

function fold(messages: RecordMessage[], devices: Map<string, DeviceState>, registered: Set<string> = new Set(), now = ticking()): DeviceMessageFold {
  return foldDeviceMessages(messages, all(messages), devices, registered, now);
}

/** The outcomes in batch order. */
const outcomesOf = (result: { outcomes: Map<number, DeviceMessageOutcome> }, count: number) =>
  Array.from({ length: count }, (_, i) => result.outcomes.get(i));

describe('foldDeviceMessages: one outcome per message', () => {
  it('a batch for several devices: accepted, ignored, or refused with the reason', () => {
    const a = record('a');
    const b = record('b');
    const c = record('c');
    const waiting = record('w', WAITING);
    const finished = record('done', { state: 'success', progress: 100, completedAt: T0 - 1_000 });
    const devices = devicesOf({ a, b, c, idle: undefined, w: waiting, done: finished });
    const messages: RecordMessage[] = [
      reply('a', 'm-1'),
      progress('b', 40),
      progress('c', 10, { version: '9.9.9' }),
      progress('stranger', 10),
      progress('idle', 10),
      reply('w', 'm-1'),
      progress('done', 50),
      report('idle', '1.0.0'),
      report('w', '1.0.0'),
      readReply('stranger', '1.0.0'),
    ];
    const result = fold(messages, devices);
    expect(outcomesOf(result, messages.length)).toEqual([
      { accepted: true },
      { accepted: true },
      { accepted: false, code: 'version_mismatch', message: 'progress for version 9.9.9, but device c is upgrading to 2.0.0' },
      { accepted: false, code: 'unknown_device', message: 'device stranger is not registered' },
      { accepted: false, code: 'no_active_upgrade', message: 'device idle has no upgrade' },
      { accepted: false, code: 'not_started', message: 'the upgrade of device w has not been sent yet' },
      { accepted: true, code: 'ignored', message: 'progress 50 after the record was success' },
      // a report needs no record: it was stored as the device's version
      { accepted: true },
      // a waiting record is not changed by a report, and no event is written
      { accepted: true },
      { accepted: true },
    ]);
    expect([...result.records.keys()]).toEqual(['a', 'b']);
    expect(result.notes).toEqual([{ recordId: finished.id, event: { type: 'ignored', attempt: 1, message: 'progress 50 after the record was success' } }]);
  });

  it('a device registered by this batch\'s own report has no upgrade yet (no_active_upgrade, not unknown_device)', () => {
    const result = fold([progress('new', 10), reply('new', 'm-1')], devicesOf({}), new Set(['new']));
    expect(outcomesOf(result, 2)).toEqual([
      { accepted: false, code: 'no_active_upgrade', message: 'device new has no upgrade' },
      { accepted: false, code: 'no_active_upgrade', message: 'device new has no upgrade' },
    ]);
    expect(result.records.size).toBe(0);
  });

  it('a message about another attempt is ignored, yet counts as heard from (a change with an ignored event)', () => {
    const a = record('a');
    const result = fold([reply('a', 'm-old')], devicesOf({ a }));
    expect(result.outcomes.get(0)).toEqual({ accepted: true, code: 'ignored', message: 'acknowledgement for message m-old, not the current m-1' });
    const change = result.records.get('a')!.change;
    expect(change.record.lastMessageAt).toBe(T0 + 1_000);
    expect(change.events).toEqual([{ type: 'ignored', attempt: 1, message: 'acknowledgement for message m-old, not the current m-1' }]);
    // nothing changed but the time: a note would not move the response deadline, the change does
    expect(result.notes).toEqual([]);
  });

  it('a report of another version is accepted (not ignored): the device is alive, no event', () => {
    const a = record('a');
    const result = fold([report('a', '1.5.0')], devicesOf({ a }));
    expect(result.outcomes.get(0)).toEqual({ accepted: true });
    const folded = result.records.get('a')!;
    expect(folded.change.events).toEqual([]);
    expect(folded.change.record).toEqual({ ...PROCESSING, lastMessageAt: T0 + 1_000 });
    expect(folded.wakeJob).toBe(false);
  });

  it('a report of the target version completes the upgrade (READ_FIRMWARE_REPLY too), and wakes its job', () => {
    for (const message of [report('a', '2.0.0'), readReply('a', '2.0.0')]) {
      const a = record('a');
      const result = fold([message], devicesOf({ a }));
      expect(result.outcomes.get(0)).toEqual({ accepted: true });
      const folded = result.records.get('a')!;
      expect(folded.change.record).toMatchObject({ state: 'success', progress: 100, completedAt: T0 + 1_000 });
      expect(folded.change.events).toEqual([{ type: 'success', attempt: 1, progress: 100, message: 'device reported version 2.0.0' }]);
      expect(folded.wakeJob).toBe(true);
    }
  });

  it('a rejection ends the attempt: a retry is scheduled and the job woken to wait for it', () => {
    const a = record('a');
    const result = fold([reply('a', 'm-1', { success: false, message: 'low battery' })], devicesOf({ a }));
    expect(result.outcomes.get(0)).toEqual({ accepted: true });
    const folded = result.records.get('a')!;
    expect(folded.change.record).toMatchObject({ state: 'processing', errorReason: 'rejected: low battery', retryAt: T0 + 1_000 + 30_000 });
    expect(folded.wakeJob).toBe(true);
  });

  it('a message while the record waits to retry changes nothing: a note, and an ignored outcome', () => {
    const a = record('a', { errorReason: 'timeout', deadlineAt: null, responseDeadlineAt: null, retryAt: T0 + 20_000 });
    const result = fold([progress('a', 30)], devicesOf({ a }));
    expect(result.outcomes.get(0)).toEqual({ accepted: true, code: 'ignored', message: 'progress 30 while the record was waiting to retry' });
    expect(result.records.size).toBe(0);
    expect(result.notes).toEqual([{ recordId: a.id, event: { type: 'ignored', attempt: 1, message: 'progress 30 while the record was waiting to retry' } }]);
  });
});

describe('foldDeviceMessages: several messages for one device, one change', () => {
  it('each message applies to the record as the ones before left it, in arrival order', () => {
    const a = record('a', { dispatches: 3 });
    const b = record('b');
    const messages: RecordMessage[] = [reply('a', 'm-1'), progress('b', 20), progress('a', 30), progress('a', 60), progress('b', 10), done('a')];
    const result = fold(messages, devicesOf({ a, b }));

    expect(outcomesOf(result, messages.length)).toEqual([
      { accepted: true },
      { accepted: true },
      { accepted: true },
      { accepted: true },
      { accepted: true, code: 'ignored', message: 'progress 10 is not above 20' },
      { accepted: true },
    ]);
    const folded = result.records.get('a')!;
    // one change over the record as read: its revision, its state before
    expect(folded.change).toMatchObject({ id: a.id, taskId: 'task-1', deviceId: 'a', revision: 3, fromState: 'processing' });
    expect(folded.change.events.map((e) => [e.type, e.progress])).toEqual([
      ['acknowledged', undefined],
      ['progress', 30],
      ['progress', 60],
      ['success', 100],
    ]);
    expect(folded.change.record).toMatchObject({ state: 'success', progress: 100, lastMessageAt: T0 + 6_000, completedAt: T0 + 6_000 });
    expect(folded.messages).toEqual([0, 2, 3, 5]);
    // the job as the record was read (its dispatch count), woken because the record became final
    expect(folded.jobId).toBe(upgradeJobId(a.id, 3));
    expect(folded.wakeJob).toBe(true);

    const other = result.records.get('b')!;
    expect(other.change.events.map((e) => [e.type, e.progress])).toEqual([['progress', 20], ['ignored', 10]]);
    expect(other.change.record.progress).toBe(20);
    expect(other.messages).toEqual([1, 4]);
    expect(other.wakeJob).toBe(false);
  });

  it('a refused message in between changes nothing and is not part of the change', () => {
    const a = record('a');
    const messages = [progress('a', 30), progress('a', 40, { version: '1.0.0' }), progress('a', 50)];
    const result = fold(messages, devicesOf({ a }));
    expect(result.outcomes.get(1)).toMatchObject({ accepted: false, code: 'version_mismatch' });
    const folded = result.records.get('a')!;
    expect(folded.change.events.map((e) => e.progress)).toEqual([30, 50]);
    expect(folded.messages).toEqual([0, 2]);
  });

  it('messages after the record became final are ignored notes; the change keeps the success', () => {
    const a = record('a');
    const messages = [done('a'), progress('a', 50), reply('a', 'm-1')];
    const result = fold(messages, devicesOf({ a }));
    expect(outcomesOf(result, 3)).toEqual([
      { accepted: true },
      { accepted: true, code: 'ignored', message: 'progress 50 after the record was success' },
      { accepted: true, code: 'ignored', message: 'acknowledgement after the record was success' },
    ]);
    expect(result.records.get('a')!.change.record.state).toBe('success');
    expect(result.records.get('a')!.messages).toEqual([0]);
    expect(result.notes.map((n) => [n.recordId, n.event.message])).toEqual([
      [a.id, 'progress 50 after the record was success'],
      [a.id, 'acknowledgement after the record was success'],
    ]);
  });

  it('a failure report fails the record once attempts are used up, and wakes its job', () => {
    const a = record('a', { attempts: 3 });
    const result = fold([progress('a', 20), progress('a', 40, { success: false, errorReason: 'flash write failed' })], devicesOf({ a }));
    const folded = result.records.get('a')!;
    expect(folded.change.record).toMatchObject({ state: 'failed', errorReason: 'flash write failed', completedAt: T0 + 2_000 });
    expect(folded.change.events.map((e) => e.type)).toEqual(['progress', 'failed']);
    expect(folded.wakeJob).toBe(true);
  });

  it('only the given indexes are folded, in the order given', () => {
    const a = record('a');
    const messages = [progress('a', 30), progress('b', 10), progress('a', 60)];
    const result = foldDeviceMessages(messages, [2, 0], devicesOf({ a }), new Set(), ticking());
    expect([...result.outcomes.keys()]).toEqual([2, 0]);
    expect(result.outcomes.get(0)).toEqual({ accepted: true, code: 'ignored', message: 'progress 30 is not above 60' });
    expect(result.records.get('a')!.messages).toEqual([2, 0]);
  });

  it('the clock is read once per message folded', () => {
    const a = record('a');
    const b = record('b');
    let reads = 0;
    const result = fold([reply('a', 'm-1'), progress('b', 10), progress('a', 20)], devicesOf({ a, b }), new Set(), () => T0 + 1_000 * ++reads);
    expect(reads).toBe(3);
    expect(result.records.get('a')!.change.record.lastMessageAt).toBe(T0 + 3_000);
    expect(result.records.get('b')!.change.record.lastMessageAt).toBe(T0 + 2_000);
  });
});

describe('staleMessages', () => {
  it('gives every message folded into a stale change, by device, nothing of the applied ones', () => {
    const a = record('a');
    const b = record('b');
    const c = record('c');
    const messages = [progress('a', 10), progress('b', 10), progress('c', 10), progress('a', 20), progress('c', 20)];
    const result = fold(messages, devicesOf({ a, b, c }));
    const changeOf = (deviceId: string) => result.records.get(deviceId)!.change;
    expect(staleMessages(result, [])).toEqual([]);
    expect(staleMessages(result, [changeOf('c'), changeOf('a')])).toEqual([2, 4, 0, 3]);
  });
});

describe('screenDeviceMessages: who may speak for a device', () => {
  const child: DeviceBinding = { productId: 'prod', gatewayId: 'gw-1', gatewayProductId: 'gw-prod' };
  const via = (gatewayId: string, gatewayProductId = 'gw-prod'): { gateway: GatewayRoute } => ({ gateway: { gatewayId, gatewayProductId } });

  it('refuses a message naming another product, or not coming through the device\'s gateway', () => {
    const devices = devicesOf({ a: record('a'), kid: { upgrade: record('kid'), binding: child } });
    const messages: BatchedMessage[] = [
      { ...progress('a', 10), productId: 'other' },
      progress('kid', 10),
      { ...progress('kid', 10), ...via('gw-2') },
      { ...progress('kid', 10), ...via('gw-1', 'other-gw-prod') },
      { ...progress('kid', 10), ...via('gw-1') },
      // a platform relays for its devices however they are connected
      { ...progress('kid', 10), fromPlatform: true },
      progress('a', 10),
    ];
    const screened = screenDeviceMessages(messages, devices, false);
    expect(outcomesOf(screened, messages.length)).toEqual([
      { accepted: false, code: 'product_mismatch', message: 'device a is of product prod, not other' },
      { accepted: false, code: 'gateway_mismatch', message: 'device kid is registered behind gateway gw-1; its messages must come through it' },
      { accepted: false, code: 'gateway_mismatch', message: 'device kid is registered behind gateway gw-1, not gw-2' },
      { accepted: false, code: 'gateway_mismatch', message: 'gateway gw-1 is of product gw-prod, not other-gw-prod' },
      undefined,
      undefined,
      undefined,
    ]);
    expect(screened.reports).toEqual([]);
  });

  it('stores reports of known devices, and of unknown ones only where they may register', () => {
    const devices = devicesOf({ known: undefined });
    const messages: BatchedMessage[] = [
      report('known', '1.0.0'),
      report('self', '1.0.0'),
      { ...report('noproduct', '1.0.0'), productId: undefined },
      { ...report('child', '1.0.0'), ...via('gw-1') },
      readReply('read', '1.0.0'),
      { ...report('posted', '1.0.0'), fromPlatform: true },
      { ...report('posted-bare', '1.0.0'), productId: undefined, fromPlatform: true },
      // not a report: an unknown device's progress is left to the records (unknown_device there)
      progress('stranger', 10),
    ];

    const withSelfRegistration = screenDeviceMessages(messages, devices, true);
    expect(withSelfRegistration.reports).toEqual([0, 1, 5]);
    expect(outcomesOf(withSelfRegistration, messages.length)).toEqual([
      undefined,
      undefined,
      { accepted: false, code: 'unknown_device', message: 'device noproduct is not registered' },
      { accepted: false, code: 'unknown_device', message: 'device child is not registered' },
      { accepted: false, code: 'unknown_device', message: 'device read is not registered' },
      undefined,
      { accepted: false, code: 'unknown_device', message: 'device posted-bare is not registered and the report names no product' },
      undefined,
    ]);

    const without = screenDeviceMessages(messages, devices, false);
    expect(without.reports).toEqual([0, 5]);
    expect(without.outcomes.get(1)).toEqual({ accepted: false, code: 'unknown_device', message: 'device self is not registered' });
  });

  it('a report refused for its binding is not stored', () => {
    const devices = devicesOf({ a: undefined });
    const screened = screenDeviceMessages([{ ...report('a', '1.0.0'), productId: 'other' }], devices, true);
    expect(screened.reports).toEqual([]);
    expect(screened.outcomes.get(0)).toMatchObject({ code: 'product_mismatch' });
  });

  it('mayRegister: a platform\'s report naming its product, or a device\'s own with self-registration', () => {
    expect(mayRegister({ ...report('d', '1'), fromPlatform: true }, false)).toBe(true);
    expect(mayRegister({ ...report('d', '1'), productId: undefined, fromPlatform: true }, true)).toBe(false);
    expect(mayRegister(report('d', '1'), true)).toBe(true);
    expect(mayRegister(report('d', '1'), false)).toBe(false);
    expect(mayRegister({ ...report('d', '1'), ...via('gw-1') }, true)).toBe(false);
    expect(mayRegister(readReply('d', '1'), true)).toBe(false);
    expect(mayRegister({ ...readReply('d', '1'), fromPlatform: true }, false)).toBe(true);
  });
});

describe('reportResults', () => {
  it('refuses stale reports and unknown devices, and names the devices the reports registered', () => {
    const devices = devicesOf({ known: undefined });
    const messages = [report('known', '1.0.0'), progress('known', 10), report('new', '1.0.0'), report('old', '0.9.0'), report('ghost', '1.0.0')];
    const result = reportResults(messages, [0, 2, 3, 4], ['applied', 'applied', 'stale', 'unknown_device'], devices);
    expect(outcomesOf(result, messages.length)).toEqual([
      undefined,
      undefined,
      undefined,
      { accepted: false, code: 'stale_report', message: 'an equal or newer report is already stored' },
      { accepted: false, code: 'unknown_device', message: 'device ghost is not registered and the report names no product' },
    ]);
    // a known device's stored report registers nothing
    expect([...result.registered]).toEqual(['new']);
  });
});

/**
 * The records as the database holds them: a write applies a change only over the revision it was
 * computed from (otter_write_records), and `racer` lets another writer move records on first.
 */
class FakeRecords implements RecordMessageStore {
  readonly current: Map<string, DeviceState>;
  readonly reloads: string[][] = [];
  readonly writes: DeviceMessageFold[] = [];
  readonly notes: RecordNote[] = [];
  racer: ((current: Map<string, DeviceState>) => void) | undefined;

  constructor(devices: Map<string, DeviceState>) {
    this.current = structuredClone(devices);
  }

  async reload(deviceIds: string[]): Promise<Map<string, DeviceState>> {
    this.reloads.push(deviceIds);
    return new Map(deviceIds.filter((id) => this.current.has(id)).map((id) => [id, structuredClone(this.current.get(id)!)]));
  }

  async write(fold: DeviceMessageFold): Promise<RecordChange[]> {
    this.racer?.(this.current);
    this.writes.push(fold);
    this.notes.push(...fold.notes);
    const stale: RecordChange[] = [];
    for (const { change } of fold.records.values()) {
      const device = this.current.get(change.deviceId)!;
      if (device.upgrade?.revision !== change.revision) stale.push(change);
      else device.upgrade = stateAfter(device.upgrade, change);
    }
    return stale;
  }
}

/** Another writer moves the device's record on (progress, revision) before the batch writes. */
function bump(deviceId: string, progressTo: number) {
  return (current: Map<string, DeviceState>) => {
    const upgrade = current.get(deviceId)!.upgrade!;
    upgrade.revision += 1;
    upgrade.snapshot = { ...upgrade.snapshot, progress: progressTo, lastMessageAt: T0 };
  };
}

function once(racer: (current: Map<string, DeviceState>) => void) {
  let fired = false;
  return (current: Map<string, DeviceState>) => {
    if (fired) return;
    fired = true;
    racer(current);
  };
}

describe('applyRecordMessages: writes, and stale changes folded again', () => {
  it('all applied: one write, no second read', async () => {
    const devices = devicesOf({ a: record('a'), b: record('b') });
    const store = new FakeRecords(devices);
    const messages = [progress('a', 10), progress('b', 20), progress('a', 30)];
    const outcomes = await applyRecordMessages(messages, all(messages), devices, new Set(), store, ticking());
    expect(outcomesOf({ outcomes }, 3)).toEqual([{ accepted: true }, { accepted: true }, { accepted: true }]);
    expect(store.writes).toHaveLength(1);
    expect(store.reloads).toEqual([]);
    expect(store.current.get('a')!.upgrade!.snapshot.progress).toBe(30);
    expect(store.current.get('a')!.upgrade!.revision).toBe(4);
  });

  it('a record that moved on is read again and its messages folded anew; the others are not', async () => {
    const devices = devicesOf({ a: record('a'), b: record('b') });
    const store = new FakeRecords(devices);
    // between the batch's read and its first write, another writer takes device a's record to 50 %
    store.racer = once(bump('a', 50));
    const messages = [progress('a', 30), progress('b', 20), reply('a', 'm-1')];
    const outcomes = await applyRecordMessages(messages, all(messages), devices, new Set(), store, ticking());

    expect(store.reloads).toEqual([['a', 'a']]);
    expect(store.writes).toHaveLength(2);
    expect([...store.writes[1]!.records.keys()]).toEqual(['a']);
    // folded again over 50 %: the 30 % report is now behind, the acknowledgement still counts
    expect(outcomesOf({ outcomes }, 3)).toEqual([
      { accepted: true, code: 'ignored', message: 'progress 30 is not above 50' },
      { accepted: true },
      { accepted: true },
    ]);
    expect(store.current.get('a')!.upgrade!.snapshot.progress).toBe(50);
    expect(store.writes[1]!.records.get('a')!.change.events.map((e) => e.type)).toEqual(['ignored', 'acknowledged']);
    expect(store.current.get('b')!.upgrade!.snapshot.progress).toBe(20);
  });

  it('a message that only left a note is not tried again with the raced change', async () => {
    // waiting to retry: a progress report changes nothing (a note); a report of the target version completes it
    const a = record('a', { errorReason: 'timeout', deadlineAt: null, responseDeadlineAt: null, retryAt: T0 + 20_000 });
    const devices = devicesOf({ a });
    const store = new FakeRecords(devices);
    store.racer = once((current) => {
      current.get('a')!.upgrade!.revision += 1;
    });
    const messages = [progress('a', 30), report('a', '2.0.0')];
    const outcomes = await applyRecordMessages(messages, all(messages), devices, new Set(), store, ticking());
    expect(store.writes.map((w) => [...w.outcomes.keys()])).toEqual([[0, 1], [1]]);
    expect(store.notes).toHaveLength(1);
    expect(outcomes.get(0)).toMatchObject({ accepted: true, code: 'ignored' });
    expect(outcomes.get(1)).toEqual({ accepted: true });
    expect(store.current.get('a')!.upgrade!.snapshot.state).toBe('success');
  });

  it(`a record that keeps moving on: ${STALE_RETRIES} more tries, then internal_error for its messages only`, async () => {
    const devices = devicesOf({ a: record('a'), b: record('b') });
    const store = new FakeRecords(devices);
    let progressOfOthers = 1;
    store.racer = (current) => bump('a', progressOfOthers++)(current);
    const messages = [progress('a', 90), progress('b', 20)];
    const outcomes = await applyRecordMessages(messages, all(messages), devices, new Set(), store, ticking());
    expect(store.writes).toHaveLength(STALE_RETRIES + 1);
    expect(store.reloads).toHaveLength(STALE_RETRIES);
    expect(outcomesOf({ outcomes }, 2)).toEqual([
      { accepted: false, code: 'internal_error', message: 'record kept changing; send again' },
      { accepted: true },
    ]);
  });

  it('refused messages are final in the first round, not written', async () => {
    const devices = devicesOf({ a: record('a') });
    const store = new FakeRecords(devices);
    const messages = [progress('a', 10, { version: '0.1.0' }), progress('nobody', 10)];
    const outcomes = await applyRecordMessages(messages, all(messages), devices, new Set(), store, ticking());
    expect(outcomesOf({ outcomes }, 2).map((o) => o && !o.accepted && o.code)).toEqual(['version_mismatch', 'unknown_device']);
    expect(store.writes).toHaveLength(1);
    expect(store.writes[0]!.records.size).toBe(0);
  });
});
