// The private test broker runs the repository's mosquitto.conf: QoS 1 through a shared
// subscription on a topic that starts with `/`, as the service subscribes (CONTRACT §5).
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
    expect(broker.url).toBe(`mqtt://127.0.0.1:${broker.port}`);
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
