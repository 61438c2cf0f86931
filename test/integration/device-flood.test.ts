// One device flooding 5,000 messages in a few seconds while 1,000 others roll out: its excess is
// refused rate_limited (counted in /metrics), its record keeps at most 20 ignored events and counts
// the rest, and the rollout takes about as long as the same rollout without the flood. Also: the
// ignored-event cap holds under concurrent writers, and a record answers its latest 1,000 events.
import mqtt, { type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { Fleet, fleetDeviceIds } from '../../tools/fleet.ts';
import { allFinal, createFirmware, createTask, registerDevices, waitForTask } from '../helpers/rollout.ts';
import { applyRecordChanges } from '../../db/queries/record-changes.ts';

const PRODUCT = 'flood';
const TARGET = '2.0.0';
const FLOODER = 'flooder-1';
const FLOOD_MESSAGES = 5_000;
const FLOOD_MS = 2_500;
const FLEET = 1_000;
/** The rollout with the flood may take 20 % longer than without, or this much, whichever is more (2 shared cores). */
const NOISE_FLOOR_MS = 3_000;
/** Rollouts with and without the flood, alternately: the best of each is compared, so a noisy moment counts less. */
const PAIRS = 2;

let broker: TestBroker;
let t: TestApp;
let flooder: MqttClient;
let firmwareId: string;
const fleets: Fleet[] = [];
/** Every line the service logs at info and above: what an operator's log store would receive. */
const logLines: string[] = [];

/** otter_device_messages_total as /metrics shows it, summed over the series matching `labels`. */
async function scraped(labels: Record<string, string>): Promise<number> {
  const response = await t.app.inject({ url: '/metrics', headers: t.auth });
  expect(response.statusCode).toBe(200);
  let sum = 0;
  for (const line of response.body.split('\n')) {
    if (!line.startsWith('otter_device_messages_total{')) continue;
    const series = Object.fromEntries([...line.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([key, value]) => series[key] === value)) sum += Number(line.split(' ').pop());
  }
  return sum;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Registers a fleet of `count` under `prefix`, rolls it out (release + push) and answers how long it took. */
async function rollout(prefix: string, count: number, during?: () => Promise<void>): Promise<{ ms: number; stats: Record<string, number> }> {
  const ids = fleetDeviceIds(prefix, count);
  await registerDevices(t.app, t.auth, PRODUCT, ids);
  const fleet = new Fleet({ mqttUrl: broker.url, productId: PRODUCT, deviceIds: ids, progressSteps: 3, stepMs: 300, reportOnStart: false, seed: prefix });
  fleets.push(fleet);
  await fleet.start();
  const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 120 });
  const started = performance.now();
  const released = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { deviceIds: ids, push: true } });
  expect(released.json().added, released.body).toBe(count);
  const [task] = await Promise.all([waitForTask(t.app, t.auth, taskId, allFinal, 120_000), during?.()]);
  return { ms: performance.now() - started, stats: task.stats as unknown as Record<string, number> };
}

/** Progress messages the service has counted so far (refused or not), from its own registry. */
async function progressCounted(): Promise<number> {
  const metric = await t.otter.metrics.deviceMessages.get();
  return metric.values.filter((v) => v.labels.type === 'UPGRADE_FIRMWARE_PROGRESS').reduce((sum, v) => sum + v.value, 0);
}

/**
 * Publishes FLOOD_MESSAGES late progress reports for the flooder, spread evenly over FLOOD_MS, and
 * answers how long it took until the service had received every one of them.
 */
async function flood(): Promise<number> {
  const started = performance.now();
  const before = await progressCounted();
  const body = JSON.stringify({ progress: 100, complete: true, success: true, version: TARGET });
  const ticks = 50;
  for (let tick = 0; tick < ticks; tick += 1) {
    for (let i = 0; i < FLOOD_MESSAGES / ticks; i += 1) flooder.publish(`/${PRODUCT}/${FLOODER}/firmware/upgrade/progress`, body, { qos: 1 });
    await new Promise((resolve) => setTimeout(resolve, FLOOD_MS / ticks));
  }
  // the fleet's own progress reports count too: at least the flood's are in once this many are
  await waitFor('the flood to be received', async () => (await progressCounted()) - before >= FLOOD_MESSAGES, 60_000);
  return performance.now() - started;
}

beforeAll(async () => {
  broker = await startBroker();
  t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url }, { logger: pino({ level: 'info' }, { write: (line: string) => logLines.push(line) }) });
  firmwareId = await createFirmware(t.app, t.auth, PRODUCT, TARGET, 2);
  flooder = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: 'flooder', reconnectPeriod: 0, properties: { receiveMaximum: 65_535 } });
  // the flooder upgrades like any device first: its finished record is what the flood is about
  await registerDevices(t.app, t.auth, PRODUCT, [FLOODER]);
  const upgrade = new Promise<void>((resolve) => flooder.once('message', () => resolve()));
  await flooder.subscribeAsync(`/${PRODUCT}/${FLOODER}/firmware/upgrade`, { qos: 1 });
  const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 120 });
  await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { deviceIds: [FLOODER], push: true } });
  await upgrade;
  await flooder.publishAsync(`/${PRODUCT}/${FLOODER}/firmware/upgrade/progress`, JSON.stringify({ progress: 100, complete: true, success: true, version: TARGET }), { qos: 1 });
  await waitForTask(t.app, t.auth, taskId, allFinal);
  // a first, small rollout warms the service up, so neither measured run pays for that
  await rollout('warm', 100);
}, 120_000);

afterAll(async () => {
  for (const fleet of fleets) await fleet.stop();
  await flooder?.endAsync();
  await t?.close();
  await broker?.stop();
});

describe('a device flooding 5,000 messages during a rollout of 1,000 others', () => {
  /** How long each flood took until the service had received all of it. */
  const floods: number[] = [];

  it('rolls out 1,000 devices without the flood and 1,000 during it, in turns: all succeed, within 20 % of the time', async () => {
    const quiet: number[] = [];
    const loud: number[] = [];
    for (let pair = 0; pair < PAIRS; pair += 1) {
      const without = await rollout(`quiet${pair}`, FLEET);
      expect(without.stats).toMatchObject({ total: FLEET, success: FLEET });
      quiet.push(without.ms);
      const during = await rollout(`loud${pair}`, FLEET, async () => {
        floods.push(await flood());
      });
      expect(during.stats).toMatchObject({ total: FLEET, success: FLEET });
      // the flood overlapped the rollout: it was not over before the flood began
      expect(during.ms).toBeGreaterThan(FLOOD_MS / 4);
      loud.push(during.ms);
    }
    const best = { quiet: Math.min(...quiet), loud: Math.min(...loud) };
    console.info(`rollouts of ${FLEET} devices: ${quiet.map(Math.round).join(', ')} ms without the flood, ${loud.map(Math.round).join(', ')} ms with it (floods received in ${floods.map(Math.round).join(', ')} ms)`);
    expect(best.loud).toBeLessThanOrEqual(Math.max(best.quiet * 1.2, best.quiet + NOISE_FLOOR_MS));
  }, 300_000);

  it("refuses the flooder's excess rate_limited, counted in /metrics, and applies no more than its rate", async () => {
    const type = 'UPGRADE_FIRMWARE_PROGRESS';
    // every flood message is accounted for: refused for its rate, or let through and ignored
    const sent = FLOOD_MESSAGES * floods.length;
    const [limited, ignored] = await waitFor('every flood message to be counted', async () => {
      const counts: [number, number] = [await scraped({ type, result: 'refused', reason: 'rate_limited' }), await scraped({ type, result: 'ignored' })];
      return counts[0] + counts[1] >= sent ? counts : undefined;
    });
    expect(limited + ignored).toBe(sent);
    // per flood, a burst of 40, then 20 a second while it lasted, until its last message was received
    const allowed = floods.reduce((sum, ms) => sum + 40 + Math.ceil((20 * ms) / 1000), 0);
    expect(ignored).toBeGreaterThanOrEqual(40);
    expect(ignored).toBeLessThanOrEqual(allowed);
    expect(limited).toBeGreaterThanOrEqual(sent - allowed);
    // no other device was limited
    expect(await scraped({ result: 'refused', reason: 'rate_limited' })).toBe(limited);
  });

  it('writes a handful of log lines about the floods, not one per message', async () => {
    const aboutFlood = logLines.filter((line) => line.includes('rate_limited') || line.includes(FLOODER));
    // once per reason per 10 s: the first refusal at once, then a count for each 10 s it went on
    expect(aboutFlood.length).toBeGreaterThan(0);
    expect(aboutFlood.length).toBeLessThanOrEqual(3 * floods.length + 2);
    expect(logLines.length).toBeLessThan(100);
    for (const line of logLines) expect(line.length).toBeLessThan(4_000);
  });

  it("keeps 20 ignored events on the flooder's timeline and counts every ignored message in ignoredEvents", async () => {
    const ignored = await scraped({ type: 'UPGRADE_FIRMWARE_PROGRESS', result: 'ignored' });
    const records = (await t.app.inject({ url: `/api/devices/${FLOODER}/records`, headers: t.auth })).json().items;
    expect(records).toHaveLength(1);
    const record = (await t.app.inject({ url: `/api/records/${records[0].id}`, headers: t.auth })).json();
    expect(record.state).toBe('success');
    const types = record.events.map((e: { type: string }) => e.type);
    expect(types.filter((type: string) => type === 'ignored')).toHaveLength(20);
    expect(types.filter((type: string) => type !== 'ignored')).toEqual(['released', 'queued', 'sent', 'success']);
    expect(record.ignoredEvents).toBe(ignored);
    expect(record.eventsTotal).toBe(24);
    expect(records[0].ignoredEvents).toBe(ignored);
  });
});

describe('the timeline', () => {
  async function newRecord(deviceId: string): Promise<number> {
    await registerDevices(t.app, t.auth, PRODUCT, [deviceId]);
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 120 });
    await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { deviceIds: [deviceId] } });
    const row = await t.database.db.selectFrom('upgrade_records').select('id').where('device_id', '=', deviceId).executeTakeFirstOrThrow();
    return Number(row.id);
  }

  it('keeps at most 20 ignored events however many writers add them at once, and counts all of them', async () => {
    const recordId = await newRecord('cap-1');
    const note = (i: number) => ({ recordId, event: { type: 'ignored' as const, attempt: 0, message: `late message ${i}` } });
    // 16 batches of 5, written concurrently over the pool's connections
    await Promise.all(Array.from({ length: 16 }, (_, b) => applyRecordChanges(t.otter.db, [], Array.from({ length: 5 }, (__, i) => note(b * 5 + i)))));
    const row = await t.database.db.selectFrom('upgrade_records').select('ignored_events').where('id', '=', recordId).executeTakeFirstOrThrow();
    expect(row.ignored_events).toBe(80);
    const events = await t.database.db.selectFrom('record_events').select('type').where('record_id', '=', recordId).execute();
    expect(events.filter((e) => e.type === 'ignored')).toHaveLength(20);
    // other events are never capped
    await applyRecordChanges(t.otter.db, [], [note(99), { recordId, event: { type: 'canceled', attempt: 0 } }]);
    const after = await t.database.db.selectFrom('record_events').select('type').where('record_id', '=', recordId).orderBy('id').execute();
    expect(after.map((e) => e.type)).toEqual(['released', ...Array.from({ length: 20 }, () => 'ignored'), 'canceled']);
  });

  it('answers the latest 1,000 events, oldest first, with eventsTotal', async () => {
    const recordId = await newRecord('long-1');
    await t.database.db.insertInto('record_events')
      .values(Array.from({ length: 1_500 }, (_, i) => ({ record_id: recordId, type: 'progress', attempt: 1, progress: i % 100, message: `step ${i}` })))
      .execute();
    const record = (await t.app.inject({ url: `/api/records/${recordId}`, headers: t.auth })).json();
    expect(record.eventsTotal).toBe(1_501);
    expect(record.events).toHaveLength(1_000);
    expect(record.events[0].message).toBe('step 500');
    expect(record.events[999].message).toBe('step 1499');
    const times = record.events.map((e: { at: string }) => e.at);
    expect([...times].sort()).toEqual(times);
  });
});
