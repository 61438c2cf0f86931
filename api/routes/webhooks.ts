// Webhooks (docs/rest-api.md#webhooks): register, list, read and delete hooks, and list a hook's
// recent deliveries. Admins only: a hook sends fleet data to a URL of the caller's choosing.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { conflict, notFound, validationError } from '../../core/errors.ts';
import {
  countWebhooks,
  deleteWebhook,
  findWebhook,
  insertWebhook,
  listDeliveries,
  listWebhooks,
} from '../../db/queries/webhooks.ts';
import { requireRole } from '../plugins/auth.ts';
import { ErrorReply, Page, UuidParams, paging } from '../schemas/common.ts';
import {
  DeliveryListQuery,
  Webhook,
  WebhookCreateBody,
  WebhookDelivery,
  WebhookListQuery,
  toWebhook,
  toWebhookDelivery,
} from '../schemas/webhooks.ts';

const tags = ['webhooks'];
/** Every hook adds outbox rows to each change it subscribes to: their number is bounded. */
export const MAX_WEBHOOKS = 100;

const errors = { 400: ErrorReply, 401: ErrorReply, 403: ErrorReply };

/** The URL as deliveries will use it, or a 400 naming /url. */
function deliveryUrl(raw: string): string {
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw validationError('url is not a valid URL', [{ path: '/url', message: 'not a valid URL' }]);
  }
  if ((parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || parsed.hostname === '') {
    throw validationError('url must be an http or https URL', [{ path: '/url', message: 'must be an http or https URL' }]);
  }
  return parsed.toString();
}

const webhookRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const admin = requireRole('admin');

  app.post('/webhooks', {
    preHandler: admin,
    schema: {
      tags,
      summary: 'Register a webhook: the events it wants, POSTed in signed batches',
      body: WebhookCreateBody,
      response: { 201: Webhook, ...errors, 409: ErrorReply },
    },
  }, async (request, reply) => {
    const url = deliveryUrl(request.body.url);
    if ((await countWebhooks(app.db)) >= MAX_WEBHOOKS) {
      throw conflict('webhook_limit_reached', `there are already ${MAX_WEBHOOKS} webhooks; delete one first`);
    }
    const row = await insertWebhook(app.db, {
      url,
      secret: request.body.secret,
      events: request.body.events,
      productId: request.body.productId ?? null,
    });
    return reply.code(201).send(toWebhook(row));
  });

  app.get('/webhooks', {
    preHandler: admin,
    schema: { tags, summary: 'List webhooks, newest first', querystring: WebhookListQuery, response: { 200: Page(Webhook), ...errors } },
  }, async (request) => {
    const { page, pageSize, offset } = paging(request.query);
    const { rows, total } = await listWebhooks(app.db, { limit: pageSize, offset });
    return { items: rows.map(toWebhook), total, page, pageSize };
  });

  app.get('/webhooks/:id', {
    preHandler: admin,
    schema: { tags, summary: 'One webhook (its secret is never shown)', params: UuidParams, response: { 200: Webhook, ...errors, 404: ErrorReply } },
  }, async (request) => {
    const row = await findWebhook(app.db, request.params.id);
    if (!row) throw notFound('webhook', request.params.id);
    return toWebhook(row);
  });

  app.delete('/webhooks/:id', {
    preHandler: admin,
    schema: { tags, summary: 'Delete a webhook with its pending and past deliveries', params: UuidParams, response: { 204: Type.Null({ description: 'deleted' }), ...errors, 404: ErrorReply } },
  }, async (request, reply) => {
    if (!(await deleteWebhook(app.db, request.params.id))) throw notFound('webhook', request.params.id);
    return reply.code(204).send(null);
  });

  app.get('/webhooks/:id/deliveries', {
    preHandler: admin,
    schema: {
      tags,
      summary: "A webhook's deliveries, newest first, with their state and attempts (kept 7 days after they end)",
      params: UuidParams,
      querystring: DeliveryListQuery,
      response: { 200: Page(WebhookDelivery), ...errors, 404: ErrorReply },
    },
  }, async (request) => {
    if (!(await findWebhook(app.db, request.params.id))) throw notFound('webhook', request.params.id);
    const { page, pageSize, offset } = paging(request.query);
    const { rows, total } = await listDeliveries(app.db, request.params.id, { state: request.query.state }, { limit: pageSize, offset });
    return { items: rows.map(toWebhookDelivery), total, page, pageSize };
  });
};

export default webhookRoutes;
