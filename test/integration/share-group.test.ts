// Two Otter deployments on one broker (different QUEUE_PREFIX, so different MQTT share groups):
// each receives every message of its own devices, and applies none of the other's. Each group gets
// its own copy of what matches its subscriptions, so a deployment also sees the other's devices'
// messages — it refuses them unknown_device and nothing of its own changes (a broker account per
// deployment whose ACL covers only its products keeps them out entirely). With one group for both,
// as before MQTT_SHARE_GROUP, the broker splits the messages between them: each misses some of
// its own (the last test shows it).
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { registerDevices } from '../helpers/rollout.ts';

const DEVICES = 20;
const ROUNDS = 5;

let broker: TestBroker;
let publisher: MqttClient;
const apps: TestApp[] = [];

const idsOf = (prefix: string) => Array.from({ length: DEVICES }, (_, i) => `${prefix}-${i + 1}`);

/** Every device message this app took in, by result and reason. */
async function received(t: TestApp): Promise<Record<string, number>> {
  const metric = await t.otter.metrics.deviceMessages.get();
  const out: Record<string, number> = {};
  for (const { labels, value } of metric.values) {
    const key = labels.reason ? `${labels.result}:${labels.reason}` : String(labels.result);
    out[key] = (out[key] ?? 0) + value;
  }
  return out;
}

const total = (counts: Record<string, number>) => Object.values(counts).reduce((sum, n) => sum + n, 0);

/** Two deployments with their own devices (products share-a… and share-b…). */
async function deployments(env: Record<string, string>[], tag: string): Promise<Array<{ t: TestApp; product: string; prefix: string }>> {
  const out = [];
  for (const [i, extra] of env.entries()) {
    const t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url, ...extra });
    apps.push(t);
    const product = `share-${tag}-${i}`;
    const prefix = `dev-${tag}-${i}`;
    await registerDevices(t.app, t.auth, product, idsOf(prefix));
    out.push({ t, product, prefix });
  }
  return out;
}

/**
 * Each device reports ROUNDS times, a newer version each time; a round is sent once the one before
 * was taken in (so no report is stale): by each deployment, or (`split`) by the two together.
 */
async function reportRounds(fleets: Array<{ t: TestApp; product: string; prefix: string }>, split = false): Promise<void> {
  for (let n = 1; n <= ROUNDS; n += 1) {
    const sends: Array<Promise<unknown>> = [];
    for (const { product, prefix } of fleets) {
      for (const id of idsOf(prefix)) {
        const body = { version: `1.0.${n}`, timestamp: Date.now() };
        sends.push(publisher.publishAsync(`/${product}/${id}/firmware/report`, JSON.stringify(body), { qos: 1 }));
      }
    }
    await Promise.all(sends);
    const seen = DEVICES * fleets.length * n;
    const deadline = Date.now() + 5_000;
    for (;;) {
      const counts = await Promise.all(fleets.map(({ t }) => received(t)));
      const done = split ? counts.reduce((sum, c) => sum + total(c), 0) >= seen : counts.every((c) => total(c) >= seen);
      if (done || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  // a moment more: anything late would show up now
  await new Promise((resolve) => setTimeout(resolve, 300));
}

beforeAll(async () => {
  broker = await startBroker();
  publisher = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: 'share-group-devices', reconnectPeriod: 0 });
});

afterAll(async () => {
  await publisher?.endAsync();
  for (const t of apps) await t.close();
  await broker?.stop();
});

describe('MQTT share group per deployment', () => {
  it('each deployment receives all of its own devices\' messages and applies none of the other\'s', async () => {
    // buildTestApp gives each its own database and a unique QUEUE_PREFIX: the share group by default
    const fleets = await deployments([{}, {}], 'own');
    const [a, b] = fleets.map((f) => f.t) as [TestApp, TestApp];
    expect(a.config.mqttShareGroup).toBe(a.config.queuePrefix);
    expect(a.config.mqttShareGroup).not.toBe(b.config.mqttShareGroup);

    await reportRounds(fleets);
    const own = DEVICES * ROUNDS;
    // every one of its own, applied; every one of the other's, refused: not its device, nothing changed
    expect(await received(a)).toEqual({ accepted: own, 'refused:unknown_device': own });
    expect(await received(b)).toEqual({ accepted: own, 'refused:unknown_device': own });
    for (const { t, prefix } of fleets) {
      const devices = await t.database.db.selectFrom('devices').select(['id', 'firmware_version']).execute();
      expect(devices).toHaveLength(DEVICES);
      expect(devices.filter((d) => !d.id.startsWith(prefix) || d.firmware_version !== `1.0.${ROUNDS}`)).toEqual([]);
    }
  });

  it('(why) two deployments in one share group split the messages: each misses some of its own', async () => {
    const fleets = await deployments([{ MQTT_SHARE_GROUP: 'one-group' }, { MQTT_SHARE_GROUP: 'one-group' }], 'same');
    await reportRounds(fleets, true);
    const own = DEVICES * ROUNDS;
    for (const { t } of fleets) {
      const counts = await received(t);
      expect(counts.accepted ?? 0).toBeLessThan(own);
    }
  });
});
