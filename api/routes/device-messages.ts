// POST /api/device-messages (docs/rest-api.md#device-messages): device messages from platforms that terminate device
// protocols themselves — one message or up to 1,000. Each is judged alone: a bad one is refused with
// its reason, the others are applied; a REQUEST_FIRMWARE gets its reply in the answer.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { INBOUND_MESSAGE_TYPES } from '../../core/messages.ts';
import { ErrorReply } from '../schemas/common.ts';
import { errorBody } from '../plugins/error-handler.ts';

// Per-message fields are checked by the device message decoder, so that one bad message is refused
// on its own instead of failing the whole batch.
const DeviceMessage = Type.Object(
  {
    messageType: Type.String({ description: INBOUND_MESSAGE_TYPES.join(', ') }),
    deviceId: Type.Optional(Type.String()),
    productId: Type.Optional(Type.String()),
  },
  { additionalProperties: true, description: 'a device message (docs/device-protocol.md) with its messageType, deviceId and (for an unregistered device) productId' },
);

// The items of an array are not constrained here at all: a message without a messageType, with a
// mistyped field or that is not even an object is refused on its own (with its reason, counted).
const Body = Type.Union([
  DeviceMessage,
  Type.Array(Type.Unknown({ description: 'a device message, as for a single one' }), { minItems: 1, maxItems: 1_000 }),
]);

function messageTypeOf(message: unknown): string | undefined {
  if (typeof message !== 'object' || message === null) return undefined;
  const type = (message as { messageType?: unknown }).messageType;
  return typeof type === 'string' ? type : undefined;
}

const Result = Type.Object({
  index: Type.Integer(),
  accepted: Type.Boolean(),
  code: Type.Optional(Type.String()),
  message: Type.Optional(Type.String()),
  reply: Type.Optional(Type.Object({}, { additionalProperties: true, description: 'RequestFirmwareMessageReply' })),
});

const deviceMessageRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.post('/device-messages', {
    // a message with text PostgreSQL cannot store is refused on its own by the decoder
    config: { itemsJudgedAlone: true },
    schema: {
      tags: ['device-messages'],
      summary: 'Submit device messages (one or up to 1,000)',
      body: Body,
      response: { 200: Type.Object({ results: Type.Array(Result) }), 400: ErrorReply, 503: ErrorReply },
    },
  }, async (request, reply) => {
    const messages: unknown[] = Array.isArray(request.body) ? request.body : [request.body];
    // back-pressure: this process holds at most DEVICE_MESSAGE_BACKLOG received, unapplied messages
    // (e.g. while PostgreSQL is away); the caller sends again after a moment, nothing was taken
    if (!app.messages.hasRoom(messages.length, app.config.deviceMessageBacklog)) {
      reply.code(503).header('retry-after', '1');
      return errorBody(503, 'backlog_full', `${app.messages.backlog} device messages are waiting to be applied; send again shortly`);
    }
    // handed over in order, so messages of one device are applied in the order they were posted
    const outcomes = await Promise.all(
      messages.map((message) => app.messages.receive({ messageType: messageTypeOf(message), body: message, source: 'rest' }, 'caller')),
    );
    return { results: outcomes.map((outcome, index) => ({ index, ...outcome })) };
  });
};

export default deviceMessageRoutes;
