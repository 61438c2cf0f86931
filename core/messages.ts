// Device messages of CONTRACT §5 (JetLinks' firmware messages): their types, and the decoder
// that turns what a connector received into a typed message or a refusal with a stable reason.
import { Type, type Static } from 'typebox';
import { Compile } from 'typebox/compile';
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
  | 'device_id_mismatch'
  | 'unknown_device'
  | 'stale_report'
  | 'version_mismatch'
  | 'no_active_upgrade'
  | 'not_started'
  | 'unknown_message_id';

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
  errorReason: Type.Optional(Text(1024)),
  message: Type.Optional(Text(1024)),
});

const UpgradeReplyBody = Type.Object({
  ...Common,
  messageId: Type.String({ minLength: 1, maxLength: 128 }),
  success: Type.Boolean(),
  code: Type.Optional(Text(128)),
  message: Type.Optional(Text(1024)),
});

const RequestBody = Type.Object({
  ...Common,
  messageId: Type.String({ minLength: 1, maxLength: 128 }),
  requestVersion: Type.Optional(Type.String({ maxLength: 64 })),
  currentVersion: Type.Optional(Type.String({ maxLength: 64 })),
});

const Properties = Type.Record(Type.String({ maxLength: 128 }), Type.Unknown(), { maxProperties: 64 });

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
  /** Parsed JSON, or the raw text/bytes when it did not parse. */
  body: unknown;
  /** Set by the connector when the transport itself could not be understood. */
  transportError?: 'bad_json' | 'unknown_topic';
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

/**
 * Validates one incoming message. Ids come from the transport; a payload id that contradicts
 * them is refused. JetLinks' `timestampe` spelling is read as `timestamp`.
 */
export function decodeDeviceMessage(received: IncomingDeviceMessage): DeviceMessage | Refusal {
  // an empty id from the transport is no id at all
  const incoming = { ...received, deviceId: received.deviceId || undefined, productId: received.productId || undefined };
  const { messageType } = incoming;
  if (incoming.transportError === 'unknown_topic') {
    return refusal('unknown_topic', `unknown topic ${incoming.source ?? ''}`.trim());
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
  for (const [field, value] of [['deviceId', incoming.deviceId], ['productId', incoming.productId]] as const) {
    if (value && !idPattern.test(value)) {
      return refusal('invalid_message', `${field} ${JSON.stringify(value.slice(0, 80))} is not 1–64 characters of A-Z a-z 0-9 _ - . :`, { messageType });
    }
  }
  const body: Record<string, unknown> = { ...(raw as Record<string, unknown>) };
  if (body.timestamp === undefined && body.timestampe !== undefined) body.timestamp = body.timestampe;
  delete body.timestampe;
  delete body.messageType;
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
  if (incoming.deviceId && payloadDevice && payloadDevice !== incoming.deviceId) {
    return refusal('device_id_mismatch', `payload deviceId ${payloadDevice} contradicts ${incoming.deviceId}`, {
      messageType,
      deviceId: incoming.deviceId,
    });
  }
  if (incoming.productId && payloadProduct && payloadProduct !== incoming.productId) {
    return refusal('device_id_mismatch', `payload productId ${payloadProduct} contradicts ${incoming.productId}`, {
      messageType,
      deviceId: incoming.deviceId,
    });
  }
  const deviceId = incoming.deviceId ?? payloadDevice;
  if (!deviceId) return refusal('invalid_message', 'deviceId: required', { messageType });
  const timestamp = body.timestamp === undefined ? undefined : Number(body.timestamp);
  const address: Addressed = { productId: incoming.productId ?? payloadProduct, deviceId, timestamp };

  switch (type) {
    case 'UPGRADE_FIRMWARE_PROGRESS': {
      const b = body as Static<typeof ProgressBody>;
      return {
        messageType: type,
        ...address,
        progress: Math.round(b.progress),
        complete: b.complete,
        success: b.success,
        version: b.version,
        errorReason: b.errorReason ?? b.message,
      };
    }
    case 'UPGRADE_FIRMWARE_REPLY': {
      const b = body as Static<typeof UpgradeReplyBody>;
      return { messageType: type, ...address, messageId: b.messageId, success: b.success, code: b.code, message: b.message };
    }
    case 'REQUEST_FIRMWARE': {
      const b = body as Static<typeof RequestBody>;
      return {
        messageType: type,
        ...address,
        messageId: b.messageId,
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

/** The firmware a device is told to install (push) or is handed when it asks (pull). */
export interface FirmwareOffer {
  firmwareId: string;
  version: string;
  url: string;
  sign: string | null;
  signMethod: string | null;
  size: number | null;
  parameters: Record<string, string>;
}

export interface UpgradeFirmwareMessage extends FirmwareOffer {
  messageId: string;
  deviceId: string;
  timestamp: number;
}

export interface RequestFirmwareReply extends Partial<FirmwareOffer> {
  messageId: string;
  deviceId: string;
  success: boolean;
  code?: string;
  message?: string;
  timestamp: number;
}

export interface ReadFirmwareMessage {
  messageId: string;
  deviceId: string;
  timestamp: number;
}

/** A message from the platform to one device, as connectors send it. */
export type OutgoingDeviceMessage =
  | { messageType: 'UPGRADE_FIRMWARE'; productId: string; deviceId: string; body: UpgradeFirmwareMessage }
  | { messageType: 'REQUEST_FIRMWARE_REPLY'; productId: string; deviceId: string; body: RequestFirmwareReply }
  | { messageType: 'READ_FIRMWARE'; productId: string; deviceId: string; body: ReadFirmwareMessage };
