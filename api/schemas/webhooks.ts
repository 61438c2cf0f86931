// Webhooks as the API takes and shows them (docs/rest-api.md#webhooks), and the mappers from the
// database rows. The secret goes in and never comes out: a hook shows `secretSet: true`.
import { Type } from 'typebox';
import type { WebhookDeliveryRow, WebhookRow } from '../../db/database.ts';
import { WEBHOOK_EVENT_TYPES } from '../../core/webhooks.ts';
import { redactUrl } from '../../core/config.ts';
import { EntityId, NullableTimestamp, PagingQuery, Timestamp, Uuid, iso } from './common.ts';

export const WebhookEventType = Type.Union([
  Type.Literal('task.state_changed'),
  Type.Literal('task.completed'),
  Type.Literal('record.final'),
  Type.Literal('device.registered'),
  Type.Literal('wave.gate'),
], { description: 'wave.gate is reserved for rollout waves: accepted, not sent yet' });

export const WebhookCreateBody = Type.Object({
  url: Type.String({
    minLength: 8,
    maxLength: 2_048,
    pattern: '^[Hh][Tt][Tt][Pp][Ss]?://',
    description: 'where deliveries are POSTed: http or https; redirects are never followed',
  }),
  secret: Type.String({ minLength: 16, maxLength: 256, description: 'HMAC-SHA256 key of X-Otter-Signature; never shown again' }),
  events: Type.Array(WebhookEventType, { minItems: 1, maxItems: WEBHOOK_EVENT_TYPES.length, uniqueItems: true }),
  productId: Type.Optional(Type.Union([EntityId, Type.Null()], { description: "only this product's devices and tasks" })),
});

export const Webhook = Type.Object({
  id: Uuid,
  url: Type.String({ description: 'a password in the URL is shown as ***' }),
  events: Type.Array(WebhookEventType),
  productId: Type.Union([Type.String(), Type.Null()]),
  secretSet: Type.Boolean({ description: 'always true: the secret is stored, never shown' }),
  createdAt: Timestamp,
});

export const WebhookDeliveryState = Type.Union([Type.Literal('pending'), Type.Literal('delivered'), Type.Literal('failed')]);

export const WebhookDelivery = Type.Object({
  id: Uuid,
  state: WebhookDeliveryState,
  attempts: Type.Integer({ description: 'POSTs made so far' }),
  eventCount: Type.Integer(),
  firstEventId: Type.Integer(),
  lastEventId: Type.Integer(),
  stream: Type.String({ description: '`task:<id>` or `product:<id>`: deliveries of one stream arrive in order' }),
  createdAt: Timestamp,
  lastAttemptAt: NullableTimestamp,
  nextAttemptAt: NullableTimestamp,
  completedAt: NullableTimestamp,
  lastStatus: Type.Union([Type.Integer(), Type.Null()], { description: 'HTTP status of the last answer, null when there was none' }),
  lastError: Type.Union([Type.String(), Type.Null()]),
});

export const WebhookListQuery = Type.Object({ ...PagingQuery });
export const DeliveryListQuery = Type.Object({ state: Type.Optional(WebhookDeliveryState), ...PagingQuery });

export function toWebhook(row: WebhookRow) {
  return {
    id: row.id,
    url: redactUrl(row.url),
    events: row.events as Array<(typeof WEBHOOK_EVENT_TYPES)[number]>,
    productId: row.product_id,
    secretSet: true,
    createdAt: iso(row.created_at)!,
  };
}

export function toWebhookDelivery(row: WebhookDeliveryRow) {
  return {
    id: row.id,
    state: row.state,
    attempts: row.attempts,
    eventCount: row.event_count,
    firstEventId: Number(row.first_seq),
    lastEventId: Number(row.first_seq) + row.event_count - 1,
    stream: row.stream,
    createdAt: iso(row.created_at)!,
    lastAttemptAt: iso(row.last_attempt_at),
    nextAttemptAt: row.state === 'pending' ? iso(row.next_attempt_at) : null,
    completedAt: iso(row.completed_at),
    lastStatus: row.last_status,
    lastError: row.last_error,
  };
}
