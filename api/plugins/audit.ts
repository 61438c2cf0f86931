// Records every state-changing request (POST, PUT, PATCH, DELETE under /api and /admin/queues) made
// with a valid key, once it is answered: who (key fingerprint and role), what (method, path, target)
// and the status. Written in batches by AuditLog, never on the request's path.
import type { FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Db } from '../../db/connection.ts';
import type { Logger } from 'pino';
import { AuditLog } from '../../services/audit-log.ts';

declare module 'fastify' {
  interface FastifyInstance {
    audit: AuditLog;
  }
  interface FastifyRequest {
    /** The id a create answered with (201), for the audit entry of a route without `:id`. */
    auditCreatedId: string | null;
  }
}

export interface AuditPluginOptions {
  db: Db;
  logger: Logger;
  retentionDays: number;
}

const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** The first path segment under /api, as the audit log names what a request acted on. */
const TARGET_TYPES: Record<string, string> = {
  firmware: 'firmware',
  devices: 'device',
  tasks: 'task',
  records: 'record',
  webhooks: 'webhook',
  'device-messages': 'device-message',
};

function audited(request: FastifyRequest, path: string): boolean {
  return STATE_CHANGING.has(request.method)
    && (path === '/api' || path.startsWith('/api/') || path === '/admin/queues' || path.startsWith('/admin/queues/'));
}

export function auditTarget(path: string, params: unknown, createdId: string | null): { targetType: string | null; targetId: string | null } {
  const values = (params ?? {}) as Record<string, unknown>;
  if (path.startsWith('/admin/queues')) {
    const queue = typeof values.queueName === 'string' ? values.queueName : null;
    return { targetType: 'queue', targetId: queue };
  }
  const segment = path.split('/')[2] ?? '';
  const id = typeof values.id === 'string' || typeof values.id === 'number' ? String(values.id) : createdId;
  return { targetType: TARGET_TYPES[segment] ?? (segment || null), targetId: id };
}

export default fp<AuditPluginOptions>(async function auditPlugin(app, options) {
  const log = new AuditLog(options.db, options.logger, { retentionDays: options.retentionDays });
  app.decorate('audit', log);
  app.decorateRequest('auditCreatedId', null);

  // a create has no :id in its path: the id is in what it answers
  app.addHook('onSend', async (request, reply, payload) => {
    if (request.method === 'POST' && reply.statusCode === 201 && typeof payload === 'string' && request.keyFingerprint !== null) {
      try {
        const id = (JSON.parse(payload) as { id?: unknown }).id;
        if (typeof id === 'string' || typeof id === 'number') request.auditCreatedId = String(id);
      } catch {
        // not JSON: no id to name
      }
    }
    return payload;
  });

  app.addHook('onResponse', async (request, reply) => {
    // only requests made with a valid key: refused guesses would let anyone fill the table
    if (request.keyFingerprint === null || request.role === null) return;
    const path = request.url.split('?')[0] ?? '';
    if (!audited(request, path)) return;
    log.record({
      at: new Date(),
      key_fingerprint: request.keyFingerprint,
      role: request.role,
      method: request.method,
      path,
      ...auditTargetColumns(path, request.params, request.auditCreatedId),
      status: reply.statusCode,
    });
  });

  app.addHook('onClose', async () => {
    await log.flush();
  });
}, { name: 'otter-audit', dependencies: ['otter-auth'] });

function auditTargetColumns(path: string, params: unknown, createdId: string | null): { target_type: string | null; target_id: string | null } {
  const { targetType, targetId } = auditTarget(path, params, createdId);
  return { target_type: targetType, target_id: targetId };
}
