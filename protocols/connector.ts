// The connector interface (docs/device-protocol.md#custom-connectors): how Otter talks to devices. The `mqtt` and `http`
// connectors implement it, and so can a module of your own, loaded with CONNECTOR=./my-connector.js.
//
// A connector module's default export is a factory `(context) => Connector`.
//  - `start(onDeviceMessage)`: begin receiving; hand every message from a device to
//    `onDeviceMessage` as received (ids from the transport, body parsed or raw). Otter validates it;
//    the promise resolves once the message is applied (or refused), so a connector may acknowledge
//    it to the device only then.
//  - `send(message)`: deliver one platform → device message; resolve when the transport accepted
//    it, reject (any error) when it could not be delivered — that attempt becomes a `send_error`.
//    `message.via` names the gateway of a child device (deliver through it), null for a direct one.
//  - `stop()`: stop receiving and close connections.
//  - `ready()` (optional): reject when the transport is not usable, for /health/ready.
import type { Logger } from 'pino';
import type { Config } from '../core/config.ts';
import type { IncomingDeviceMessage, OutgoingDeviceMessage, OutcomeRefusalCode, RequestFirmwareReply } from '../core/messages.ts';

export type { IncomingDeviceMessage, OutgoingDeviceMessage } from '../core/messages.ts';

/** What became of a device message (docs/device-protocol.md#outcomes): applied (perhaps only noted as ignored), or refused. */
export type DeviceMessageOutcome =
  | {
      accepted: true;
      /** `ignored`: valid, but it changed nothing (it is on the record's timeline). */
      code?: 'ignored';
      message?: string;
      /** For a REQUEST_FIRMWARE received through the REST API: the RequestFirmwareMessageReply. */
      reply?: RequestFirmwareReply;
    }
  | { accepted: false; code: OutcomeRefusalCode; message?: string; reply?: RequestFirmwareReply };

export type DeviceMessageListener = (message: IncomingDeviceMessage) => Promise<DeviceMessageOutcome>;

export interface Connector {
  readonly name: string;
  start(onDeviceMessage: DeviceMessageListener): Promise<void>;
  send(message: OutgoingDeviceMessage): Promise<void>;
  stop(): Promise<void>;
  ready?(): Promise<void>;
}

export interface ConnectorContext {
  config: Config;
  logger: Logger;
  /** True in processes that run workers: only they receive device messages. */
  receive: boolean;
}

export type ConnectorFactory = (context: ConnectorContext) => Connector | Promise<Connector>;
