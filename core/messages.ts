// Device messages of docs/device-protocol.md (JetLinks' firmware messages): their types, and the decoder
// that turns what a connector received into a typed message or a refusal with a stable reason.
import { Type, type Static } from 'typebox';
import { Compile } from 'typebox/compile';
import { randomUUID } from 'node:crypto';
import { readAsJetLinks } from './jetlinks-json.ts';
import { findUnstorable } from './storable-json.ts';

export const INBOUND_MESSAGE_TYPES = [
  'REPORT_FIRMWARE',
  'REQUEST_FIRMWARE',
  'UPGRADE_FIRMWARE_REPLY',
  'UPGRADE_FIRMWARE_PROGRESS',
  'READ_FIRMWARE_REPLY',
] as const;
export type InboundMessageType = (typeof INBOUND_MESSAGE_TYPES)[number];

export const OUTBOUND_MESSAGE_TYPES = ['UPGRADE_FIRMWARE', 'REQUEST_FIRMWARE_REPLY', 'READ_FIRMWARE'] as const;
export type OutboundMessageType = (typeof OUTBOUND_MESSAGE_TYPES)[number];

/** Why a message was refused; the `reason` label of otter_device_messages_total. */
export type RefusalReason =
  | 'bad_json'
  | 'invalid_message'
  | 'unknown_topic'
  | 'unknown_message_type'
  | 'unknown_device'
  | 'stale_report'
  | 'version_mismatch'
  | 'no_active_upgrade'
  | 'not_started'
  | 'unknown_message_id'
  | 'product_mismatch'
  | 'gateway_mismatch'
  | 'rate_limited'
  | 'too_large'
  | 'backlog_full';

/**
 * Why a message was not applied, as its outcome says: a refusal of the message, or a refusal of
 * this process (it cannot apply messages now, or does not handle this type).
 */
export type OutcomeRefusalCode = RefusalReason | 'internal_error' | 'not_supported' | 'not_receiving';

const ID_PATTERN = '^[A-Za-z0-9_.:-]{1,64}$';
const Id = Type.String({ pattern: ID_PATTERN });
const Text = (maxLength: number) => Type.String({ maxLength });
// milliseconds since the epoch; JetLinks' own examples send it as a numeric string. Bounded so it
// fits the bigint column it is kept in (a larger one is malformed, not a server error).
const Millis = Type.Union([Type.Number({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }), Type.String({ pattern: '^[0-9]{1,16}$' })]);

const Common = {
  deviceId: Type.Optional(Id),
  productId: Type.Optional(Id),
  timestamp: Type.Optional(Millis),
};

const ProgressBody = Type.Object({
  ...Common,
  messageId: Type.Optional(Text(128)),
  progress: Type.Number({ minimum: 0, maximum: 100 }),
  complete: Type.Boolean(),
  success: Type.Boolean(),
  version: Type.String({ minLength: 1, maxLength: 64 }),
  // longer texts are cut (to MAX_TEXT), not refused
  errorReason: Type.Optional(Type.String()),
  message: Type.Optional(Type.String()),
});

const UpgradeReplyBody = Type.Object({
  ...Common,
  messageId: Type.String({ minLength: 1, maxLength: 128 }),
  success: Type.Boolean(),
  code: Type.Optional(Text(128)),
  message: Type.Optional(Type.String()),
});

const RequestBody = Type.Object({
  ...Common,
  // optional, as in JetLinks: the platform makes one for its reply
  messageId: Type.Optional(Type.String({ maxLength: 128 })),
  requestVersion: Type.Optional(Type.String({ maxLength: 64 })),
  currentVersion: Type.Optional(Type.String({ maxLength: 64 })),
});

// how many properties, and how large, are judged before this (too_large), not here
const Properties = Type.Record(Type.String({ maxLength: 128 }), Type.Unknown());
/** A report's `properties`: at most this many entries and this many bytes as JSON. */
export const MAX_PROPERTIES = 64;
export const MAX_PROPERTIES_BYTES = 8 * 1024;
/** A device's `errorReason` / `message` is cut to this many characters. */
export const MAX_TEXT = 1_024;

const ReportBody = Type.Object({
  ...Common,
  messageId: Type.Optional(Text(128)),
  version: Type.String({ minLength: 1, maxLength: 64 }),
  properties: Type.Optional(Properties),
});

const ReadReplyBody = Type.Object({
  ...Common,
  messageId: Type.String({ minLength: 1, maxLength: 128 }),
  version: Type.String({ minLength: 1, maxLength: 64 }),
  properties: Type.Optional(Properties),
});

const validators = {
  UPGRADE_FIRMWARE_PROGRESS: Compile(ProgressBody),
  UPGRADE_FIRMWARE_REPLY: Compile(UpgradeReplyBody),
  REQUEST_FIRMWARE: Compile(RequestBody),
  REPORT_FIRMWARE: Compile(ReportBody),
  READ_FIRMWARE_REPLY: Compile(ReadReplyBody),
};

interface Addressed {
  productId: string | undefined;
  deviceId: string;
  /** A child device's message: the gateway it came through, and that gateway's product (from the topic). */
  gateway?: GatewayRoute;
  /** The device's own time (ms), when it sent one. */
  timestamp: number | undefined;
}

export interface ProgressMessage extends Addressed {
  messageType: 'UPGRADE_FIRMWARE_PROGRESS';
  progress: number;
  complete: boolean;
  success: boolean;
  version: string;
  errorReason: string | undefined;
}
export interface UpgradeReplyMessage extends Addressed {
  messageType: 'UPGRADE_FIRMWARE_REPLY';
  messageId: string;
  success: boolean;
  code: string | undefined;
  message: string | undefined;
}
export interface RequestFirmwareMessage extends Addressed {
  messageType: 'REQUEST_FIRMWARE';
  messageId: string;
  requestVersion: string | undefined;
  currentVersion: string | undefined;
}
export interface ReportFirmwareMessage extends Addressed {
  messageType: 'REPORT_FIRMWARE';
  version: string;
  properties: Record<string, unknown> | undefined;
}
export interface ReadFirmwareReplyMessage extends Addressed {
  messageType: 'READ_FIRMWARE_REPLY';
  messageId: string;
  version: string;
  properties: Record<string, unknown> | undefined;
}

export type DeviceMessage =
  | ProgressMessage
  | UpgradeReplyMessage
  | RequestFirmwareMessage
  | ReportFirmwareMessage
  | ReadFirmwareReplyMessage;

/** What a connector hands over: the message as received, before any validation. */
export interface IncomingDeviceMessage {
  messageType: string | undefined;
  /** From the transport (MQTT topic), when it carries them. */
  productId?: string;
  deviceId?: string;
  /** A child device's message relayed by a gateway: the gateway's id and product (from the topic). */
  gateway?: GatewayRoute;
  /** Parsed JSON, or the raw text/bytes when it did not parse. */
  body: unknown;
  /** Set by the connector when the transport itself could not be understood. */
  transportError?: 'bad_json' | 'unknown_topic' | 'too_large' | 'backlog_full';
  /** With transportError too_large: the size of the payload that was dropped unread. */
  payloadBytes?: number;
  /** A short description of where it came from, for logs (e.g. the MQTT topic). */
  source?: string;
}

export interface Refusal {
  refused: true;
  reason: RefusalReason;
  detail: string;
  messageType?: string;
  deviceId?: string;
}

export function refusal(reason: RefusalReason, detail: string, extra: Partial<Refusal> = {}): Refusal {
  return { refused: true, reason, detail, ...extra };
}

export function isRefusal(value: unknown): value is Refusal {
  return typeof value === 'object' && value !== null && (value as Refusal).refused === true;
}

/** Parses JSON text into a body, or undefined when it is not JSON. */
export function parseJson(text: string | Buffer): { ok: true; body: unknown } | { ok: false } {
  try {
    return { ok: true, body: JSON.parse(typeof text === 'string' ? text : text.toString('utf8')) };
  } catch {
    return { ok: false };
  }
}

function firstError(messageType: InboundMessageType, body: unknown): string {
  for (const error of validators[messageType].Errors(body)) {
    const field = error.instancePath ? error.instancePath.slice(1).replace(/\//g, '.') : 'message';
    const missing = (error.params as { requiredProperties?: string[] }).requiredProperties;
    if (missing && missing.length > 0) return `${missing.join(', ')}: required`;
    return `${field}: ${error.message}`;
  }
  return 'invalid message';
}

/** Why a report's `properties` are too large (too many, or too many bytes as JSON), or undefined. */
function oversizedProperties(properties: unknown): string | undefined {
  if (typeof properties !== 'object' || properties === null || Array.isArray(properties)) return undefined;
  let count = 0;
  for (const key in properties) {
    if (Object.hasOwn(properties, key)) count += 1;
  }
  if (count > MAX_PROPERTIES) return `properties: ${count} entries, at most ${MAX_PROPERTIES} are taken`;
  const bytes = Buffer.byteLength(JSON.stringify(properties));
  if (bytes > MAX_PROPERTIES_BYTES) return `properties: ${bytes} bytes as JSON, at most ${MAX_PROPERTIES_BYTES} are taken`;
  return undefined;
}

/** A device's text cut to MAX_TEXT characters, never through a surrogate pair. */
function cut(text: string | undefined): string | undefined {
  if (text === undefined || text.length <= MAX_TEXT) return text;
  const last = text.charCodeAt(MAX_TEXT - 1);
  const end = last >= 0xd800 && last <= 0xdbff ? MAX_TEXT - 1 : MAX_TEXT;
  return text.slice(0, end);
}

/**
 * Validates one incoming message, read as JetLinks reads it (see readAsJetLinks). Ids come from
 * the transport; the payload's count only where the transport has none (the REST API). JetLinks'
 * `timestampe` spelling is read as `timestamp`.
 */
export function decodeDeviceMessage(received: IncomingDeviceMessage): DeviceMessage | Refusal {
  // an empty id from the transport is no id at all
  const incoming = { ...received, deviceId: received.deviceId || undefined, productId: received.productId || undefined };
  const { messageType } = incoming;
  if (incoming.transportError === 'unknown_topic') {
    return refusal('unknown_topic', `unknown topic ${incoming.source ?? ''}`.trim());
  }
  if (incoming.transportError === 'too_large') {
    return refusal('too_large', `payload of ${incoming.payloadBytes ?? 'unknown'} bytes is larger than the limit (DEVICE_MESSAGE_MAX_BYTES)`, {
      messageType,
      deviceId: incoming.deviceId,
    });
  }
  if (incoming.transportError === 'backlog_full') {
    return refusal('backlog_full', 'dropped unread: the backlog of received messages is full and QoS 0 cannot be held back', {
      messageType,
      deviceId: incoming.deviceId,
    });
  }
  if (incoming.transportError === 'bad_json') {
    return refusal('bad_json', 'payload is not valid JSON', { messageType, deviceId: incoming.deviceId });
  }
  // before the type: a REST message that is not even an object has no messageType to judge
  const raw = incoming.body;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return refusal('invalid_message', 'payload must be a JSON object', { messageType, deviceId: incoming.deviceId });
  }
  if (!messageType || !(INBOUND_MESSAGE_TYPES as readonly string[]).includes(messageType)) {
    return refusal('unknown_message_type', `unknown messageType ${JSON.stringify(messageType ?? null)}`, {
      deviceId: incoming.deviceId,
    });
  }
  const type = messageType as InboundMessageType;
  const idPattern = new RegExp(ID_PATTERN);
  const ids = [['deviceId', incoming.deviceId], ['productId', incoming.productId], ['gatewayId', incoming.gateway?.gatewayId], ['gatewayProductId', incoming.gateway?.gatewayProductId]] as const;
  for (const [field, value] of ids) {
    if (value && !idPattern.test(value)) {
      return refusal('invalid_message', `${field} ${JSON.stringify(value.slice(0, 80))} is not 1–64 characters of A-Z a-z 0-9 _ - . :`, { messageType });
    }
  }
  const fields: Record<string, unknown> = { ...(raw as Record<string, unknown>) };
  if (fields.timestamp === undefined && fields.timestampe !== undefined) fields.timestamp = fields.timestampe;
  // the transport's ids decide: JetLinks' codec sets a message's deviceId from its topic, over the payload's
  if (incoming.deviceId) delete fields.deviceId;
  if (incoming.productId) delete fields.productId;
  const body = readAsJetLinks(type, fields);
  const oversized = oversizedProperties(body.properties);
  if (oversized) return refusal('too_large', oversized, { messageType, deviceId: incoming.deviceId });
  if (!validators[type].Check(body)) {
    return refusal('invalid_message', firstError(type, body), { messageType, deviceId: incoming.deviceId });
  }
  const unstorable = findUnstorable(body);
  if (unstorable) {
    const field = unstorable.path.slice(1).replace(/\//g, '.') || 'message';
    return refusal('invalid_message', `${field}: ${unstorable.problem}`, { messageType, deviceId: incoming.deviceId });
  }
  const payloadDevice = body.deviceId as string | undefined;
  const payloadProduct = body.productId as string | undefined;
  const deviceId = incoming.deviceId ?? payloadDevice;
  if (!deviceId) return refusal('invalid_message', 'deviceId: required', { messageType });
  const timestamp = body.timestamp === undefined ? undefined : Number(body.timestamp);
  const address: Addressed = { productId: incoming.productId ?? payloadProduct, deviceId, timestamp };
  if (incoming.gateway) address.gateway = { gatewayId: incoming.gateway.gatewayId, gatewayProductId: incoming.gateway.gatewayProductId };

  switch (type) {
    case 'UPGRADE_FIRMWARE_PROGRESS': {
      const b = body as Static<typeof ProgressBody>;
      return {
        messageType: type,
        ...address,
        progress: b.progress,
        complete: b.complete,
        success: b.success,
        version: b.version,
        errorReason: cut(b.errorReason ?? b.message),
      };
    }
    case 'UPGRADE_FIRMWARE_REPLY': {
      const b = body as Static<typeof UpgradeReplyBody>;
      return { messageType: type, ...address, messageId: b.messageId, success: b.success, code: b.code, message: cut(b.message) };
    }
    case 'REQUEST_FIRMWARE': {
      const b = body as Static<typeof RequestBody>;
      return {
        messageType: type,
        ...address,
        messageId: b.messageId || randomUUID(),
        requestVersion: b.requestVersion || undefined,
        currentVersion: b.currentVersion || undefined,
      };
    }
    case 'REPORT_FIRMWARE': {
      const b = body as Static<typeof ReportBody>;
      return { messageType: type, ...address, version: b.version, properties: b.properties };
    }
    case 'READ_FIRMWARE_REPLY': {
      const b = body as Static<typeof ReadReplyBody>;
      return { messageType: type, ...address, messageId: b.messageId, version: b.version, properties: b.properties };
    }
  }
}

/**
 * The firmware a device is told to install (push) or is handed when it asks (pull). What the
 * catalogue does not know (sign, signMethod, size) is left out, never sent as null.
 */
export interface FirmwareOffer {
  firmwareId: string;
  version: string;
  url: string;
  sign?: string;
  signMethod?: string;
  size?: number;
  parameters: Record<string, string>;
}

/** The headers JetLinks' platform sets on an upgrade and a pull reply: the device acts in its own time. */
export interface AsyncHeaders {
  async: true;
}

// Platform → device bodies as JetLinks' platform serialises them: with their messageType, and
// without null fields (see core/platform-messages.ts, which builds them).
export interface UpgradeFirmwareMessage extends FirmwareOffer {
  messageType: 'UPGRADE_FIRMWARE';
  messageId: string;
  deviceId: string;
  timestamp: number;
  headers: AsyncHeaders;
}

export interface RequestFirmwareReply extends Partial<FirmwareOffer> {
  messageType: 'REQUEST_FIRMWARE_REPLY';
  messageId: string;
  deviceId: string;
  success: boolean;
  code?: string;
  message?: string;
  timestamp: number;
  headers: AsyncHeaders;
}

export interface ReadFirmwareMessage {
  messageType: 'READ_FIRMWARE';
  messageId: string;
  deviceId: string;
  timestamp: number;
}

/** The gateway a child device talks through: its id and its product (the topic's product). */
export interface GatewayRoute {
  gatewayId: string;
  gatewayProductId: string;
}

/**
 * How a message reaches its device: `via` a gateway (the child's topics under the gateway's), or
 * directly (null). Left undefined, the service fills it in from the device registry; the upgrade
 * sender reads it itself, before it writes a send (workers/upgrade-sender.ts).
 */
interface Routed {
  via?: GatewayRoute | null;
}

/** A message from the platform to one device, as connectors send it. */
export type OutgoingDeviceMessage =
  | ({ messageType: 'UPGRADE_FIRMWARE'; productId: string; deviceId: string; body: UpgradeFirmwareMessage } & Routed)
  | ({ messageType: 'REQUEST_FIRMWARE_REPLY'; productId: string; deviceId: string; body: RequestFirmwareReply } & Routed)
  | ({ messageType: 'READ_FIRMWARE'; productId: string; deviceId: string; body: ReadFirmwareMessage } & Routed);
