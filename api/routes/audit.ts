// The audit log, newest first (docs/rest-api.md#audit): admins only.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { listAuditEntries } from '../../db/queries/audit.ts';
import type { AuditLogRow } from '../../db/database.ts';
import { requireRole } from '../plugins/auth.ts';
import { ErrorReply, Page, PagingQuery, Timestamp, paging } from '../schemas/common.ts';

const AuditQuery = Type.Object({
  since: Type.Optional(Type.String({ format: 'date-time', description: 'only entries at or after this time' })),
  targetId: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'only entries about this firmware, device, task, record…' })),
  ...PagingQuery,
});

const NullableString = Type.Union([Type.String(), Type.Null()]);

const AuditEntry = Type.Object({
  at: Timestamp,
  keyFingerprint: Type.String({ description: "first 12 hex digits of the API key's SHA-256 (never the key)" }),
  role: Type.String(),
  method: Type.String(),
  path: Type.String(),
  targetType: NullableString,
  targetId: NullableString,
  status: Type.Integer(),
});

function entryToJson(row: AuditLogRow) {
  return {
    at: row.at.toISOString(),
    keyFingerprint: row.key_fingerprint,
    role: row.role,
    method: row.method,
    path: row.path,
    targetType: row.target_type,
    targetId: row.target_id,
    status: row.status,
  };
}

const auditRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/audit', {
    preHandler: requireRole('admin'),
    schema: {
      tags: ['audit'],
      summary: 'Every state-changing request: who (key fingerprint, role), what, and the answer; newest first',
      querystring: AuditQuery,
      response: { 200: Page(AuditEntry), 400: ErrorReply, 403: ErrorReply },
    },
  }, async (request) => {
    const { page, pageSize, offset } = paging(request.query);
    const { since, targetId } = request.query;
    const { rows, total } = await listAuditEntries(
      app.db,
      { since: since === undefined ? undefined : new Date(since), targetId },
      { limit: pageSize, offset },
    );
    return { items: rows.map(entryToJson), total, page, pageSize };
  });
};

export default auditRoutes;
