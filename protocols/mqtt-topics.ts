// JetLinks' official MQTT topics for firmware messages, both ways: a device's own
// (`/{productId}/{deviceId}/firmware/…`) and a child device's through its gateway
// (`/{gatewayProductId}/{gatewayId}/child/{childId}/firmware/…`, replies also on `child-reply`).
import type { GatewayRoute, InboundMessageType, OutboundMessageType } from '../core/messages.ts';

const INBOUND_SUFFIXES: Record<string, InboundMessageType> = {
  'firmware/upgrade/reply': 'UPGRADE_FIRMWARE_REPLY',
  'firmware/upgrade/progress': 'UPGRADE_FIRMWARE_PROGRESS',
  'firmware/pull': 'REQUEST_FIRMWARE',
  'firmware/report': 'REPORT_FIRMWARE',
  'firmware/read/reply': 'READ_FIRMWARE_REPLY',
};

const OUTBOUND_SUFFIXES: Record<OutboundMessageType, string> = {
  UPGRADE_FIRMWARE: 'firmware/upgrade',
  REQUEST_FIRMWARE_REPLY: 'firmware/pull/reply',
  READ_FIRMWARE: 'firmware/read',
};

/** The levels between a gateway's ids and its child's id: messages relayed for the child, and its replies. */
const CHILD_LEVELS = ['child', 'child-reply'] as const;

/**
 * Topic filters the platform subscribes to, as shared subscriptions of `group`: the two one-level
 * inbound topics by name, and every firmware topic two or more levels deep — so a message on an
 * unknown deeper topic (`…/firmware/upgrade/status`) is refused and counted, while the
 * platform's own pushes (`…/firmware/upgrade`, `…/firmware/read`) do not come back to it: shared
 * subscriptions cannot use MQTT's No Local option. Only `…/firmware/pull/reply` still returns,
 * and isOutboundTopic drops it. The same three filters again under each gateway's `child/{childId}`
 * and `child-reply/{childId}`; no two filters match one topic, so nothing arrives twice.
 */
export function inboundSubscriptions(group: string): string[] {
  const filters = (prefix: string) => [`${prefix}/firmware/report`, `${prefix}/firmware/pull`, `${prefix}/firmware/+/+/#`];
  return [
    ...filters('/+/+'),
    ...CHILD_LEVELS.flatMap((level) => filters(`/+/+/${level}/+`)),
  ].map((filter) => `$share/${group}/${filter}`);
}

/** A platform → device topic: the platform's own message, received back through its subscription. */
export function isOutboundTopic(topic: string): boolean {
  const parts = topic.split('/');
  if (parts.length < 5 || parts[0] !== '') return false;
  // a child's topic: what the platform sends goes under `child`, never under `child-reply`
  const suffix = parts[3] === 'child' && parts.length >= 7 ? parts.slice(5).join('/') : parts.slice(3).join('/');
  return Object.values(OUTBOUND_SUFFIXES).includes(suffix);
}

/** The topic of a message to a device, or to a child device `via` its gateway. */
export function outboundTopic(messageType: OutboundMessageType, productId: string, deviceId: string, via?: GatewayRoute | null): string {
  if (via) return `/${via.gatewayProductId}/${via.gatewayId}/child/${deviceId}/${OUTBOUND_SUFFIXES[messageType]}`;
  return `/${productId}/${deviceId}/${OUTBOUND_SUFFIXES[messageType]}`;
}

export interface ParsedTopic {
  /** The device's product; absent for a child's message (the topic names only its gateway's). */
  productId?: string;
  deviceId: string;
  messageType: InboundMessageType;
  /** Set for a child's message: the gateway it came through. */
  gateway?: GatewayRoute;
}

/**
 * `/{productId}/{deviceId}/firmware/...` or `/{gatewayProductId}/{gatewayId}/child[-reply]/{childId}/firmware/...`
 * → its parts, or undefined for any other topic.
 */
export function parseInboundTopic(topic: string): ParsedTopic | undefined {
  const parts = topic.split('/');
  if (parts.length < 5 || parts[0] !== '') return undefined;
  const [, productId, deviceId, ...rest] = parts;
  if (!productId || !deviceId) return undefined;
  if ((CHILD_LEVELS as readonly string[]).includes(rest[0]!) && rest[2] === 'firmware') {
    const childId = rest[1];
    const messageType = INBOUND_SUFFIXES[rest.slice(2).join('/')];
    if (!childId || !messageType) return undefined;
    return { deviceId: childId, messageType, gateway: { gatewayId: deviceId, gatewayProductId: productId } };
  }
  const messageType = INBOUND_SUFFIXES[rest.join('/')];
  if (!messageType) return undefined;
  return { productId, deviceId, messageType };
}
