// The `mqtt` connector: JetLinks' firmware topics over MQTT 5, QoS 1 both ways. Device messages
// come in through shared subscriptions ($share/<MQTT_SHARE_GROUP>/...), so with several worker
// processes of one deployment each message is handled once, and another deployment on the same
// broker (another group) gets its own copy. A message is acknowledged once applied, and with
// DEVICE_MESSAGE_BACKLOG messages in hand the connector stops reading from the broker
// (mqtt-inbound-flow.ts); payloads over DEVICE_MESSAGE_MAX_BYTES are dropped before they are read
// whole (mqtt-size-limit.ts) and refused too_large.
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type { MqttClient } from 'mqtt';
import type { IPublishPacket } from 'mqtt-packet';
import { connectCoalesced } from './mqtt-client.ts';
import type { Connector, ConnectorContext, DeviceMessageListener, OutgoingDeviceMessage } from './connector.ts';
import { inboundSubscriptions, isOutboundTopic, outboundTopic, parseInboundTopic } from './mqtt-topics.ts';
import { parseJson, type IncomingDeviceMessage } from '../core/messages.ts';
import { InboundFlow, receiveMaximumFor } from './mqtt-inbound-flow.ts';
import { droppedPayloadBytes } from './mqtt-size-limit.ts';
import { brokerConnectError, brokerTlsOptions } from './mqtt-tls.ts';

export class MqttConnector implements Connector {
  readonly name = 'mqtt';
  private client: MqttClient | undefined;
  private flow: InboundFlow | undefined;
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
      ...brokerTlsOptions(config),
      clean: true,
      reconnectPeriod: 1_000,
      connectTimeout: 5_000,
      properties: { receiveMaximum: receiveMaximumFor(config.deviceMessageBacklog) },
    }, { maxPayloadBytes: config.deviceMessageMaxBytes }).catch((error: unknown) => {
      throw brokerConnectError(config.mqttUrl, error);
    });
    this.client = client;
    client.on('error', (err) => logger.warn({ err: err.message }, 'mqtt error'));
    client.on('offline', () => logger.warn('mqtt broker unreachable, reconnecting'));
    client.on('reconnect', () => logger.debug('mqtt reconnecting'));
    client.on('connect', () => logger.info('mqtt connected'));
    if (!this.context.receive) return;

    const flow = new InboundFlow(client, config.deviceMessageBacklog, logger);
    this.flow = flow;
    // every message handed over is followed until applied, then acknowledged
    const deliver = (packet: IPublishPacket, message: IncomingDeviceMessage) => {
      // QoS 0 is not held back by the broker: at the cap it is dropped (and counted) rather than held
      if (packet.qos === 0 && flow.full) {
        void onDeviceMessage({ ...message, body: undefined, transportError: 'backlog_full' });
        return;
      }
      flow.track(packet, onDeviceMessage(message));
    };

    client.on('message', (topic, payload, packet) => {
      const parsed = parseInboundTopic(topic);
      // shared subscriptions cannot use noLocal: what the platform sends comes back; skip it
      if (!parsed && isOutboundTopic(topic)) return;
      if (!parsed) {
        deliver(packet, { messageType: undefined, body: undefined, transportError: 'unknown_topic', source: topic });
        return;
      }
      const dropped = droppedPayloadBytes(payload);
      if (dropped !== undefined) {
        deliver(packet, { messageType: parsed.messageType, productId: parsed.productId, deviceId: parsed.deviceId, body: undefined, transportError: 'too_large', payloadBytes: dropped, source: topic });
        return;
      }
      const json = parseJson(payload);
      deliver(packet, {
        messageType: parsed.messageType,
        productId: parsed.productId,
        deviceId: parsed.deviceId,
        ...(parsed.gateway ? { gateway: parsed.gateway } : {}),
        body: json.ok ? json.body : payload.toString('utf8').slice(0, 256),
        ...(json.ok ? {} : { transportError: 'bad_json' as const }),
        source: topic,
      });
    });
    // mqtt.js subscribes again by itself after a reconnect (resubscribe: true)
    await client.subscribeAsync(inboundSubscriptions(config.mqttShareGroup), { qos: 1 });
  }

  async send(message: OutgoingDeviceMessage): Promise<void> {
    if (!this.client) throw new Error('mqtt connector is not started');
    if (!this.client.connected) throw new Error('mqtt broker is not connected');
    const topic = outboundTopic(message.messageType, message.productId, message.deviceId, message.via);
    const publish = () => this.client!.publishAsync(topic, JSON.stringify(message.body), { qos: 1 });
    // the service waits for a pull reply while taking messages in: reading must go on for its PUBACK
    if (message.messageType === 'REQUEST_FIRMWARE_REPLY' && this.flow) await this.flow.awaitingAck(publish);
    else await publish();
  }

  async ready(): Promise<void> {
    if (!this.client?.connected) throw new Error('mqtt broker is not connected');
  }

  async stop(): Promise<void> {
    this.flow?.stop();
    await this.client?.endAsync();
    this.client = undefined;
  }
}

export function createMqttConnector(context: ConnectorContext): Connector {
  return new MqttConnector(context);
}
