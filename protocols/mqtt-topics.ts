// JetLinks' official MQTT topics for firmware messages (CONTRACT §5), both ways.
import type { InboundMessageType, OutboundMessageType } from '../core/messages.ts';

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

/**
 * Topic filters the platform subscribes to, as shared subscriptions of `group`: the two one-level
 * inbound topics by name, and every firmware topic two or more levels deep — so a message on an
 * unknown deeper topic (`…/firmware/upgrade/status`) is refused and counted (CONTRACT §5), while the
 * platform's own pushes (`…/firmware/upgrade`, `…/firmware/read`) do not come back to it: shared
 * subscriptions cannot use MQTT's No Local option. Only `…/firmware/pull/reply` still returns,
 * and isOutboundTopic drops it.
 */
export function inboundSubscriptions(group: string): string[] {
  return [`$share/${group}//+/+/firmware/report`, `$share/${group}//+/+/firmware/pull`, `$share/${group}//+/+/firmware/+/+/#`];
}

/** A platform → device topic: the platform's own message, received back through its subscription. */
export function isOutboundTopic(topic: string): boolean {
  const parts = topic.split('/');
  if (parts.length < 5 || parts[0] !== '') return false;
  const suffix = parts.slice(3).join('/');
  return Object.values(OUTBOUND_SUFFIXES).includes(suffix);
}

export function outboundTopic(messageType: OutboundMessageType, productId: string, deviceId: string): string {
  return `/${productId}/${deviceId}/${OUTBOUND_SUFFIXES[messageType]}`;
}

export interface ParsedTopic {
  productId: string;
  deviceId: string;
  messageType: InboundMessageType;
}

/** `/{productId}/{deviceId}/firmware/...` → its parts, or undefined for any other topic. */
export function parseInboundTopic(topic: string): ParsedTopic | undefined {
  const parts = topic.split('/');
  if (parts.length < 5 || parts[0] !== '') return undefined;
  const [, productId, deviceId, ...rest] = parts;
  const messageType = INBOUND_SUFFIXES[rest.join('/')];
  if (!productId || !deviceId || !messageType) return undefined;
  return { productId, deviceId, messageType };
}
