// The MQTT side of back-pressure, against the test broker (Mosquitto, which sends a new window of
// messages for each PUBACK, so the cap must hold on the client's side): at the cap nothing more is
// read, a reply published meanwhile still gets its PUBACK, the connection outlives several
// keep-alive periods of holding, and as messages are applied the rest arrive, each exactly once.
import mqtt, { type MqttClient } from 'mqtt';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { connectCoalesced } from '../../protocols/mqtt-client.ts';
import { InboundFlow, receiveMaximumFor } from '../../protocols/mqtt-inbound-flow.ts';

const CAP = 10;
const MESSAGES = 200;
const KEEPALIVE_SECONDS = 2;

let broker: TestBroker;
let service: MqttClient;
let device: MqttClient;
let flow: InboundFlow;
const received: string[] = [];
const unapplied: Array<() => void> = [];
let mostInFlight = 0;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

beforeAll(async () => {
  broker = await startBroker();
  service = await connectCoalesced(broker.url, {
    protocolVersion: 5,
    clean: true,
    keepalive: KEEPALIVE_SECONDS,
    reconnectPeriod: 0,
    properties: { receiveMaximum: receiveMaximumFor(CAP) },
  }, { maxPayloadBytes: 65_536 });
  flow = new InboundFlow(service, CAP, pino({ level: 'silent' }));
  service.on('message', (_topic, payload, packet) => {
    received.push(payload.toString());
    // "applied" only when the test says so
    flow.track(packet, new Promise<void>((resolve) => unapplied.push(resolve)));
    mostInFlight = Math.max(mostInFlight, flow.size);
  });
  await service.subscribeAsync('$share/flow-test//p/+/firmware/report', { qos: 1 });
  device = await mqtt.connectAsync(broker.url, { protocolVersion: 5, reconnectPeriod: 0 });
});

afterAll(async () => {
  flow?.stop();
  await device?.endAsync();
  await service?.endAsync();
  await broker?.stop();
});

describe('InboundFlow', () => {
  it('reads no further than the cap until messages are applied, then takes the rest, each once', async () => {
    for (let i = 0; i < MESSAGES; i += 1) await device.publishAsync('/p/d/firmware/report', String(i), { qos: 1 });
    await sleep(500);
    expect(received).toHaveLength(CAP);
    expect(flow.holds).toBeGreaterThan(0);

    // a reply the service publishes while held still gets its PUBACK (its read is let through)
    const replied = await Promise.race([flow.awaitingAck(() => service.publishAsync('/p/d/firmware/pull/reply', '{}', { qos: 1 })).then(() => true), sleep(5_000).then(() => false)]);
    expect(replied).toBe(true);
    expect(received.length).toBeLessThanOrEqual(CAP + 1);

    // held for three keep-alive periods: the connection is still up
    await sleep(3 * KEEPALIVE_SECONDS * 1000 + 500);
    expect(service.connected).toBe(true);
    expect(received.length).toBeLessThanOrEqual(CAP + 1);

    // applying what is in hand lets the rest in, never more than the cap at once
    const deadline = Date.now() + 20_000;
    while (received.length < MESSAGES && Date.now() < deadline) {
      for (const apply of unapplied.splice(0)) apply();
      await sleep(20);
    }
    for (const apply of unapplied.splice(0)) apply();
    expect(received.map(Number).sort((a, b) => a - b)).toEqual(Array.from({ length: MESSAGES }, (_, i) => i));
    expect(mostInFlight).toBeLessThanOrEqual(CAP + 1);
    // every message was acknowledged once applied: nothing is redelivered
    await sleep(500);
    expect(received).toHaveLength(MESSAGES);
  });
});
