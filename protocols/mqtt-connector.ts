// The `mqtt` connector: JetLinks' firmware topics over MQTT 5, QoS 1 both ways. Device messages
// come in through shared subscriptions ($share/otter/...), so with several worker processes each
// message is handled once; the client asks the broker for a large receive maximum so bursts are
// carried, not dropped.
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type { MqttClient } from 'mqtt';
import { connectCoalesced } from './mqtt-client.ts';
import type { Connector, ConnectorContext, DeviceMessageListener, OutgoingDeviceMessage } from './connector.ts';
import { inboundSubscriptions, isOutboundTopic, outboundTopic, parseInboundTopic } from './mqtt-topics.ts';
import { parseJson } from '../core/messages.ts';

export const SHARE_GROUP = 'otter';

export class MqttConnector implements Connector {
  readonly name = 'mqtt';
  private client: MqttClient | undefined;
  private readonly context: ConnectorContext;

  constructor(context: ConnectorContext) {
    this.context = context;
  }

  async start(onDeviceMessage: DeviceMessageListener): Promise<void> {
    const { config, logger } = this.context;
    const client = await connectCoalesced(config.mqttUrl, {
      protocolVersion: 5,
      clientId: `otter-${os.hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`,
      username: config.mqttUsername,
      password: config.mqttPassword,
      clean: true,
      reconnectPeriod: 1_000,
      connectTimeout: 5_000,
      properties: { receiveMaximum: 65_535 },
    });
    this.client = client;
    client.on('error', (err) => logger.warn({ err: err.message }, 'mqtt error'));
    client.on('offline', () => logger.warn('mqtt broker unreachable, reconnecting'));
    client.on('reconnect', () => logger.debug('mqtt reconnecting'));
    client.on('connect', () => logger.info('mqtt connected'));
    if (!this.context.receive) return;

    client.on('message', (topic, payload) => {
      const parsed = parseInboundTopic(topic);
      // shared subscriptions cannot use noLocal: what the platform sends comes back; skip it
      if (!parsed && isOutboundTopic(topic)) return;
      if (!parsed) {
        void onDeviceMessage({ messageType: undefined, body: undefined, transportError: 'unknown_topic', source: topic });
        return;
      }
      const json = parseJson(payload);
      void onDeviceMessage({
        messageType: parsed.messageType,
        productId: parsed.productId,
        deviceId: parsed.deviceId,
        body: json.ok ? json.body : payload.toString('utf8').slice(0, 256),
        ...(json.ok ? {} : { transportError: 'bad_json' as const }),
        source: topic,
      });
    });
    // mqtt.js subscribes again by itself after a reconnect (resubscribe: true)
    await client.subscribeAsync(inboundSubscriptions(SHARE_GROUP), { qos: 1 });
  }

  async send(message: OutgoingDeviceMessage): Promise<void> {
    if (!this.client) throw new Error('mqtt connector is not started');
    if (!this.client.connected) throw new Error('mqtt broker is not connected');
    const topic = outboundTopic(message.messageType, message.productId, message.deviceId);
    await this.client.publishAsync(topic, JSON.stringify(message.body), { qos: 1 });
  }

  async ready(): Promise<void> {
    if (!this.client?.connected) throw new Error('mqtt broker is not connected');
  }

  async stop(): Promise<void> {
    await this.client?.endAsync();
    this.client = undefined;
  }
}

export function createMqttConnector(context: ConnectorContext): Connector {
  return new MqttConnector(context);
}
