// Firmware file downloads for devices (docs/rest-api.md#firmware-files): open with a valid, unexpired signed URL
// made for one device, or with an API key. HEAD, Range and ETag come from @fastify/static. A
// device's first download of an attempt is noted on its record's timeline.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { checkDownloadSignature } from '../../core/download-url.ts';
import { forbidden, notFound } from '../../core/errors.ts';
import { findFirmware } from '../../db/queries/firmware.ts';
import { ErrorReply, UuidParams } from '../schemas/common.ts';
import { DownloadEvents } from '../../services/download-events.ts';

const DownloadQuery = Type.Object({
  device: Type.Optional(Type.String({ maxLength: 64, description: 'the device a signed URL was made for' })),
  expires: Type.Optional(Type.String({ maxLength: 32, description: 'expiry of a signed URL, seconds since the epoch' })),
  signature: Type.Optional(Type.String({ maxLength: 256, description: 'signature of a signed URL' })),
});

const FileReply = {
  description: 'the firmware file (206 with Content-Range for a Range request)',
  content: { 'application/octet-stream': { schema: Type.String({ format: 'binary' }) } },
};

interface DownloadRequest {
  params: { id: string };
  query: { device?: string; expires?: string; signature?: string };
}

/**
 * A valid signature is enough; otherwise an API key is. A request that sends a key is judged by
 * the key; one that sends only a bad signature learns why it was refused. Answers the device a
 * valid signature was made for (undefined for a key).
 */
async function authorizeDownload(app: FastifyInstance, request: FastifyRequest & DownloadRequest, reply: FastifyReply): Promise<string | undefined> {
  const { device, expires, signature } = request.query;
  const signed = device !== undefined || expires !== undefined || signature !== undefined;
  const check = signed
    ? checkDownloadSignature(app.config.urlSigningSecret, request.params.id, device, expires, signature)
    : undefined;
  if (check === 'valid') return device;
  if (!signed || request.headers.authorization !== undefined) {
    await app.authenticate(request, reply);
    return undefined;
  }
  if (check === 'expired') throw forbidden('signature_expired', 'the download URL has expired');
  throw forbidden('invalid_signature', 'the download URL signature is not valid');
}

const firmwareFileRoutes: FastifyPluginAsyncTypebox = async (app) => {
  await app.storage.ensureRoot();
  await app.register(fastifyStatic, { root: app.storage.root, serve: false });
  const downloads = new DownloadEvents(app.db, app.log);
  app.addHook('onClose', async () => downloads.idle());
  /** Signed GETs allowed through, to be noted once their answer turns out to carry the file. */
  const devicesOf = new WeakMap<FastifyRequest, string>();

  app.get('/files/firmware/:id', {
    schema: {
      tags: ['firmware'],
      summary: 'Download a firmware file',
      description: 'Open with the signed URL handed to a device (`device`, `expires` and `signature`: it works for '
        + 'that device and firmware only), or with an API key. Supports HEAD, Range (206) and ETag (If-None-Match → 304). '
        + 'A device\'s first download (GET, Range included) of an attempt adds `downloaded` to its record\'s timeline.',
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
    // the file is on its way (HEAD, 304, 416 and errors are not downloads): note it, never waiting
    onSend: async (request, reply) => {
      const deviceId = devicesOf.get(request);
      if (deviceId === undefined || request.method !== 'GET' || (reply.statusCode !== 200 && reply.statusCode !== 206)) return;
      downloads.note({ firmwareId: request.params.id, deviceId });
    },
  }, async (request, reply) => {
    const deviceId = await authorizeDownload(app, request, reply);
    const { id } = request.params;
    const firmware = await findFirmware(app.db, id);
    if (!firmware?.has_file || !(await app.storage.exists(id))) throw notFound('firmware file', id);
    if (deviceId !== undefined) devicesOf.set(request, deviceId);
    reply.header('content-type', 'application/octet-stream');
    return reply.sendFile(app.storage.fileName(id), { contentType: false });
  });
};

export default firmwareFileRoutes;
