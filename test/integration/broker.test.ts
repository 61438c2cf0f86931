// The private test broker runs the repository's mosquitto.conf, closed as in production: no anonymous
// client; the platform accounts carry QoS 1 through a shared subscription on a topic that starts
// with `/`, as the service subscribes. (Device certificates: broker-identity.test.ts.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { portAccepts } from '../../tools/ports.ts';


describe('test broker', () => {
  let broker: TestBroker;

  beforeAll(async () => {
    broker = await startBroker();
  });

  afterAll(async () => {
    await broker?.stop();
  });

  it('listens on its own port', () => {
    expect(broker.port).toBeGreaterThan(0);
    expect(broker.port).not.toBe(1883);
    expect(broker.plainUrl).toBe(`mqtt://127.0.0.1:${broker.port}`);
    expect(new URL(broker.url).username).toBe(broker.fleetOptions.username);
    expect(broker.devices.port).not.toBe(broker.port);
  });

  it('refuses anonymous clients and wrong passwords', async () => {
    for (const credentials of [{}, { username: broker.serviceEnv.MQTT_USERNAME, password: 'wrong' }]) {
      await expect(mqtt.connectAsync(broker.plainUrl, { ...credentials, reconnectPeriod: 0, connectTimeout: 5_000 }))
        .rejects.toThrow(/Not authorized|Bad username or password/i);
    }
  });

  it('lets Otter\'s account in', async () => {
    const { MQTT_USERNAME, MQTT_PASSWORD } = broker.serviceEnv;
    const otter = await mqtt.connectAsync(broker.plainUrl, { username: MQTT_USERNAME, password: MQTT_PASSWORD, reconnectPeriod: 0 });
    await otter.endAsync();
  });

  it('carries a QoS 1 message through a shared subscription', async () => {
    const subscriber = await mqtt.connectAsync(broker.url, { clientId: 'otter-test-sub', reconnectPeriod: 0 });
    const publisher = await mqtt.connectAsync(broker.url, { clientId: 'otter-test-pub', reconnectPeriod: 0 });
    try {
      const granted = await subscriber.subscribeAsync('$share/otter//+/+/firmware/upgrade/progress', { qos: 1 });
      expect(granted.map((grant) => grant.qos)).toEqual([1]);

      const received = new Promise<{ topic: string; payload: string; qos: number }>((resolve) => {
        subscriber.once('message', (topic, payload, packet) => resolve({ topic, payload: payload.toString(), qos: packet.qos }));
      });
      const body = JSON.stringify({ progress: 40, complete: false, success: true, version: '1.2.0', timestamp: 1 });
      await publisher.publishAsync('/p1/d1/firmware/upgrade/progress', body, { qos: 1 });

      const message = await received;
      expect(message).toEqual({ topic: '/p1/d1/firmware/upgrade/progress', payload: body, qos: 1 });
    } finally {
      await publisher.endAsync();
      await subscriber.endAsync();
    }
  });

  it('stops listening when stopped', async () => {
    const other = await startBroker();
    expect(await portAccepts(other.port)).toBe(true);
    await other.stop();
    expect(await portAccepts(other.port)).toBe(false);
  });
});
