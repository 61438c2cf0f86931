// Exporting a task's records: 100,000 of them as NDJSON and as CSV over a real HTTP connection,
// counted line by line while the process's RSS is sampled (the stream must not be built in memory);
// and, on a small task, the exact fields of the records list and CSV quoting a spreadsheet reads.
import { performance } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { createFirmware, createTask } from '../helpers/rollout.ts';

const RECORDS = 100_000;
// Client and server share this process, so RSS also holds both sides' garbage not yet collected
// (V8 collects lazily): it is printed; the bound applies to the live heap, read after forced
// collections every 40 chunks mid-stream. A body built in memory would hold all 100,000 records there.
const MAX_LIVE_HEAP_GROWTH_MB = 30;
const MAX_HEAP_RETAINED_MB = 10;
const MAX_EXPORT_MS = 60_000;
const STATES = ['success', 'failed', 'canceled', 'waiting'];
const TRICKY = 'bad "reply", then\na new line';

let t: TestApp;
let baseUrl: string;
let bigTaskId: string;
let smallTaskId: string;

beforeAll(async () => {
  t = await buildTestApp();
  const firmwareId = await createFirmware(t.app, t.auth, 'export', '2.0.0', 2);
  bigTaskId = await createTask(t.app, t.auth, { firmwareId, mode: 'push' });
  smallTaskId = await createTask(t.app, t.auth, { firmwareId, mode: 'push' });
  // one statement: a release of 100,000 devices is tested elsewhere; here only the rows matter
  await sql`
    INSERT INTO upgrade_records (task_id, firmware_id, device_id, product_id, from_version, target_version, state, progress, attempts, error_reason, started_at, completed_at)
    SELECT ${bigTaskId}::uuid, ${firmwareId}::uuid, 'dev-' || lpad(i::text, 6, '0'), 'export', '1.0.0', '2.0.0',
           (${sql.raw(`ARRAY['${STATES.join("','")}']`)})[i % 4 + 1],
           CASE WHEN i % 4 = 0 THEN 100 ELSE i % 100 END, 1,
           CASE WHEN i % 4 = 1 THEN 'device_failure' END,
           now() - interval '1 hour', CASE WHEN i % 4 < 3 THEN now() END
    FROM generate_series(1, ${RECORDS}) AS i`.execute(t.database.db);
  await sql`
    INSERT INTO upgrade_records (task_id, firmware_id, device_id, product_id, from_version, target_version, state, error_reason)
    VALUES (${smallTaskId}, ${firmwareId}, 'small-1', 'export', '1.0.0', '2.0.0', 'failed', ${TRICKY}),
           (${smallTaskId}, ${firmwareId}, 'small-2', 'export', '=1+2', '2.0.0', 'failed', '@SUM(A1)'),
           (${smallTaskId}, ${firmwareId}, 'small-3', 'export', null, '2.0.0', 'waiting', null)`.execute(t.database.db);
  baseUrl = await t.app.listen({ port: 0, host: '127.0.0.1' });
}, 120_000);

afterAll(async () => {
  await t?.close();
});

const mb = (bytes: number) => bytes / 1024 / 1024;

// a full collection before each reading, so the figures are what is held rather than garbage not yet collected
v8.setFlagsFromString('--expose-gc');
const collectGarbage = vm.runInNewContext('gc') as () => void;

interface Streamed {
  status: number;
  headers: Headers;
  lines: number;
  chunks: number;
  head: string;
  ms: number;
  rssBeforeMb: number;
  rssPeakMb: number;
  rssAfterMb: number;
  heapBeforeMb: number;
  heapPeakMb: number;
  heapAfterMb: number;
}

/** Reads the export without keeping it: counts lines, checks each with `onLine`, samples RSS per chunk. */
async function streamExport(query: string, onLine: (line: string, index: number) => void = () => {}): Promise<Streamed> {
  collectGarbage();
  const rssBefore = process.memoryUsage().rss;
  const heapBefore = process.memoryUsage().heapUsed;
  let rssPeak = rssBefore;
  let heapPeak = heapBefore;
  const started = performance.now();
  const response = await fetch(`${baseUrl}${query}`, { headers: t.auth });
  const decoder = new TextDecoder();
  let carry = '';
  let lines = 0;
  let chunks = 0;
  let head = '';
  for await (const bytes of response.body!) {
    chunks += 1;
    const text = carry + decoder.decode(bytes, { stream: true });
    if (head.length < 4_096) head += text.slice(0, 4_096);
    const parts = text.split('\n');
    carry = parts.pop()!;
    for (const line of parts) onLine(line, lines++);
    rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
    // the live heap: what is still held mid-stream once the garbage is collected
    if (chunks % 40 === 0) {
      collectGarbage();
      heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed);
    }
  }
  if (carry) onLine(carry, lines++);
  const ms = performance.now() - started;
  collectGarbage();
  return {
    status: response.status,
    headers: response.headers,
    lines,
    chunks,
    head,
    ms,
    rssBeforeMb: mb(rssBefore),
    rssPeakMb: mb(rssPeak),
    rssAfterMb: mb(process.memoryUsage().rss),
    heapBeforeMb: mb(heapBefore),
    heapPeakMb: mb(heapPeak),
    heapAfterMb: mb(process.memoryUsage().heapUsed),
  };
}

function report(label: string, s: Streamed): void {
  console.log(
    `export ${label}: ${s.lines} lines in ${(s.ms / 1000).toFixed(2)} s (${s.chunks} chunks); `
      + `RSS before ${s.rssBeforeMb.toFixed(0)} MB, peak ${s.rssPeakMb.toFixed(0)} MB (+${(s.rssPeakMb - s.rssBeforeMb).toFixed(1)}), after ${s.rssAfterMb.toFixed(0)} MB; `
      + `live heap before ${s.heapBeforeMb.toFixed(0)} MB, peak mid-stream ${s.heapPeakMb.toFixed(0)} MB, after ${s.heapAfterMb.toFixed(0)} MB`,
  );
}

/** A strict RFC 4180 reader, as a spreadsheet reads: quoted fields, doubled quotes, CRLF between rows. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let i = 0;
  while (i < text.length) {
    const row: string[] = [];
    for (;;) {
      expect(text[i], `field at ${i} is quoted`).toBe('"');
      let field = '';
      i += 1;
      for (;;) {
        const quote = text.indexOf('"', i);
        expect(quote).toBeGreaterThanOrEqual(0);
        field += text.slice(i, quote);
        i = quote + 1;
        if (text[i] === '"') {
          field += '"';
          i += 1;
        } else break;
      }
      row.push(field);
      if (text[i] === ',') {
        i += 1;
        continue;
      }
      expect(text.slice(i, i + 2)).toBe('\r\n');
      i += 2;
      break;
    }
    rows.push(row);
  }
  return rows;
}

describe('export of 100,000 records', () => {
  it('streams NDJSON: every record once, in id order, in constant memory', async () => {
    let lastId = 0;
    let failed = 0;
    const streamed = await streamExport(`/api/tasks/${bigTaskId}/records/export?format=ndjson`, (line) => {
      const record = JSON.parse(line) as { id: number; taskId: string; state: string };
      expect(record.id).toBeGreaterThan(lastId);
      lastId = record.id;
      if (record.state === 'failed') failed += 1;
    });
    report('NDJSON', streamed);
    expect(streamed.status).toBe(200);
    expect(streamed.headers.get('content-type')).toBe('application/x-ndjson');
    expect(streamed.headers.get('content-disposition')).toBe(`attachment; filename="task-${bigTaskId}-records.ndjson"`);
    expect(streamed.lines).toBe(RECORDS);
    expect(failed).toBe(RECORDS / 4);
    // streamed in many pieces, not one body built first
    expect(streamed.chunks).toBeGreaterThan(10);
    expect(streamed.ms).toBeLessThan(MAX_EXPORT_MS);
    expect(streamed.heapPeakMb - streamed.heapBeforeMb).toBeLessThan(MAX_LIVE_HEAP_GROWTH_MB);
    expect(streamed.heapAfterMb - streamed.heapBeforeMb).toBeLessThan(MAX_HEAP_RETAINED_MB);
  }, 120_000);

  it('streams CSV: a header line and one quoted line per record', async () => {
    let header = '';
    const streamed = await streamExport(`/api/tasks/${bigTaskId}/records/export?format=csv`, (line, index) => {
      expect(line.endsWith('\r')).toBe(true);
      if (index === 0) header = line;
      else expect(line.startsWith('"')).toBe(true);
    });
    report('CSV', streamed);
    expect(streamed.status).toBe(200);
    expect(streamed.headers.get('content-type')).toBe('text/csv; charset=utf-8');
    expect(streamed.headers.get('content-disposition')).toBe(`attachment; filename="task-${bigTaskId}-records.csv"`);
    expect(header).toBe('"id","taskId","firmwareId","deviceId","productId","fromVersion","targetVersion","state","progress","attempts",'
      + '"wave","errorReason","ignoredEvents","createdAt","startedAt","completedAt","updatedAt"\r');
    expect(streamed.lines).toBe(RECORDS + 1);
    expect(streamed.chunks).toBeGreaterThan(10);
    expect(streamed.ms).toBeLessThan(MAX_EXPORT_MS);
    expect(streamed.heapPeakMb - streamed.heapBeforeMb).toBeLessThan(MAX_LIVE_HEAP_GROWTH_MB);
    expect(streamed.heapAfterMb - streamed.heapBeforeMb).toBeLessThan(MAX_HEAP_RETAINED_MB);
  }, 120_000);

  it('filters by state', async () => {
    const streamed = await streamExport(`/api/tasks/${bigTaskId}/records/export?format=ndjson&state=waiting`, (line) => {
      expect(JSON.parse(line).state).toBe('waiting');
    });
    expect(streamed.lines).toBe(RECORDS / 4);
  }, 60_000);
});

describe('export fields and CSV quoting', () => {
  async function listed(): Promise<Array<Record<string, unknown>>> {
    const response = await t.app.inject({ url: `/api/tasks/${smallTaskId}/records?pageSize=500`, headers: t.auth });
    expect(response.statusCode).toBe(200);
    return response.json().items;
  }

  it('NDJSON lines are the records list items, and NDJSON is the default', async () => {
    const response = await t.app.inject({ url: `/api/tasks/${smallTaskId}/records/export`, headers: t.auth });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toBe('application/x-ndjson');
    const lines = response.body.trimEnd().split('\n').map((line) => JSON.parse(line));
    expect(lines).toEqual(await listed());
  });

  it('CSV has the same values, quoted (quotes doubled, commas and new lines kept), formulas defused', async () => {
    const response = await t.app.inject({ url: `/api/tasks/${smallTaskId}/records/export?format=csv`, headers: t.auth });
    expect(response.statusCode).toBe(200);
    expect(response.body).toContain('"bad ""reply"", then\na new line"');
    const [header, ...rows] = parseCsv(response.body);
    const items = await listed();
    expect(header).toEqual(Object.keys(items[0]!));
    expect(rows).toHaveLength(3);
    const byDevice = new Map(rows.map((row) => [row[header!.indexOf('deviceId')], row]));
    const field = (deviceId: string, name: string) => byDevice.get(deviceId)![header!.indexOf(name)];
    expect(field('small-1', 'errorReason')).toBe(TRICKY);
    expect(field('small-2', 'fromVersion')).toBe("'=1+2");
    expect(field('small-2', 'errorReason')).toBe("'@SUM(A1)");
    expect(field('small-3', 'fromVersion')).toBe('');
    const item = items.find((candidate) => candidate.deviceId === 'small-1')!;
    expect(field('small-1', 'createdAt')).toBe(item.createdAt);
    expect(field('small-1', 'id')).toBe(String(item.id));
  });

  it('answers 404 for an unknown task and 400 for a bad format or state', async () => {
    const unknown = await t.app.inject({ url: '/api/tasks/00000000-0000-4000-8000-000000000000/records/export?format=csv', headers: t.auth });
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json().code).toBe('not_found');
    for (const query of ['format=xml', 'state=lost']) {
      const bad = await t.app.inject({ url: `/api/tasks/${smallTaskId}/records/export?${query}`, headers: t.auth });
      expect(bad.statusCode, query).toBe(400);
      expect(bad.json().code).toBe('validation_error');
    }
    const noKey = await t.app.inject({ url: `/api/tasks/${smallTaskId}/records/export` });
    expect(noKey.statusCode).toBe(401);
  });
});
