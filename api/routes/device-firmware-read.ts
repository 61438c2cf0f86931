// POST /api/devices/{id}/firmware/read (docs/rest-api.md#devices): asks a device for its firmware with
// ReadFirmwareMessage and answers its reply (also stored), or 504 device_timeout.
import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { OtterError, notFound } from '../../core/errors.ts';
import { readFirmwareMessage } from '../../core/platform-messages.ts';
import { findDevice } from '../../db/queries/devices.ts';
import { EntityIdParams, ErrorReply } from '../schemas/common.ts';

const ReadBody = Type.Object({
  timeoutMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 60_000, default: 5_000, description: 'how long to wait for the reply' })),
});

const ReadReply = Type.Object({
  version: Type.String(),
  properties: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
});

const readRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.post('/devices/:id/firmware/read', {
    preValidation: async (request) => {
      request.body ??= {};
    },
    schema: {
      tags: ['devices'],
      summary: 'Ask a device for its firmware version and properties',
      params: EntityIdParams,
      body: ReadBody,
      response: { 200: ReadReply, 400: ErrorReply, 404: ErrorReply, 502: ErrorReply, 504: ErrorReply },
    },
  }, async (request) => {
    const { id } = request.params;
    const device = await findDevice(app.db, id);
    if (!device) throw notFound('device', id);
    const messageId = randomUUID();
    const waiter = app.readWaiters.wait(id, messageId, request.body.timeoutMs ?? 5_000);
    try {
      await app.connector.send({
        messageType: 'READ_FIRMWARE',
        productId: device.product_id,
        deviceId: id,
        body: readFirmwareMessage({ messageId, deviceId: id }, Date.now()),
      });
      app.metrics.messagesSent.inc({ type: 'READ_FIRMWARE', result: 'ok' });
    } catch (error) {
      waiter.cancel();
      app.metrics.messagesSent.inc({ type: 'READ_FIRMWARE', result: 'error' });
      throw new OtterError('send_error', `could not send ReadFirmwareMessage: ${(error as Error).message}`, 502);
    }
    const reply = await waiter.reply;
    if (!reply) throw new OtterError('device_timeout', `device ${id} did not answer within ${request.body.timeoutMs ?? 5_000} ms`, 504);
    return { version: reply.version, properties: reply.properties ?? null };
  });
};

export default readRoutes;
