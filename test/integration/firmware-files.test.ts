// Firmware files: streamed upload (raw and multipart), limits, and signed downloads with HEAD,
// Range and ETag, over a real HTTP listener so the streaming paths are the ones in production.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, readdir, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signDownloadUrl } from '../../core/download-url.ts';
import { buildTestApp, type TestApp } from '../helpers/app.ts';

const BIG_BYTES = 50 * 1024 * 1024;

let t: TestApp;
let base: string;
let scratch: string;
let nextOrder = 1;

beforeAll(async () => {
  t = await buildTestApp();
  base = await t.app.listen({ port: 0, host: '127.0.0.1' });
  scratch = await mkdtemp(path.join(os.tmpdir(), 'otter-files-test-'));
});

afterAll(async () => {
  await t?.close();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

async function createFirmware(app: TestApp = t): Promise<string> {
  const response = await app.app.inject({
    method: 'POST',
    url: '/api/firmware',
    headers: app.auth,
    payload: { productId: 'prod-files', name: 'fw', version: `1.0.${nextOrder}`, versionOrder: nextOrder++ },
  });
  expect(response.statusCode, response.body).toBe(201);
  return response.json().id;
}

/** Writes `size` random bytes to a file, hashing them on the way. */
async function randomFile(size: number): Promise<{ file: string; sha256: string; md5: string }> {
  const file = path.join(scratch, `random-${size}-${Date.now()}.bin`);
  const sha256 = createHash('sha256');
  const md5 = createHash('md5');
  const out = createWriteStream(file);
  for (let written = 0; written < size;) {
    const chunk = randomBytes(Math.min(1024 * 1024, size - written));
    sha256.update(chunk);
    md5.update(chunk);
    written += chunk.length;
    if (!out.write(chunk)) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
  }
  out.end();
  await finished(out);
  return { file, sha256: sha256.digest('hex'), md5: md5.digest('hex') };
}

interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** An HTTP request whose body is streamed from `body` (chunked unless a content-length is given). */
function request(method: string, url: string, headers: Record<string, string | number>, body?: Readable): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const outgoing = http.request(url, { method, headers }, (incoming) => {
      const chunks: Buffer[] = [];
      incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
      incoming.on('end', () => resolve({ status: incoming.statusCode ?? 0, headers: incoming.headers, body: Buffer.concat(chunks) }));
      incoming.on('error', reject);
    });
    outgoing.on('error', reject);
    if (body) body.pipe(outgoing);
    else outgoing.end();
  });
}

function json(answer: HttpAnswer): Record<string, unknown> {
  return JSON.parse(answer.body.toString('utf8'));
}

async function errorOf(response: Response): Promise<{ code: string; message: string }> {
  return (await response.json()) as { code: string; message: string };
}

async function readSlice(file: string, start: number, length: number): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, start);
    return buffer;
  } finally {
    await handle.close();
  }
}

async function storedFiles(app: TestApp): Promise<string[]> {
  return readdir(app.storageDir);
}

function signedUrl(id: string, ttlSeconds = 600, nowMs = Date.now()): string {
  return signDownloadUrl(base, t.config.urlSigningSecret, id, 'files-test-device', ttlSeconds, nowMs);
}

describe('a 50 MB upload, streamed', () => {
  let id: string;
  let big: { file: string; sha256: string; md5: string };

  beforeAll(async () => {
    id = await createFirmware();
    big = await randomFile(BIG_BYTES);
  });

  it('stores the file with size and sha256 while memory stays flat', async () => {
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 10);
    let answer: HttpAnswer;
    try {
      answer = await request(
        'PUT',
        `${base}/api/firmware/${id}/file`,
        { ...t.auth, 'content-type': 'application/octet-stream', 'content-length': BIG_BYTES },
        createReadStream(big.file),
      );
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, process.memoryUsage().rss);
    const growthMb = (peak - baseline) / 1024 / 1024;
    console.log(`50 MB upload: RSS grew by ${growthMb.toFixed(1)} MB`);
    expect(answer.status, answer.body.toString()).toBe(200);
    expect(json(answer)).toMatchObject({
      id,
      size: BIG_BYTES,
      sign: big.sha256,
      signMethod: 'sha256',
      hasFile: true,
      url: `${t.config.publicBaseUrl}/files/firmware/${id}`,
    });
    expect(growthMb).toBeLessThan(40);
    expect(await storedFiles(t)).toEqual([`${id}.bin`]);
  });

  it('signs with md5 when asked, also for a chunked body', async () => {
    const answer = await request(
      'PUT',
      `${base}/api/firmware/${id}/file?signMethod=md5`,
      { ...t.auth, 'content-type': 'application/octet-stream' },
      createReadStream(big.file),
    );
    expect(answer.status, answer.body.toString()).toBe(200);
    expect(json(answer)).toMatchObject({ size: BIG_BYTES, sign: big.md5, signMethod: 'md5', hasFile: true });
    const read = await t.app.inject({ method: 'GET', url: `/api/firmware/${id}`, headers: t.auth });
    expect(read.json()).toMatchObject({ size: BIG_BYTES, sign: big.md5, signMethod: 'md5' });
  });

  it('serves the exact bytes through a signed URL', async () => {
    const response = await fetch(signedUrl(id));
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('application/octet-stream');
    expect(Number(response.headers.get('content-length'))).toBe(BIG_BYTES);
    const body = Buffer.from(await response.arrayBuffer());
    expect(body.length).toBe(BIG_BYTES);
    expect(createHash('sha256').update(body).digest('hex')).toBe(big.sha256);
  });

  it('answers a Range request with 206 and that slice', async () => {
    const response = await fetch(signedUrl(id), { headers: { range: 'bytes=1000000-1000999' } });
    expect(response.status).toBe(206);
    expect(response.headers.get('content-range')).toBe(`bytes 1000000-1000999/${BIG_BYTES}`);
    expect(Number(response.headers.get('content-length'))).toBe(1000);
    const body = Buffer.from(await response.arrayBuffer());
    expect(body.equals(await readSlice(big.file, 1_000_000, 1000))).toBe(true);

    const tail = await fetch(signedUrl(id), { headers: { range: 'bytes=-10' } });
    expect(tail.status).toBe(206);
    expect(Buffer.from(await tail.arrayBuffer()).equals(await readSlice(big.file, BIG_BYTES - 10, 10))).toBe(true);

    const unsatisfiable = await fetch(signedUrl(id), { headers: { range: `bytes=${BIG_BYTES}-` } });
    expect(unsatisfiable.status).toBe(416);
    await unsatisfiable.arrayBuffer();
  });

  it('sends an ETag and answers If-None-Match with 304', async () => {
    // node's fetch adds cache-control: no-cache to conditional requests, so plain http here
    const first = await request('GET', signedUrl(id), { range: 'bytes=0-15' });
    const etag = first.headers.etag;
    expect(etag).toMatch(/^(W\/)?".+"$/);
    const again = await request('GET', signedUrl(id), { 'if-none-match': etag! });
    expect(again.status).toBe(304);
    expect(again.body.length).toBe(0);
    const changed = await request('GET', signedUrl(id), { 'if-none-match': '"something-else"', range: 'bytes=0-15' });
    expect(changed.status).toBe(206);
    expect(changed.headers.etag).toBe(etag);
  });

  it('answers HEAD with the headers and no body', async () => {
    const answer = await request('HEAD', signedUrl(id), {});
    expect(answer.status).toBe(200);
    expect(Number(answer.headers['content-length'])).toBe(BIG_BYTES);
    expect(answer.headers['content-type']).toBe('application/octet-stream');
    expect(answer.headers['accept-ranges']).toBe('bytes');
    expect(answer.headers.etag).toBeTruthy();
    expect(answer.body.length).toBe(0);
  });
});

describe('download authorisation', () => {
  let id: string;
  const content = Buffer.from('small firmware image\n');

  beforeAll(async () => {
    id = await createFirmware();
    const upload = await t.app.inject({
      method: 'PUT',
      url: `/api/firmware/${id}/file`,
      headers: { ...t.auth, 'content-type': 'application/octet-stream' },
      payload: content,
    });
    expect(upload.statusCode, upload.body).toBe(200);
  });

  it('refuses a tampered signature with 403 invalid_signature', async () => {
    const url = new URL(signedUrl(id));
    const signature = url.searchParams.get('signature')!;
    url.searchParams.set('signature', (signature[0] === 'A' ? 'B' : 'A') + signature.slice(1));
    const response = await fetch(url);
    expect(response.status).toBe(403);
    expect(await response.json()).toMatchObject({ statusCode: 403, code: 'invalid_signature' });
  });

  it('refuses a signature of another firmware, or with a moved expiry', async () => {
    const other = await createFirmware();
    const foreign = new URL(signedUrl(other));
    const response = await fetch(`${base}/files/firmware/${id}${foreign.search}`);
    expect(response.status).toBe(403);
    expect((await errorOf(response)).code).toBe('invalid_signature');

    const moved = new URL(signedUrl(id));
    moved.searchParams.set('expires', String(Number(moved.searchParams.get('expires')) + 3600));
    const later = await fetch(moved);
    expect(later.status).toBe(403);
    await later.arrayBuffer();
  });

  it('refuses an expired signature with 403 signature_expired', async () => {
    const response = await fetch(signedUrl(id, 60, Date.now() - 3_600_000));
    expect(response.status).toBe(403);
    expect(await response.json()).toMatchObject({ statusCode: 403, code: 'signature_expired' });
  });

  it('asks for a key when there is neither signature nor key', async () => {
    const response = await fetch(`${base}/files/firmware/${id}`);
    expect(response.status).toBe(401);
    expect(await response.json()).toMatchObject({ statusCode: 401, code: 'unauthorized' });
    const wrongKey = await fetch(`${base}/files/firmware/${id}`, { headers: { authorization: 'Bearer wrong-key' } });
    expect(wrongKey.status).toBe(401);
    await wrongKey.arrayBuffer();
  });

  it('serves the file to a key without a signature', async () => {
    const response = await fetch(`${base}/files/firmware/${id}`, { headers: t.auth });
    expect(response.status).toBe(200);
    expect(Buffer.from(await response.arrayBuffer()).equals(content)).toBe(true);
    const basic = Buffer.from(`device:${t.auth.authorization.replace('Bearer ', '')}`).toString('base64');
    const withBasic = await fetch(`${base}/files/firmware/${id}`, { headers: { authorization: `Basic ${basic}` } });
    expect(withBasic.status).toBe(200);
    await withBasic.arrayBuffer();
  });

  it('answers 404 for a firmware without a file, or unknown, and 400 for a malformed id', async () => {
    const empty = await createFirmware();
    const noFile = await fetch(signedUrl(empty));
    expect(noFile.status).toBe(404);
    expect((await errorOf(noFile)).code).toBe('not_found');
    const unknown = await fetch(`${base}/files/firmware/00000000-0000-4000-8000-000000000000`, { headers: t.auth });
    expect(unknown.status).toBe(404);
    await unknown.arrayBuffer();
    const malformed = await fetch(`${base}/files/firmware/..%2F..%2Fetc%2Fpasswd`, { headers: t.auth });
    expect(malformed.status).toBe(400);
    expect((await errorOf(malformed)).code).toBe('validation_error');
  });
});

describe('multipart and other upload forms', () => {
  it('takes the multipart field `file`', async () => {
    const id = await createFirmware();
    const content = randomBytes(100_000);
    const form = new FormData();
    form.append('file', new Blob([content]), 'image.bin');
    const response = await fetch(`${base}/api/firmware/${id}/file`, { method: 'PUT', headers: t.auth, body: form });
    const body = (await response.json()) as Record<string, unknown>;
    expect(response.status, JSON.stringify(body)).toBe(200);
    expect(body).toMatchObject({ size: content.length, sign: createHash('sha256').update(content).digest('hex'), hasFile: true });
    const download = await fetch(signedUrl(id));
    expect(Buffer.from(await download.arrayBuffer()).equals(content)).toBe(true);
  });

  it('refuses a multipart body without the field `file`', async () => {
    const id = await createFirmware();
    const form = new FormData();
    form.append('firmware', new Blob([Buffer.from('x')]), 'image.bin');
    const response = await fetch(`${base}/api/firmware/${id}/file`, { method: 'PUT', headers: t.auth, body: form });
    expect(response.status).toBe(400);
    expect((await errorOf(response)).code).toBe('validation_error');
    const read = await t.app.inject({ method: 'GET', url: `/api/firmware/${id}`, headers: t.auth });
    expect(read.json().hasFile).toBe(false);
  });

  it('refuses other media types, an empty body, an unknown firmware and a missing key', async () => {
    const id = await createFirmware();
    const before = await storedFiles(t);
    const text = await t.app.inject({
      method: 'PUT',
      url: `/api/firmware/${id}/file`,
      headers: { ...t.auth, 'content-type': 'text/plain' },
      payload: 'not a file',
    });
    expect(text.statusCode).toBe(415);
    expect(text.json().code).toBe('unsupported_media_type');

    const empty = await t.app.inject({
      method: 'PUT',
      url: `/api/firmware/${id}/file`,
      headers: { ...t.auth, 'content-type': 'application/octet-stream' },
      payload: Buffer.alloc(0),
    });
    expect(empty.statusCode).toBe(400);
    expect(empty.json().code).toBe('validation_error');

    const unknown = await t.app.inject({
      method: 'PUT',
      url: '/api/firmware/00000000-0000-4000-8000-000000000000/file',
      headers: { ...t.auth, 'content-type': 'application/octet-stream' },
      payload: Buffer.from('bytes'),
    });
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json().code).toBe('not_found');

    const badMethod = await t.app.inject({
      method: 'PUT',
      url: `/api/firmware/${id}/file?signMethod=crc32`,
      headers: { ...t.auth, 'content-type': 'application/octet-stream' },
      payload: Buffer.from('bytes'),
    });
    expect(badMethod.statusCode).toBe(400);
    expect(badMethod.json().message).toContain('signMethod');

    const anonymous = await t.app.inject({
      method: 'PUT',
      url: `/api/firmware/${id}/file`,
      headers: { 'content-type': 'application/octet-stream' },
      payload: Buffer.from('bytes'),
    });
    expect(anonymous.statusCode).toBe(401);

    expect(await storedFiles(t)).toEqual(before);
    const read = await t.app.inject({ method: 'GET', url: `/api/firmware/${id}`, headers: t.auth });
    expect(read.json()).toMatchObject({ hasFile: false, size: null, sign: null });
  });
});

describe('FIRMWARE_MAX_BYTES', () => {
  let small: TestApp;
  let smallBase: string;

  beforeAll(async () => {
    small = await buildTestApp({ FIRMWARE_MAX_BYTES: '1024' });
    smallBase = await small.app.listen({ port: 0, host: '127.0.0.1' });
  });

  afterAll(async () => {
    await small?.close();
  });

  async function expectNothingStored(id: string) {
    expect(await storedFiles(small)).toEqual([]);
    const read = await small.app.inject({ method: 'GET', url: `/api/firmware/${id}`, headers: small.auth });
    expect(read.json()).toMatchObject({ hasFile: false, size: null });
  }

  it('refuses a declared length over the limit with 413 before reading', async () => {
    const id = await createFirmware(small);
    const response = await small.app.inject({
      method: 'PUT',
      url: `/api/firmware/${id}/file`,
      headers: { ...small.auth, 'content-type': 'application/octet-stream' },
      payload: randomBytes(1025),
    });
    expect(response.statusCode).toBe(413);
    expect(response.json()).toMatchObject({ statusCode: 413, code: 'payload_too_large' });
    await expectNothingStored(id);
  });

  it('stops a chunked body at the limit with 413 and leaves no file', async () => {
    const id = await createFirmware(small);
    const answer = await request(
      'PUT',
      `${smallBase}/api/firmware/${id}/file`,
      { ...small.auth, 'content-type': 'application/octet-stream' },
      Readable.from([randomBytes(1000), randomBytes(1000)]),
    );
    expect(answer.status).toBe(413);
    expect(json(answer).code).toBe('payload_too_large');
    await expectNothingStored(id);
  });

  it('stops a multipart file at the limit with 413 and leaves no file', async () => {
    const id = await createFirmware(small);
    const form = new FormData();
    form.append('file', new Blob([randomBytes(5000)]), 'image.bin');
    const response = await fetch(`${smallBase}/api/firmware/${id}/file`, { method: 'PUT', headers: small.auth, body: form });
    expect(response.status).toBe(413);
    expect((await errorOf(response)).code).toBe('payload_too_large');
    await expectNothingStored(id);
  });

  it('takes a file of exactly the limit', async () => {
    const id = await createFirmware(small);
    const content = randomBytes(1024);
    const response = await small.app.inject({
      method: 'PUT',
      url: `/api/firmware/${id}/file`,
      headers: { ...small.auth, 'content-type': 'application/octet-stream' },
      payload: content,
    });
    expect(response.statusCode, response.body).toBe(200);
    expect(response.json()).toMatchObject({ size: 1024, sign: createHash('sha256').update(content).digest('hex') });
    expect(await storedFiles(small)).toEqual([`${id}.bin`]);
  });
});
