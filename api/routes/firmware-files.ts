// Firmware file downloads for devices (CONTRACT §3, §4): open with a valid, unexpired signed URL,
// or with an API key. HEAD, Range and ETag come from @fastify/static.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { checkDownloadSignature } from '../../core/download-url.ts';
import { forbidden, notFound } from '../../core/errors.ts';
import { findFirmware } from '../../db/queries/firmware.ts';
import { ErrorReply, UuidParams } from '../schemas/common.ts';

const DownloadQuery = Type.Object({
  expires: Type.Optional(Type.String({ maxLength: 32, description: 'expiry of a signed URL, seconds since the epoch' })),
  signature: Type.Optional(Type.String({ maxLength: 256, description: 'signature of a signed URL' })),
});

const FileReply = {
  description: 'the firmware file (206 with Content-Range for a Range request)',
  content: { 'application/octet-stream': { schema: Type.String({ format: 'binary' }) } },
};

interface DownloadRequest {
  params: { id: string };
  query: { expires?: string; signature?: string };
}

/**
 * A valid signature is enough; otherwise an API key is. A request that sends a key is judged by
 * the key; one that sends only a bad signature learns why it was refused.
 */
async function authorizeDownload(app: FastifyInstance, request: FastifyRequest & DownloadRequest, reply: FastifyReply) {
  const { expires, signature } = request.query;
  const signed = expires !== undefined || signature !== undefined;
  const check = signed
    ? checkDownloadSignature(app.config.urlSigningSecret, request.params.id, expires, signature)
    : undefined;
  if (check === 'valid') return;
  if (!signed || request.headers.authorization !== undefined) return app.authenticate(request, reply);
  if (check === 'expired') throw forbidden('signature_expired', 'the download URL has expired');
  throw forbidden('invalid_signature', 'the download URL signature is not valid');
}

const firmwareFileRoutes: FastifyPluginAsyncTypebox = async (app) => {
  await app.storage.ensureRoot();
  await app.register(fastifyStatic, { root: app.storage.root, serve: false });

  app.get('/files/firmware/:id', {
    schema: {
      tags: ['firmware'],
      summary: 'Download a firmware file',
      description: 'Open with the signed URL handed to devices (`expires` and `signature`), or with an API key. '
        + 'Supports HEAD, Range (206) and ETag (If-None-Match → 304).',
      security: [{}, { bearer: [] }, { basic: [] }],
      params: UuidParams,
      querystring: DownloadQuery,
      response: {
        200: FileReply,
        206: FileReply,
        400: ErrorReply,
        401: ErrorReply,
        403: ErrorReply,
        404: ErrorReply,
      },
    },
  }, async (request, reply) => {
    await authorizeDownload(app, request, reply);
    const { id } = request.params;
    const firmware = await findFirmware(app.db, id);
    if (!firmware?.has_file || !(await app.storage.exists(id))) throw notFound('firmware file', id);
    reply.header('content-type', 'application/octet-stream');
    return reply.sendFile(app.storage.fileName(id), { contentType: false });
  });
};

export default firmwareFileRoutes;
