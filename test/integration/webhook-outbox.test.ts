// The webhook outbox (migration 0016): rows of up to 100 events, packed into deliveries of at most
// 1,000 events however the rows are cut, ids (seq) contiguous and rising per stream in delivery
// order, a partial delivery held until its window passes, and the record.final trigger cutting a
// batch of finals into rows of 100.
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OUTBOX_ROW_EVENTS, WEBHOOK_MAX_EVENTS } from '../../core/webhooks.ts';
import { deliveryEvents, insertWebhook, sealWebhookEvents } from '../../db/queries/webhooks.ts';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { createFirmware, createTask, registerDevices } from '../helpers/rollout.ts';

let t: TestApp;
beforeAll(async () => {
  t = await buildTestApp();
});
afterAll(async () => t?.close());

/** A seeded pseudo-random generator, so a failure can be replayed. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
    return state / 2 ** 31;
  };
}

async function addRow(webhookId: string, stream: string, events: Array<{ n: number }>, oldestAt: string): Promise<void> {
  const items = events.map((event) => ({ type: 'record.final', at: '2026-12-01T00:00:00.000Z', data: event }));
  await sql`
    INSERT INTO webhook_outbox (webhook_id, stream, event_count, oldest_at, events)
    VALUES (${webhookId}, ${stream}, ${items.length}, ${oldestAt}::timestamptz, ${JSON.stringify(items)}::json)`.execute(t.database.db);
}

const seal = (windowMs: number) => sealWebhookEvents(t.database.db, { maxEvents: WEBHOOK_MAX_EVENTS, rowEvents: OUTBOX_ROW_EVENTS, windowMs });

describe('webhook outbox', () => {
  it('packs rows of any size into deliveries of at most 1,000 events, ids contiguous and in order per stream', async () => {
    const hook = await insertWebhook(t.database.db, { url: 'http://127.0.0.1:1/', secret: 's', events: ['record.final'], productId: null });
    const next = random(20261201);
    const written = new Map<string, number>();
    // two streams, interleaved rows of 1 to 100 events
    for (let i = 0; i < 160; i += 1) {
      const stream = next() < 0.5 ? 'task:a' : 'task:b';
      const size = 1 + Math.floor(next() * OUTBOX_ROW_EVENTS);
      const first = written.get(stream) ?? 0;
      written.set(stream, first + size);
      await addRow(hook.id, stream, Array.from({ length: size }, (_, k) => ({ n: first + k })), '2026-12-01T00:00:00Z');
    }
    // old enough: everything is sealed, the partial tail included
    expect(await seal(1_000)).toBeGreaterThan(0);
    const { rows: deliveries } = await sql<{ id: string; stream: string; first_seq: string; event_count: number }>`
      SELECT id, stream, first_seq, event_count FROM webhook_deliveries WHERE webhook_id = ${hook.id} ORDER BY first_seq`.execute(t.database.db);
    let lastSeq = 0;
    const seen = new Map<string, number>();
    for (const delivery of deliveries) {
      expect(delivery.event_count).toBeLessThanOrEqual(WEBHOOK_MAX_EVENTS);
      const events = (await deliveryEvents(t.database.db, delivery.id)).map((text) => JSON.parse(text) as { id: number; data: { n: number } });
      expect(events).toHaveLength(delivery.event_count);
      expect(events[0]!.id).toBe(Number(delivery.first_seq));
      for (const event of events) {
        // ids rise across every delivery; each stream's events arrive in the order they were written
        expect(event.id).toBeGreaterThan(lastSeq);
        lastSeq = event.id;
        const expected = seen.get(delivery.stream) ?? 0;
        expect(event.data.n, delivery.stream).toBe(expected);
        seen.set(delivery.stream, expected + 1);
      }
      expect(events.map((event) => event.id)).toEqual(events.map((_, k) => Number(delivery.first_seq) + k));
    }
    expect(seen).toEqual(written);
    // every delivery but each stream's last is nearly full: the packing wastes less than two rows' room
    const full = deliveries.filter((delivery) => delivery.event_count > WEBHOOK_MAX_EVENTS - 2 * OUTBOX_ROW_EVENTS);
    expect(full.length).toBeGreaterThanOrEqual(deliveries.length - 2);
  });

  it('holds a partial delivery until its oldest event is a window old, and seals a full one at once', async () => {
    const hook = await insertWebhook(t.database.db, { url: 'http://127.0.0.1:1/', secret: 's', events: ['record.final'], productId: null });
    const now = new Date().toISOString();
    await addRow(hook.id, 'task:c', [{ n: 0 }, { n: 1 }], now);
    expect(await seal(60_000)).toBe(0);
    for (let i = 0; i < 10; i += 1) await addRow(hook.id, 'task:c', Array.from({ length: 100 }, (_, k) => ({ n: 2 + i * 100 + k })), now);
    // 1,002 events: one full delivery goes now, the rest waits for its window
    expect(await seal(60_000)).toBe(1);
    const { rows } = await sql<{ pending: string; events: string }>`
      SELECT count(*) AS pending, sum(event_count) AS events FROM webhook_outbox WHERE webhook_id = ${hook.id} AND delivery_id IS NULL`.execute(t.database.db);
    expect(Number(rows[0]!.pending)).toBeGreaterThan(0);
    expect(await seal(0)).toBe(1);
  });

  it('writes a batch of finals as rows of at most 100 events, in the order of their timeline', async () => {
    const productId = 'p-final';
    const hook = await t.app.inject({ method: 'POST', url: '/api/webhooks', headers: t.auth, payload: { url: 'http://127.0.0.1:1/', secret: 'a-secret-long-enough', events: ['record.final'], productId } });
    expect(hook.statusCode, hook.body).toBe(201);
    const hookId = hook.json().id as string;
    await registerDevices(t.app, t.auth, productId, Array.from({ length: 250 }, (_, i) => `d-${i + 1}`));
    const taskId = await createTask(t.app, t.auth, { firmwareId: await createFirmware(t.app, t.auth, productId), timeoutSeconds: 60 });
    expect((await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: false } })).json().added).toBe(250);
    // one cancel: 250 final events in one statement
    expect((await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/cancel`, headers: t.auth, payload: {} })).json().canceled).toBe(250);
    const { rows } = await sql<{ event_count: number; records: string[] }>`
      SELECT o.event_count, array_agg(e.value->'data'->>'recordId' ORDER BY e.ordinality) AS records
      FROM webhook_outbox o CROSS JOIN LATERAL json_array_elements(o.events) WITH ORDINALITY AS e
      WHERE o.webhook_id = ${hookId} GROUP BY o.id, o.event_count ORDER BY o.id`.execute(t.database.db);
    expect(rows.map((row) => row.event_count)).toEqual([100, 100, 50]);
    const records = rows.flatMap((row) => row.records.map(Number));
    expect(records).toEqual([...records].sort((a, b) => a - b));
    expect(new Set(records).size).toBe(250);
  });
});
