// The upgrade sender (workers/upgrade-sender.ts) without services: what a send needs from the
// database is read before the send is written, so a database that is away costs no attempt; only
// the transport's failures are send_errors, whatever they look like (an ECONNREFUSED from the
// transport is not the database's); and a send write whose commit answer was lost is delivered.
import { describe, expect, it, vi } from 'vitest';
import type { FirmwareOffer, OutgoingDeviceMessage } from '../../core/messages.ts';
import { stateAfter, type RecordChange } from '../../db/queries/record-changes.ts';
import type { UpgradeState } from '../../db/queries/upgrade-state.ts';
import { DatabaseUnavailableError } from '../../db/transient-errors.ts';
import type { ApplyResult } from '../../workers/record-store.ts';
import { UpgradeSender } from '../../workers/upgrade-sender.ts';
import { queuedRecord, upgradeStateOf } from '../helpers/record-fixtures.ts';

const OFFER: FirmwareOffer = { firmwareId: 'fw-1', version: '2.0.0', url: 'https://firmware.example.com/fw.bin', parameters: {} };

const QUEUED: UpgradeState = upgradeStateOf(queuedRecord(5_000));

/**
 * One record in memory, written over its revision only. `loseCommitAnswer`: the write is made but
 * reported stale, as the record store reports a write it tried again after its commit answer was lost.
 */
class FakeStore {
  state: UpgradeState = structuredClone(QUEUED);
  readonly written: RecordChange[] = [];
  loseCommitAnswer = false;

  async apply(change: RecordChange): Promise<ApplyResult> {
    if (this.state.revision !== change.revision) return 'stale';
    this.state = stateAfter(this.state, change);
    this.written.push(change);
    return this.loseCommitAnswer ? 'stale' : 'applied';
  }

  async load(): Promise<UpgradeState> {
    return structuredClone(this.state);
  }
}

function setup() {
  const store = new FakeStore();
  const delivered: OutgoingDeviceMessage[] = [];
  const transport = { send: vi.fn(async (message: OutgoingDeviceMessage) => void delivered.push(message)) };
  const offers = { offer: vi.fn(async (): Promise<FirmwareOffer | undefined> => OFFER) };
  const routes = { routeTo: vi.fn(async () => null) };
  const sender = new UpgradeSender({
    store,
    connector: { name: 'fake', start: async () => {}, stop: async () => {}, send: transport.send },
    offers,
    routes,
    logger: { warn: () => {} },
  });
  return { store, delivered, transport, offers, routes, sender };
}

describe('a send', () => {
  it('reads the offer and the route, writes the send, then delivers it with that route', async () => {
    const { store, delivered, routes, sender } = setup();
    const gateway = { gatewayId: 'gw-1', gatewayProductId: 'gw-prod' };
    routes.routeTo.mockResolvedValue(gateway as never);
    const outcome = await sender.send(store.state);
    expect(outcome.kind).toBe('sent');
    expect(store.state.snapshot).toMatchObject({ state: 'processing', attempts: 1 });
    expect(delivered).toHaveLength(1);
    expect(delivered[0]).toMatchObject({ deviceId: 'dev-1', via: gateway, body: { messageId: store.state.snapshot.messageId, version: '2.0.0' } });
  });

  it('with the database away longer than the reads wait, throws DatabaseUnavailableError and writes nothing', async () => {
    const { store, transport, routes, sender } = setup();
    const away = new DatabaseUnavailableError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }), 15_000);
    routes.routeTo.mockRejectedValue(away);
    await expect(sender.send(store.state)).rejects.toBe(away);
    expect(store.written).toEqual([]);
    expect(transport.send).not.toHaveBeenCalled();
  });

  it('a transient database error that escaped the reads untyped is thrown typed, and nothing is written', async () => {
    const { store, offers, sender } = setup();
    offers.offer.mockRejectedValue(Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }));
    await expect(sender.send(store.state)).rejects.toBeInstanceOf(DatabaseUnavailableError);
    expect(store.written).toEqual([]);
  });

  it('a message that cannot be made (firmware gone, gateway unknown) is written, then fails as a send_error', async () => {
    const { store, transport, offers, routes, sender } = setup();
    offers.offer.mockResolvedValue(undefined);
    expect((await sender.send(store.state)).kind).toBe('send_error');
    expect(store.state.snapshot.errorReason).toBe('send_error: firmware fw-1 no longer exists');

    const second = setup();
    second.routes.routeTo.mockRejectedValue(new Error('device dev-1 is behind gateway gw-9, which is not registered'));
    expect((await second.sender.send(second.store.state)).kind).toBe('send_error');
    expect(second.store.state.snapshot.errorReason).toBe('send_error: device dev-1 is behind gateway gw-9, which is not registered');
    expect(transport.send).not.toHaveBeenCalled();
    expect(routes.routeTo).toHaveBeenCalledTimes(1);
  });

  it('a transport failure is a send_error even when it looks like a network error: it is the device’s attempt', async () => {
    const { store, transport, sender } = setup();
    transport.send.mockRejectedValue(Object.assign(new Error('connect ECONNREFUSED 10.0.0.9:443'), { code: 'ECONNREFUSED' }));
    const outcome = await sender.send(store.state);
    expect(outcome.kind).toBe('send_error');
    expect(store.state.snapshot).toMatchObject({ attempts: 1, errorReason: 'send_error: connect ECONNREFUSED 10.0.0.9:443' });
    expect(store.state.snapshot.retryAt).not.toBeNull();
  });

  it('a send written although its commit answer was lost is delivered, once', async () => {
    const { store, delivered, sender } = setup();
    store.loseCommitAnswer = true;
    const outcome = await sender.send(store.state);
    expect(outcome).toMatchObject({ kind: 'sent', state: { revision: QUEUED.revision + 1 } });
    expect(delivered.map((m) => (m.body as { messageId: string }).messageId)).toEqual([store.state.snapshot.messageId]);
  });

  it('a record that moved on before the write is not sent', async () => {
    const { store, delivered, sender } = setup();
    const read = structuredClone(store.state);
    store.state = { ...store.state, revision: store.state.revision + 1 };
    expect(await sender.send(read)).toEqual({ kind: 'stale' });
    expect(delivered).toEqual([]);
  });
});
