// The firmware catalogue (docs/rest-api.md#firmware): create, list, read, change, delete, and upload
// a firmware's file. Registered inside the authenticated /api scope.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import fastifyMultipart from '@fastify/multipart';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Readable } from 'node:stream';
import { Type } from 'typebox';
import { conflict, notFound, OtterError, preconditionFailed, validationError } from '../../core/errors.ts';
import { firmwareFilePath } from '../../core/download-url.ts';
import {
  deleteUnusedFirmware,
  findFirmware,
  firmwareHasActiveTasks,
  insertFirmware,
  listFirmware,
  setFirmwareFile,
  updateFirmware,
  type FrozenColumn,
} from '../../db/queries/firmware.ts';
import { ErrorReply, IfMatchHeaders, UuidParams, etagOf, ifMatchRevisions, paging } from '../schemas/common.ts';
import { FileTooLargeError } from '../../services/firmware-storage.ts';
import {
  CreateFirmwareBody,
  Firmware,
  FirmwareListQuery,
  FirmwarePage,
  UpdateFirmwareBody,
  UploadBody,
  UploadQuery,
  firmwareChanges,
  newFirmwareRow,
  toFirmware,
} from '../schemas/firmware.ts';

const tags = ['firmware'];

// room for the multipart boundaries and part headers around the file itself
const MULTIPART_OVERHEAD_BYTES = 64 * 1024;

const FROZEN_FIELD: Record<FrozenColumn, string> = {
  product_id: 'productId',
  version: 'version',
  url: 'url',
  sign: 'sign',
  sign_method: 'signMethod',
  size: 'size',
  properties: 'properties',
};

/** Devices may be fetching and checking this firmware right now: what they were told must hold. */
function firmwareInUse(id: string, what: string): OtterError {
  return conflict('firmware_in_use', `firmware ${id} has an upgrade task with waiting or processing records: ${what} cannot change until they finish or are canceled`);
}

const catalogueRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.post('/firmware', {
    schema: {
      tags,
      summary: 'Create a firmware',
      body: CreateFirmwareBody,
      response: { 201: Firmware, 400: ErrorReply, 401: ErrorReply, 409: ErrorReply },
    },
  }, async (request, reply) => {
    const row = await insertFirmware(app.db, newFirmwareRow(request.body));
    return reply.code(201).header('etag', etagOf(row.revision)).send(toFirmware(row));
  });

  app.get('/firmware', {
    schema: {
      tags,
      summary: 'List firmware, newest first',
      querystring: FirmwareListQuery,
      response: { 200: FirmwarePage, 400: ErrorReply, 401: ErrorReply },
    },
  }, async (request) => {
    const { page, pageSize, offset } = paging(request.query);
    const { rows, total } = await listFirmware(app.db, {
      productId: request.query.productId,
      q: request.query.q,
      limit: pageSize,
      offset,
    });
    return { items: rows.map(toFirmware), total, page, pageSize };
  });

  app.get('/firmware/:id', {
    schema: {
      tags,
      summary: 'Read a firmware',
      params: UuidParams,
      response: { 200: Firmware, 400: ErrorReply, 401: ErrorReply, 404: ErrorReply },
    },
  }, async (request, reply) => {
    const row = await findFirmware(app.db, request.params.id);
    if (!row) throw notFound('firmware', request.params.id);
    reply.header('etag', etagOf(row.revision));
    return toFirmware(row);
  });

  app.patch('/firmware/:id', {
    schema: {
      tags,
      summary: 'Change a firmware',
      description: 'While a task of the firmware has waiting or processing records, a change of productId, version, url, '
        + 'sign, signMethod, size or properties is refused with 409 firmware_in_use; name, description and versionOrder may change. '
        + 'With If-Match, applies only if the firmware is still at that ETag (else 412 precondition_failed).',
      params: UuidParams,
      headers: IfMatchHeaders,
      body: UpdateFirmwareBody,
      response: { 200: Firmware, 400: ErrorReply, 401: ErrorReply, 404: ErrorReply, 409: ErrorReply, 412: ErrorReply },
    },
  }, async (request, reply) => {
    const changes = firmwareChanges(request.body);
    if (Object.keys(changes).length === 0) throw validationError('body must have at least one firmware field');
    const outcome = await updateFirmware(app.db, request.params.id, changes, ifMatchRevisions(request.headers['if-match']));
    if (outcome.kind === 'not_found') throw notFound('firmware', request.params.id);
    if (outcome.kind === 'stale') throw preconditionFailed('firmware', request.params.id, outcome.revision);
    if (outcome.kind === 'in_use') throw firmwareInUse(request.params.id, outcome.columns.map((column) => FROZEN_FIELD[column]).join(', '));
    reply.header('etag', etagOf(outcome.row.revision));
    return toFirmware(outcome.row);
  });

  app.delete('/firmware/:id', {
    schema: {
      tags,
      summary: 'Delete a firmware with its tasks, records and file',
      description: 'Refused with 409 firmware_in_use while a task of it has waiting or processing records. '
        + 'With If-Match, deletes only if the firmware is still at that ETag (else 412 precondition_failed).',
      params: UuidParams,
      headers: IfMatchHeaders,
      response: { 204: Type.Null(), 400: ErrorReply, 401: ErrorReply, 404: ErrorReply, 409: ErrorReply, 412: ErrorReply },
    },
  }, async (request, reply) => {
    const { id } = request.params;
    const outcome = await deleteUnusedFirmware(app.db, id, ifMatchRevisions(request.headers['if-match']));
    if (outcome.kind === 'not_found') throw notFound('firmware', id);
    if (outcome.kind === 'stale') throw preconditionFailed('firmware', id, outcome.revision);
    if (outcome.kind === 'in_use') {
      throw conflict('firmware_in_use', `firmware ${id} has an upgrade task with waiting or processing records`);
    }
    await app.storage.remove(id);
    return reply.code(204).send(null);
  });
};

/** A declared length over the limit is refused before a byte of the body is read. */
async function refuseOversizedUpload(request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const declared = Number(request.headers['content-length']);
  if (!Number.isFinite(declared)) return;
  const limit = request.server.config.firmwareMaxBytes;
  // onRequest runs before the body parsers, so the header says which encoding this is
  const multipart = (request.headers['content-type'] ?? '').toLowerCase().startsWith('multipart/');
  const slack = multipart ? MULTIPART_OVERHEAD_BYTES : 0;
  if (declared > limit + slack) {
    reply.header('connection', 'close');
    throw new FileTooLargeError(limit);
  }
}

function hasClientStatus(error: unknown): boolean {
  const statusCode = (error as { statusCode?: unknown } | null)?.statusCode;
  return typeof statusCode === 'number' && statusCode >= 400 && statusCode < 500;
}

/** The file's bytes: the raw body, or the multipart field `file`. */
async function uploadedFile(request: FastifyRequest): Promise<Readable> {
  if (request.isMultipart()) {
    let part: Awaited<ReturnType<FastifyRequest['file']>>;
    try {
      part = await request.file();
    } catch (error) {
      // the parser's own refusals (a limit) carry their status; anything else is a malformed body
      if (hasClientStatus(error)) throw error;
      throw validationError('the multipart body is malformed');
    }
    if (!part || part.fieldname !== 'file') throw validationError('multipart body must have the file in field `file`');
    return part.file;
  }
  if (request.body instanceof Readable) return request.body;
  throw new OtterError(
    'unsupported_media_type',
    'send the file as application/octet-stream or as multipart/form-data field `file`',
    415,
  );
}

const uploadRoutes: FastifyPluginAsyncTypebox = async (app) => {
  // only the two upload encodings; the raw body is handed over as the unread request stream
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/octet-stream', (_request, payload, done) => done(null, payload));
  await app.register(fastifyMultipart, { limits: { fileSize: app.config.firmwareMaxBytes, files: 1 } });

  // the body is a stream, read by the handler: its schema only documents it
  const inheritedCompiler = app.validatorCompiler;
  if (!inheritedCompiler) throw new Error('the validation plugin must be registered before the firmware routes');
  app.setValidatorCompiler((route) => (route.httpPart === 'body' ? () => true : inheritedCompiler(route)));

  // an error answered before the body was read in full closes the connection rather than
  // reading (possibly gigabytes) of it
  app.addHook('onSend', async (request, reply) => {
    if (reply.statusCode >= 400 && !request.raw.readableEnded) reply.header('connection', 'close');
  });

  app.put('/firmware/:id/file', {
    onRequest: refuseOversizedUpload,
    schema: {
      tags,
      summary: 'Upload the firmware file',
      description:
        'The raw body (application/octet-stream) or multipart/form-data field `file`, streamed to storage. '
        + 'Sets size, sign (signMethod from the query, sha256 by default), hasFile and url. '
        + 'Refused with 409 firmware_in_use while a task of the firmware has waiting or processing records.',
      params: UuidParams,
      querystring: UploadQuery,
      body: UploadBody,
      response: { 200: Firmware, 400: ErrorReply, 401: ErrorReply, 404: ErrorReply, 409: ErrorReply, 413: ErrorReply, 415: ErrorReply },
    },
  }, async (request, reply) => {
    const { id } = request.params;
    if (!(await findFirmware(app.db, id))) throw notFound('firmware', id);
    // refused before a byte is read; checked again, under lock, when the file is put in place
    if (await firmwareHasActiveTasks(app.db, id)) throw firmwareInUse(id, 'the file');
    const source = await uploadedFile(request);
    const received = await app.storage.receive(id, source, request.query.signMethod ?? 'sha256');
    try {
      const outcome = await setFirmwareFile(app.db, id, {
        url: `${app.config.publicBaseUrl}${firmwareFilePath(id)}`,
        size: received.size,
        sign: received.sign,
        signMethod: received.signMethod,
      }, () => received.commit());
      if (outcome.kind === 'not_found') throw notFound('firmware', id);
      if (outcome.kind === 'in_use') throw firmwareInUse(id, 'the file');
      reply.header('etag', etagOf(outcome.row.revision));
      return toFirmware(outcome.row);
    } finally {
      await received.discard();
    }
  });
};

const firmwareRoutes: FastifyPluginAsyncTypebox = async (app) => {
  await app.register(catalogueRoutes);
  await app.register(uploadRoutes);
};

export default firmwareRoutes;
