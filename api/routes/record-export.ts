// Streams every record of a task (optionally of one state) as NDJSON or CSV, page by page, with the
// fields of the records list: constant memory however large the task (docs/rest-api.md#export).
import { Readable } from 'node:stream';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { csvLine } from '../../core/csv.ts';
import type { Db } from '../../db/connection.ts';
import type { RecordState } from '../../db/database.ts';
import { taskRecordPages } from '../../db/queries/record-export.ts';
import { ErrorReply, UuidParams } from '../schemas/common.ts';
import { UpgradeRecord, UpgradeRecordState, recordToJson, type UpgradeRecordJson } from '../schemas/records.ts';

const ExportQuery = Type.Object({
  format: Type.Optional(Type.Union([Type.Literal('ndjson'), Type.Literal('csv')], { default: 'ndjson' })),
  state: Type.Optional(UpgradeRecordState),
});

type ExportFormat = 'ndjson' | 'csv';

/** The CSV columns: the record's fields, in the order of the records list. */
const CSV_COLUMNS = Object.keys(UpgradeRecord.properties) as Array<keyof UpgradeRecordJson>;

const CONTENT_TYPES: Record<ExportFormat, string> = {
  ndjson: 'application/x-ndjson',
  csv: 'text/csv; charset=utf-8',
};

/** Lines per chunk written to the reply: big enough for few writes, small enough to keep memory flat. */
const LINES_PER_CHUNK = 1_000;

function formatRecord(format: ExportFormat, record: UpgradeRecordJson): string {
  if (format === 'ndjson') return `${JSON.stringify(record)}\n`;
  return csvLine(CSV_COLUMNS.map((column) => record[column]));
}

async function* exportChunks(db: Db, taskId: string, format: ExportFormat, state: RecordState | undefined): AsyncGenerator<string> {
  if (format === 'csv') yield csvLine(CSV_COLUMNS);
  for await (const rows of taskRecordPages(db, taskId, { state })) {
    for (let start = 0; start < rows.length; start += LINES_PER_CHUNK) {
      let chunk = '';
      for (const row of rows.slice(start, start + LINES_PER_CHUNK)) chunk += formatRecord(format, recordToJson(row));
      yield chunk;
    }
  }
}

const recordExportRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/tasks/:id/records/export', {
    schema: {
      tags: ['tasks'],
      summary: "Every record of the task (or of one state), streamed as NDJSON or CSV with the records list's fields",
      description: 'NDJSON: one record object a line. CSV: a header line, every field quoted (RFC 4180, CRLF), '
        + "times ISO-8601; text starting with = + - @ (or a tab or CR) gets a leading ' so a spreadsheet does not run it as a formula.",
      params: UuidParams,
      querystring: ExportQuery,
      produces: [CONTENT_TYPES.ndjson, CONTENT_TYPES.csv],
      response: {
        200: Type.String({ description: 'the records, streamed' }),
        400: ErrorReply,
        404: ErrorReply,
      },
    },
  }, async (request, reply) => {
    const task = await app.tasks.get(request.params.id);
    const format = request.query.format ?? 'ndjson';
    const stream = Readable.from(exportChunks(app.db, task.id, format, request.query.state), { objectMode: true, highWaterMark: 2 });
    // headers are gone once the first byte is; a failure later can only cut the stream short
    stream.on('error', (error) => request.log.error({ err: error, taskId: task.id }, 'record export failed mid-stream'));
    return reply
      .header('content-type', CONTENT_TYPES[format])
      .header('content-disposition', `attachment; filename="task-${task.id}-records.${format}"`)
      // the 200 schema documents the body; a stream is sent as is, never serialized against it
      .send(stream as unknown as string);
  });
};

export default recordExportRoutes;
