// One upgrade record with its event timeline (docs/rest-api.md#records).
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { notFound } from '../../core/errors.ts';
import { findRecord, listRecordEvents } from '../../db/queries/records.ts';
import { ErrorReply } from '../schemas/common.ts';
import { MAX_RECORD_EVENTS, RecordWithEvents, recordWithEventsToJson } from '../schemas/records.ts';

const RecordParams = Type.Object({ id: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }) });

const recordRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/records/:id', {
    schema: {
      tags: ['tasks'],
      summary: 'One upgrade record with its events timeline (its latest 1,000 events, and eventsTotal)',
      params: RecordParams,
      response: { 200: RecordWithEvents, 400: ErrorReply, 404: ErrorReply },
    },
  }, async (request) => {
    const record = await findRecord(app.db, request.params.id);
    if (!record) throw notFound('record', request.params.id);
    const { rows, total } = await listRecordEvents(app.db, record.id, MAX_RECORD_EVENTS);
    return recordWithEventsToJson(record, rows, total);
  });
};

export default recordRoutes;
