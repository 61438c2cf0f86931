// Back-pressure on the MQTT side. A QoS 1 message is acknowledged (PUBACK) only once it is applied
// or refused, and the receive maximum asked of the broker is the backlog cap, so a broker that
// honours it stops sending at the cap. The cap is also enforced here, whatever the broker does
// (Mosquitto 2.0.11 sends a whole new window for each PUBACK): at the cap, mqtt.js is held before
// it reads the next packet, so the socket stops being read and the broker holds the rest. While
// held, pings keep the connection alive; a reply the service is waiting to publish widens the cap
// by one, since its PUBACK may be among the packets not read yet.
import type { MqttClient } from 'mqtt';
import type { IPublishPacket } from 'mqtt-packet';
import type { Logger } from 'pino';

/** The MQTT 5 receive maximum for a backlog cap (the protocol's largest is 65,535). */
export function receiveMaximumFor(cap: number): number {
  return Math.max(1, Math.min(65_535, cap));
}

/** Handed to mqtt.js's handleMessage callback: it then skips its own PUBACK (and goes on reading). */
class AckLater extends Error {}
const ACK_LATER = new AckLater('acknowledged once applied');

interface Internals {
  _sendPacket(packet: { cmd: 'puback'; messageId: number; reasonCode: number }): void;
}

export class InboundFlow {
  private inFlight = 0;
  /** Publishes the service waits for while taking messages in (replies to pull requests). */
  private awaitedSends = 0;
  private readonly deferred = new WeakSet<IPublishPacket>();
  /** mqtt.js's continuation while reading is held at the cap. */
  private held: (() => void) | undefined;
  private keepAlive: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly client: MqttClient;
  private readonly cap: number;
  private readonly logger: Logger;
  /** How many times reading was held at the cap (for tests and logs). */
  holds = 0;

  constructor(client: MqttClient, cap: number, logger: Logger) {
    this.client = client;
    this.cap = cap;
    this.logger = logger;
    // mqtt.js calls this after emitting `message` and reads the next packet only once its callback
    // runs; the callback sends the PUBACK unless it is given an error
    client.handleMessage = (packet, callback) => {
      const go = this.deferred.delete(packet) ? () => callback(ACK_LATER) : () => callback();
      if (this.atCap()) this.hold(go);
      else go();
    };
  }

  /** Messages taken from the broker and not yet applied. */
  get size(): number {
    return this.inFlight;
  }

  /** True at the cap: a QoS 0 message (which the broker does not hold back) cannot be taken. */
  get full(): boolean {
    return this.inFlight >= this.cap;
  }

  /** Follows one received message until `applied` settles, then acknowledges it (QoS 1). */
  track(packet: IPublishPacket, applied: Promise<unknown>): void {
    this.inFlight += 1;
    const stream = this.client.stream;
    if (packet.qos === 1 && packet.messageId !== undefined) this.deferred.add(packet);
    const settle = () => {
      this.inFlight -= 1;
      if (packet.qos === 1 && packet.messageId !== undefined && this.client.stream === stream && this.client.connected) {
        // a PUBACK belongs to the connection the message came on: after a reconnect (a clean
        // session) its id may name another message, so it is not sent at all
        (this.client as unknown as Internals)._sendPacket({ cmd: 'puback', messageId: packet.messageId, reasonCode: 0 });
      }
      this.release();
    };
    applied.then(settle, settle);
  }

  /** Around a publish whose PUBACK the service waits for while taking messages in. */
  async awaitingAck<T>(publish: () => Promise<T>): Promise<T> {
    this.awaitedSends += 1;
    this.release();
    try {
      return await publish();
    } finally {
      this.awaitedSends -= 1;
    }
  }

  /** Never holds again (shutdown: mqtt.js ends only once its own publishes are acknowledged). */
  stop(): void {
    this.stopped = true;
    this.release();
  }

  private atCap(): boolean {
    return !this.stopped && this.inFlight >= this.cap + this.awaitedSends;
  }

  private hold(go: () => void): void {
    // a continuation still held belongs to a connection that is gone (one packet at a time per connection)
    const previous = this.held;
    this.held = go;
    previous?.();
    this.holds += 1;
    if (this.holds === 1 || this.holds % 1_000 === 0) this.logger.info({ cap: this.cap, holds: this.holds }, 'device message backlog at its cap: reading from the broker paused');
    // the broker's PINGRESPs are not read while held: keep it from dropping us, and mqtt.js from
    // taking the silence for a dead connection
    this.keepAlive ??= setInterval(() => {
      if (!this.client.connected) return;
      this.client.sendPing();
      this.client.reschedulePing(true);
    }, Math.max(1, this.client.keepalive / 2) * 1000);
    this.keepAlive.unref();
  }

  private release(): void {
    if (!this.held || this.atCap()) return;
    const go = this.held;
    this.held = undefined;
    clearInterval(this.keepAlive);
    this.keepAlive = undefined;
    go();
  }
}
