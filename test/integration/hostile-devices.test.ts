// A hostile fleet: what an attacker who can reach the broker sends — spoofed products, a foreign
// gateway, wildcards, control characters and 64 KB topics, bytes that are not UTF-8, JSON nested
// absurdly deep, `__proto__` keys, repeats and reports out of order. Afterwards the service is
// ready, every message is counted once in /metrics, the metrics agree with the database, and no
// record changed that should not have.
import mqtt, { type MqttClient } from 'mqtt';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { createFirmware, createTask, registerDevices, waitForTask } from '../helpers/rollout.ts';

const PRODUCT = 'hostile';
const OTHER_PRODUCT = 'bystander';
const GATEWAY_PRODUCT = 'hostile-gw';
const CHILD_PRODUCT = 'hostile-child';
const DEVICES = ['h-1', 'h-2', 'h-3', 'h-4', 'h-5'];
const CHILDREN = ['hc-1', 'hc-2'];
const TARGET = '2.0.0';

interface Snapshot {
  records: Record<string, { state: string; progress: number; attempts: number }>;
  versions: Record<string, string | null>;
  devices: number;
}

function metricSum(text: string, name: string, filter: (line: string) => boolean = () => true): number {
  return text
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`) && filter(line))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(' ') + 1)), 0);
}

function final(progress = 100, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ progress, complete: true, success: true, version: TARGET, timestamp: Date.now(), ...extra });
}

describe('a hostile fleet', () => {
  let broker: TestBroker;
  let t: TestApp;
  let client: MqttClient;
  let taskId: string;
  let childTaskId: string;
  /** Messages published that the broker lets through to the service: each must be counted once. */
  let published = 0;

  async function metrics(): Promise<string> {
    return (await t.app.inject({ url: '/metrics', headers: t.auth })).body;
  }

  async function snapshot(): Promise<Snapshot> {
    const records = await t.database.db.selectFrom('upgrade_records').select(['device_id', 'state', 'progress', 'attempts']).execute();
    const devices = await t.database.db.selectFrom('devices').select(['id', 'firmware_version']).execute();
    return {
      records: Object.fromEntries(records.map((r) => [r.device_id, { state: r.state, progress: r.progress, attempts: r.attempts }])),
      versions: Object.fromEntries(devices.map((d) => [d.id, d.firmware_version])),
      devices: devices.length,
    };
  }

  async function publish(topic: string, payload: string | Buffer): Promise<void> {
    published += 1;
    await client.publishAsync(topic, payload, { qos: 1 });
  }

  /**
   * Publishes on a connection of its own: the broker itself drops a client that sends a topic it
   * finds invalid (control characters), and a retrying client would then jam. Answers whether the
   * broker took the message (and so handed it on to the service).
   */
  async function publishAlone(topic: string, payload: string | Buffer): Promise<boolean> {
    const rogue = await mqtt.connectAsync(broker.url, { protocolVersion: 5, reconnectPeriod: 0, ...broker.fleetOptions });
    try {
      const closed = new Promise<boolean>((resolve) => rogue.once('close', () => resolve(false)));
      const taken = await Promise.race([rogue.publishAsync(topic, payload, { qos: 1 }).then(() => true, () => false), closed]);
      if (taken) published += 1;
      return taken;
    } finally {
      rogue.end(true);
    }
  }

  /** Waits until the service has counted every message published so far. */
  async function allCounted(): Promise<string> {
    const deadline = Date.now() + 20_000;
    let text = await metrics();
    while (metricSum(text, 'otter_device_messages_total') < published && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      text = await metrics();
    }
    expect(metricSum(text, 'otter_device_messages_total')).toBe(published);
    return text;
  }

  beforeAll(async () => {
    broker = await startBroker();
    // the flood limit has its own test (device-flood.test.ts); here every message must be judged on what it is
    t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url, ...broker.serviceEnv, DEVICE_MESSAGE_RATE: '0' });
    client = await mqtt.connectAsync(broker.url, { protocolVersion: 5, ...broker.fleetOptions });
    await registerDevices(t.app, t.auth, PRODUCT, DEVICES);
    await registerDevices(t.app, t.auth, OTHER_PRODUCT, ['b-1']);
    await registerDevices(t.app, t.auth, GATEWAY_PRODUCT, ['gw-1', 'gw-2']);
    const children = await t.app.inject({
      method: 'PUT',
      url: '/api/devices',
      headers: t.auth,
      payload: { devices: CHILDREN.map((id) => ({ id, productId: CHILD_PRODUCT, gatewayId: 'gw-1', firmwareVersion: '1.0.0' })) },
    });
    expect(children.statusCode, children.body).toBe(200);

    taskId = await createTask(t.app, t.auth, { firmwareId: await createFirmware(t.app, t.auth, PRODUCT, TARGET), timeoutSeconds: 600 });
    childTaskId = await createTask(t.app, t.auth, { firmwareId: await createFirmware(t.app, t.auth, CHILD_PRODUCT, TARGET), timeoutSeconds: 600 });
    for (const id of [taskId, childTaskId]) {
      const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${id}/release`, headers: t.auth, payload: { allDevices: true, push: true } });
      expect(release.statusCode, release.body).toBe(200);
    }
    await waitForTask(t.app, t.auth, taskId, (x) => x.stats.processing === DEVICES.length, 20_000);
    await waitForTask(t.app, t.auth, childTaskId, (x) => x.stats.processing === CHILDREN.length, 20_000);
  });

  afterAll(async () => {
    await client?.endAsync();
    await t?.close();
    await broker?.stop();
  });

  it('refuses what no device of its own may send, and nothing changes', async () => {
    const before = await snapshot();
    const refusedBefore = metricSum(await metrics(), 'otter_device_messages_total', (l) => l.includes('result="refused"'));
    const hostile: Array<[string, string | Buffer]> = [
      // spoofed product: a registered device's id under a product it does not belong to
      [`/${OTHER_PRODUCT}/h-1/firmware/upgrade/progress`, final()],
      [`/${OTHER_PRODUCT}/h-2/firmware/upgrade/progress`, JSON.stringify({ progress: 10, complete: true, success: false, version: TARGET, errorReason: 'forged' })],
      [`/${OTHER_PRODUCT}/h-3/firmware/report`, JSON.stringify({ version: '9.9.9', timestamp: Date.now() })],
      [`/nobody/h-4/firmware/upgrade/reply`, JSON.stringify({ messageId: 'x', success: false })],
      [`/${OTHER_PRODUCT}/h-5/firmware/pull`, JSON.stringify({ messageId: 'p-1' })],
      // a child through a gateway that is not its own, and a gateway's id under a foreign product
      [`/${GATEWAY_PRODUCT}/gw-2/child/hc-1/firmware/upgrade/progress`, final()],
      [`/${GATEWAY_PRODUCT}/gw-2/child-reply/hc-2/firmware/upgrade/progress`, final()],
      [`/${OTHER_PRODUCT}/gw-1/child/hc-1/firmware/upgrade/progress`, final()],
      // an unknown device reports: nothing is registered (self-registration is off by default)
      [`/${PRODUCT}/intruder/firmware/report`, JSON.stringify({ version: '1.0.0' })],
      // control characters and 64 KB in topics
      [`/${PRODUCT}/h-1\u0001/firmware/upgrade/progress`, final()],
      [`/${PRODUCT}/h-1\u007f/firmware/report`, JSON.stringify({ version: TARGET })],
      [`/${PRODUCT}/${'a'.repeat(65_000)}/firmware/upgrade/progress`, final()],
      [`/${PRODUCT}/h-1/firmware/${'b'.repeat(65_000)}/x`, final()],
      // bytes that are not UTF-8, JSON nested absurdly deep, values of the wrong kind
      [`/${PRODUCT}/h-1/firmware/upgrade/progress`, Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0x7b])],
      [`/${PRODUCT}/h-1/firmware/upgrade/progress`, '['.repeat(60_000)],
      [`/${PRODUCT}/h-1/firmware/upgrade/progress`, `${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}`],
      [`/${PRODUCT}/h-1/firmware/upgrade/progress`, JSON.stringify({ progress: 100, complete: true, success: true, version: { $gt: '' } })],
      // __proto__ keys must not stand in for fields the message lacks
      [`/${PRODUCT}/h-2/firmware/upgrade/progress`, `{"__proto__":{"complete":true,"success":true,"progress":100},"version":"${TARGET}"}`],
      [`/${PRODUCT}/h-3/firmware/report`, '{"__proto__":{"version":"9.9.9"}}'],
    ];
    let taken = 0;
    for (const [topic, payload] of hostile) if (await publishAlone(topic, payload)) taken += 1;
    // Mosquitto drops the two topics with control characters itself; everything else reaches Otter
    expect(taken).toBe(hostile.length - 2);

    const text = await allCounted();
    const refused = metricSum(text, 'otter_device_messages_total', (l) => l.includes('result="refused"')) - refusedBefore;
    expect(refused).toBe(taken);
    for (const reason of ['product_mismatch', 'gateway_mismatch', 'unknown_device']) {
      expect(metricSum(text, 'otter_device_messages_total', (l) => l.includes(`reason="${reason}"`)), reason).toBeGreaterThan(0);
    }
    expect(await snapshot()).toEqual(before);
    expect(({} as Record<string, unknown>).complete).toBeUndefined();
  });

  it('a wildcard publish is the broker\'s to refuse; the service does not notice', async () => {
    const rogue = await mqtt.connectAsync(broker.url, { protocolVersion: 5, reconnectPeriod: 0, ...broker.fleetOptions });
    const closed = new Promise<void>((resolve) => rogue.once('close', () => resolve()));
    rogue.publish(`/${PRODUCT}/+/firmware/upgrade/progress`, final(), { qos: 0 });
    rogue.publish(`/${PRODUCT}/#`, final(), { qos: 0 });
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 2_000))]);
    rogue.end(true);
    expect((await t.app.inject({ url: '/health/ready' })).statusCode).toBe(200);
  });

  it('repeats and reports out of order change a record once, in order', async () => {
    await publish(`/${PRODUCT}/h-1/firmware/upgrade/progress`, JSON.stringify({ progress: 80, complete: false, success: true, version: TARGET }));
    await publish(`/${PRODUCT}/h-1/firmware/upgrade/progress`, JSON.stringify({ progress: 40, complete: false, success: true, version: TARGET }));
    await allCounted();
    let h1 = (await snapshot()).records['h-1']!;
    expect(h1).toMatchObject({ state: 'processing', progress: 80 });

    for (let i = 0; i < 3; i += 1) await publish(`/${PRODUCT}/h-1/firmware/upgrade/progress`, final());
    await publish(`/${PRODUCT}/h-1/firmware/upgrade/progress`, JSON.stringify({ progress: 5, complete: true, success: false, version: TARGET }));
    // the child completes through its own gateway, both ways JetLinks allows
    await publish(`/${GATEWAY_PRODUCT}/gw-1/child/hc-1/firmware/upgrade/progress`, final());
    await publish(`/${GATEWAY_PRODUCT}/gw-1/child-reply/hc-2/firmware/upgrade/progress`, final());
    await allCounted();
    await waitForTask(t.app, t.auth, childTaskId, (x) => x.stats.success === CHILDREN.length, 10_000);

    const after = await snapshot();
    h1 = after.records['h-1']!;
    expect(h1).toMatchObject({ state: 'success', progress: 100, attempts: 1 });
    expect(after.versions['h-1']).toBe(TARGET);
    for (const id of ['h-2', 'h-3', 'h-4', 'h-5']) expect(after.records[id], id).toMatchObject({ state: 'processing', progress: 0 });
    expect(after.versions['h-3']).toBe('1.0.0');

    const events = await t.database.db
      .selectFrom('record_events')
      .innerJoin('upgrade_records', 'upgrade_records.id', 'record_events.record_id')
      .select(['record_events.type'])
      .where('upgrade_records.device_id', '=', 'h-1')
      .execute();
    expect(events.filter((e) => e.type === 'success')).toHaveLength(1);
    expect(events.filter((e) => e.type === 'ignored').length).toBeGreaterThanOrEqual(3);
  });

  it('is still ready, and its metrics agree with the database', async () => {
    expect((await t.app.inject({ url: '/health/ready' })).statusCode).toBe(200);
    const text = await allCounted();
    const { rows } = await sql<{ state: string; n: string }>`SELECT state, count(*) AS n FROM upgrade_records GROUP BY state`.execute(t.database.db);
    for (const { state, n } of rows) {
      expect(metricSum(text, 'otter_records', (l) => l.includes(`state="${state}"`)), state).toBe(Number(n));
    }
    for (const id of [taskId, childTaskId]) {
      const task = (await t.app.inject({ url: `/api/tasks/${id}`, headers: t.auth })).json();
      const { rows: counts } = await sql<{ state: string; n: string }>`SELECT state, count(*) AS n FROM upgrade_records WHERE task_id = ${id} GROUP BY state`.execute(t.database.db);
      for (const { state, n } of counts) expect(task.stats[state], `${id} ${state}`).toBe(Number(n));
    }
  });
});
