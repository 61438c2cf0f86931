// Webhook rules without I/O (docs/rest-api.md#webhooks): the event types, a delivery's body and
// signature, and when a failed delivery is tried again.
import { createHmac } from 'node:crypto';

export const WEBHOOK_EVENT_TYPES = [
  'task.state_changed',
  'task.completed',
  'record.final',
  'device.registered',
  // reserved for rollout waves (docs/rest-api.md#webhooks): accepted in a subscription, not sent yet
  'wave.gate',
] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

export type WebhookDeliveryState = 'pending' | 'delivered' | 'failed';

/** At most this many events in one delivery. */
export const WEBHOOK_MAX_EVENTS = 1_000;
/** At most this many events in one outbox row (migration 0016 writes the same number). */
export const OUTBOX_ROW_EVENTS = 100;
/** A delivery holds at most this much time of events: a partial batch leaves once its oldest event is this old. */
export const WEBHOOK_BATCH_WINDOW_MS = 1_000;
/** An answer must come within this long, or the attempt failed. */
export const WEBHOOK_TIMEOUT_MS = 10_000;
/** A delivery is retried for this long after it was batched; then it is `failed` and the next one goes. */
export const WEBHOOK_RETRY_WINDOW_MS = 24 * 3_600_000;
/** The longest wait between two attempts. */
export const WEBHOOK_RETRY_MAX_DELAY_MS = 15 * 60_000;
/** How long finished deliveries (and their events) stay listed before they are deleted. */
export const WEBHOOK_HISTORY_MS = 7 * 86_400_000;

export const SIGNATURE_HEADER = 'x-otter-signature';
export const DELIVERY_HEADER = 'x-otter-delivery';

/**
 * One event, `{ id, type, at, data }`, as JSON text, its `data` spliced in as Postgres wrote it: the
 * worker never parses and re-serialises what it only passes on. `id` is unique and the same in every
 * retry, and rises within a task in the order its events are delivered.
 */
export function eventJson(id: number, type: string, at: string, dataJson: string): string {
  return `{"id":${id},"type":${JSON.stringify(type)},"at":${JSON.stringify(at)},"data":${dataJson}}`;
}

/** The exact body of a delivery: what is signed and sent. `events` are JSON texts (eventJson). */
export function deliveryBody(deliveryId: string, events: readonly string[]): string {
  return `{"deliveryId":${JSON.stringify(deliveryId)},"events":[${events.join(',')}]}`;
}

/** `sha256=<hex HMAC-SHA256 of the body with the hook's secret>`, the X-Otter-Signature header. */
export function signDelivery(secret: string, body: string | Uint8Array): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/** How long to wait after the `attempts`-th failed attempt: base, doubled each time, at most the cap. */
export function retryDelayMs(attempts: number, baseMs: number, maxMs = WEBHOOK_RETRY_MAX_DELAY_MS): number {
  const exponent = Math.min(Math.max(attempts - 1, 0), 40);
  return Math.min(baseMs * 2 ** exponent, maxMs);
}

/**
 * What follows a failed attempt: another one at `retryAt`, or none when the delivery has been
 * retried for the whole window (it was attempted at least once, as every delivery is).
 */
export function afterFailure(
  attempts: number,
  createdAt: number,
  now: number,
  baseMs: number,
): { retryAt: number } | { expired: true } {
  if (now - createdAt >= WEBHOOK_RETRY_WINDOW_MS) return { expired: true };
  return { retryAt: now + retryDelayMs(attempts, baseMs) };
}

/** Why an answer does not count as delivered, for the delivery's `lastError`; undefined for a 2xx. */
export function refusalOf(status: number, location: string | null): string | undefined {
  if (status >= 200 && status < 300) return undefined;
  if (status >= 300 && status < 400) return `answered ${status}${location ? ` to ${location}` : ''}; redirects are not followed`;
  return `answered ${status}`;
}
