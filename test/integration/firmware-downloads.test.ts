// Per-device download URLs and the firmware freeze: every device is handed its own signed URL,
// which opens that firmware for that device only; a device's first download of an attempt (a Range
// request included, HEAD not) adds exactly one `downloaded` event to its active record, however many
// requests race; and while a task of a firmware has active records its file and the fields devices
// are told cannot change (409 firmware_in_use), until the records are final or canceled.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signDownloadUrl } from '../../core/download-url.ts';
import { noteFirstDownloads } from '../../db/queries/download-events.ts';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { PlatformSink } from '../helpers/platform-sink.ts';
import { createTask, registerDevices } from '../helpers/rollout.ts';

const PRODUCT = 'dl-p';
const PUSHED = ['dl-a', 'dl-b'];
const PULLER = 'dl-c';
const RACER = 'dl-d';
/** Devices whose first downloads show that the notes before them are written. */
const SENTINELS = Array.from({ length: 8 }, (_, i) => `dl-s${i}`);
const TIMEOUT_SECONDS = 600;
const WAIT_MS = 15_000;

interface Upgrade {
  messageType: string;
  deviceId: string;
  url: string;
}


let sink: PlatformSink<Upgrade>;
let t: TestApp;
let firmwareX: string;
let firmwareY: string;
let pushTaskId: string;
let pullTaskId: string;
const content = randomBytes(8 * 1024);

async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function newFirmware(version: string, versionOrder: number, bytes: Buffer): Promise<string> {
  const created = await t.app.inject({ method: 'POST', url: '/api/firmware', headers: t.auth, payload: { productId: PRODUCT, name: `fw ${version}`, version, versionOrder, properties: { channel: 'test' } } });
  expect(created.statusCode, created.body).toBe(201);
  const id = created.json().id as string;
  const upload = await t.app.inject({ method: 'PUT', url: `/api/firmware/${id}/file`, headers: { ...t.auth, 'content-type': 'application/octet-stream' }, payload: bytes });
  expect(upload.statusCode, upload.body).toBe(200);
  return id;
}

/** The path and query of a URL handed to a device, to be opened with inject. */
function local(url: string | URL): string {
  const parsed = new URL(url);
  return `${parsed.pathname}${parsed.search}`;
}

async function download(url: string | URL, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET') {
  return t.app.inject({ method, url: local(url), headers });
}

async function recordOf(taskId: string, deviceId: string) {
  return t.database.db.selectFrom('upgrade_records').selectAll().where('task_id', '=', taskId).where('device_id', '=', deviceId).executeTakeFirstOrThrow();
}

async function downloadedEvents(recordId: number) {
  return t.database.db.selectFrom('record_events').select(['type', 'attempt']).where('record_id', '=', recordId).where('type', '=', 'downloaded').orderBy('id').execute();
}

async function pull(messageId: string) {
  const response = await t.app.inject({
    method: 'POST',
    url: '/api/device-messages',
    headers: t.auth,
    payload: { messageType: 'REQUEST_FIRMWARE', deviceId: PULLER, messageId, currentVersion: '1.0.0', timestamp: Date.now() },
  });
  expect(response.statusCode, response.body).toBe(200);
  const reply = response.json().results[0].reply as { success: boolean; url: string };
  expect(reply.success).toBe(true);
  return reply;
}

/**
 * Downloads are noted in the background, one batch after another in arrival order. Once a first
 * download by a device not seen before shows up on its timeline, whatever an earlier request would
 * have noted has been written.
 */
let sentinelsUsed = 0;
async function settleNotes(): Promise<void> {
  const sentinel = SENTINELS[sentinelsUsed++]!;
  const record = await recordOf(pullTaskId, sentinel);
  const url = signDownloadUrl('http://otter.test', t.config.urlSigningSecret, firmwareX, sentinel, 600);
  expect((await download(url, { range: 'bytes=0-0' })).statusCode).toBe(206);
  await waitFor(`${sentinel}'s downloaded event`, async () => (await downloadedEvents(record.id)).length === 1);
}

beforeAll(async () => {
  sink = new PlatformSink<Upgrade>();
  await sink.start();
  t = await buildTestApp({ ROLE: 'all', CONNECTOR: 'http', HTTP_CONNECTOR_URL: sink.url, HTTP_CONNECTOR_SECRET: 'secret' });
  await registerDevices(t.app, t.auth, PRODUCT, [...PUSHED, PULLER, RACER, ...SENTINELS], '1.0.0');
  firmwareX = await newFirmware('2.0.0', 2, content);
  firmwareY = await newFirmware('3.0.0', 3, randomBytes(1024));
  pushTaskId = await createTask(t.app, t.auth, { firmwareId: firmwareX, timeoutSeconds: TIMEOUT_SECONDS });
  const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${pushTaskId}/release`, headers: t.auth, payload: { deviceIds: PUSHED, push: true } });
  expect(release.json().added).toBe(PUSHED.length);
  await waitFor('both upgrades sent', async () => PUSHED.every((id) => sink.upgradeFor(id)));
  pullTaskId = await createTask(t.app, t.auth, {
    firmwareId: firmwareX,
    mode: 'pull',
    timeoutSeconds: TIMEOUT_SECONDS,
    retry: { maxAttempts: 3, backoffSeconds: 1, on: ['device_failure'] },
    name: 'pull',
  });
  const pulled = await t.app.inject({ method: 'POST', url: `/api/tasks/${pullTaskId}/release`, headers: t.auth, payload: { deviceIds: [PULLER, RACER, ...SENTINELS] } });
  expect(pulled.json().added).toBe(2 + SENTINELS.length);
});

afterAll(async () => {
  await t?.close();
  await sink?.stop();
});

describe('per-device download URLs', () => {
  it('hands each device its own URL, living for the attempt timeout plus an hour', () => {
    const [a, b] = PUSHED.map((id) => new URL(sink.upgradeFor(id)!.url));
    expect(a!.toString()).not.toBe(b!.toString());
    expect(a!.pathname).toBe(`/files/firmware/${firmwareX}`);
    expect(a!.searchParams.get('device')).toBe('dl-a');
    expect(b!.searchParams.get('device')).toBe('dl-b');
    expect(a!.searchParams.get('signature')).not.toBe(b!.searchParams.get('signature'));
    const lifetime = Number(a!.searchParams.get('expires')) - Date.now() / 1000;
    expect(lifetime).toBeGreaterThan(TIMEOUT_SECONDS + 3600 - 120);
    expect(lifetime).toBeLessThanOrEqual(TIMEOUT_SECONDS + 3600);
  });

  it('refuses a URL moved to another device, another firmware, or stripped of its device', async () => {
    const url = new URL(sink.upgradeFor('dl-a')!.url);

    const otherDevice = new URL(url);
    otherDevice.searchParams.set('device', 'dl-b');
    const moved = await download(otherDevice);
    expect(moved.statusCode).toBe(403);
    expect(moved.json()).toMatchObject({ statusCode: 403, code: 'invalid_signature' });

    const otherFirmware = await t.app.inject({ url: `/files/firmware/${firmwareY}${url.search}` });
    expect(otherFirmware.statusCode).toBe(403);
    expect(otherFirmware.json().code).toBe('invalid_signature');

    const deviceless = new URL(url);
    deviceless.searchParams.delete('device');
    const stripped = await download(deviceless);
    expect(stripped.statusCode).toBe(403);
    expect(stripped.json().code).toBe('invalid_signature');

    // and nothing refused was noted as a download
    await settleNotes();
    expect(await downloadedEvents((await recordOf(pushTaskId, 'dl-a')).id)).toEqual([]);
    expect(await downloadedEvents((await recordOf(pushTaskId, 'dl-b')).id)).toEqual([]);
  });

  it('still serves the file to an API key without a signature, noting nothing', async () => {
    const response = await t.app.inject({ url: `/files/firmware/${firmwareX}`, headers: t.auth });
    expect(response.statusCode).toBe(200);
    expect(response.rawPayload.equals(content)).toBe(true);
  });
});

describe('the downloaded event', () => {
  it('is not added by HEAD', async () => {
    const head = await download(sink.upgradeFor('dl-b')!.url, {}, 'HEAD');
    expect(head.statusCode).toBe(200);
    await settleNotes();
    expect(await downloadedEvents((await recordOf(pushTaskId, 'dl-b')).id)).toEqual([]);
  });

  it('is added once by a first Range download, and not again by the next download', async () => {
    const url = sink.upgradeFor('dl-a')!.url;
    const record = await recordOf(pushTaskId, 'dl-a');
    const range = await download(url, { range: 'bytes=0-99' });
    expect(range.statusCode).toBe(206);
    expect(range.rawPayload.equals(content.subarray(0, 100))).toBe(true);
    await waitFor('dl-a\'s downloaded event', async () => (await downloadedEvents(record.id)).length > 0);
    expect(await downloadedEvents(record.id)).toEqual([{ type: 'downloaded', attempt: 1 }]);

    const whole = await download(url);
    expect(whole.statusCode).toBe(200);
    expect(whole.rawPayload.equals(content)).toBe(true);
    // another URL for the same attempt (as a pull asked again would get): the database keeps one
    const another = signDownloadUrl('http://otter.test', t.config.urlSigningSecret, firmwareX, 'dl-a', 1234);
    expect((await download(another)).statusCode).toBe(200);
    await settleNotes();
    expect(await downloadedEvents(record.id)).toEqual([{ type: 'downloaded', attempt: 1 }]);

    const detail = (await t.app.inject({ url: `/api/records/${record.id}`, headers: t.auth })).json();
    const types = detail.events.map((e: { type: string }) => e.type);
    expect(types.filter((type: string) => type === 'downloaded')).toHaveLength(1);
    expect(types.indexOf('downloaded')).toBeGreaterThan(types.indexOf('sent'));
  });

  it('is added exactly once when a device\'s first Range requests race', async () => {
    const url = sink.upgradeFor('dl-b')!.url;
    const record = await recordOf(pushTaskId, 'dl-b');
    const parts = await Promise.all(Array.from({ length: 16 }, (_, i) => download(url, { range: `bytes=${i * 512}-${i * 512 + 511}` })));
    expect(parts.map((part) => part.statusCode)).toEqual(Array(16).fill(206));
    expect(Buffer.concat(parts.map((part) => part.rawPayload)).equals(content)).toBe(true);
    await waitFor('dl-b\'s downloaded event', async () => (await downloadedEvents(record.id)).length > 0);
    await settleNotes();
    expect(await downloadedEvents(record.id)).toEqual([{ type: 'downloaded', attempt: 1 }]);
  });

  it('keeps one event per attempt when writers race in open transactions', async () => {
    const record = await recordOf(pullTaskId, RACER);
    const writers = 5;
    let tried = 0;
    let everyoneTried!: () => void;
    const allTried = new Promise<void>((resolve) => (everyoneTried = resolve));
    const added = await Promise.all(Array.from({ length: writers }, () => t.database.db.transaction().execute(async (trx) => {
      const n = await noteFirstDownloads(trx, [{ firmwareId: firmwareX, deviceId: RACER }]);
      if (++tried === writers) everyoneTried();
      // held open until every writer has written, so none sees another's row; a writer the
      // database makes wait for this one is let through by the time-out instead
      await Promise.race([allTried, new Promise((resolve) => setTimeout(resolve, 500))]);
      return n;
    })));
    expect(added.reduce((sum, n) => sum + n, 0)).toBe(1);
    expect(await downloadedEvents(record.id)).toEqual([{ type: 'downloaded', attempt: 0 }]);
    // a download of another firmware adds nothing to it
    expect(await noteFirstDownloads(t.database.db, [{ firmwareId: firmwareY, deviceId: RACER }])).toBe(0);
  });

  it('is added for each attempt, with its number', async () => {
    const first = await pull('first');
    const record = await recordOf(pullTaskId, PULLER);
    expect(record).toMatchObject({ state: 'processing', attempts: 1 });
    expect(new URL(first.url).searchParams.get('device')).toBe(PULLER);
    expect((await download(first.url)).statusCode).toBe(200);
    await waitFor('the first attempt\'s downloaded event', async () => (await downloadedEvents(record.id)).length === 1);

    // the device fails the attempt; the pull retry waits for it to ask again
    const failed = await t.app.inject({
      method: 'POST',
      url: '/api/device-messages',
      headers: t.auth,
      payload: { messageType: 'UPGRADE_FIRMWARE_PROGRESS', deviceId: PULLER, progress: 10, complete: false, success: false, errorReason: 'flash error', version: '2.0.0', timestamp: Date.now() },
    });
    expect(failed.statusCode, failed.body).toBe(200);
    await waitFor('the puller back to waiting', async () => (await recordOf(pullTaskId, PULLER)).state === 'waiting');
    const reply = await pull('again');
    const next = await recordOf(pullTaskId, PULLER);
    expect(next).toMatchObject({ state: 'processing', attempts: 2 });
    expect((await download(reply.url, { range: 'bytes=0-9' })).statusCode).toBe(206);
    await waitFor('the second attempt\'s downloaded event', async () => (await downloadedEvents(record.id)).length === 2);
    expect(await downloadedEvents(record.id)).toEqual([{ type: 'downloaded', attempt: 1 }, { type: 'downloaded', attempt: 2 }]);
  });
});

describe('a firmware in use is frozen', () => {
  const frozenPatches: Array<Record<string, unknown>> = [
    { url: 'https://elsewhere.example.com/fw.bin' },
    { sign: 'cd'.repeat(32) },
    { signMethod: 'md5' },
    { size: 12345 },
    { version: '2.0.1' },
    { properties: { channel: 'beta' } },
    { productId: 'dl-other' },
    { name: 'renamed too', version: '2.0.1' },
  ];

  it('refuses an upload with 409 firmware_in_use and keeps the file', async () => {
    const upload = await t.app.inject({ method: 'PUT', url: `/api/firmware/${firmwareX}/file`, headers: { ...t.auth, 'content-type': 'application/octet-stream' }, payload: randomBytes(2048) });
    expect(upload.statusCode).toBe(409);
    expect(upload.json()).toMatchObject({ statusCode: 409, code: 'firmware_in_use' });
    const stored = await t.app.inject({ url: `/files/firmware/${firmwareX}`, headers: t.auth });
    expect(stored.rawPayload.equals(content)).toBe(true);
  });

  it('refuses a PATCH that changes what devices are told, and changes nothing', async () => {
    const before = (await t.app.inject({ url: `/api/firmware/${firmwareX}`, headers: t.auth })).json();
    for (const payload of frozenPatches) {
      const response = await t.app.inject({ method: 'PATCH', url: `/api/firmware/${firmwareX}`, headers: t.auth, payload });
      expect(response.statusCode, JSON.stringify(payload)).toBe(409);
      expect(response.json().code, JSON.stringify(payload)).toBe('firmware_in_use');
    }
    const after = (await t.app.inject({ url: `/api/firmware/${firmwareX}`, headers: t.auth })).json();
    expect(after).toEqual(before);
  });

  it('lets name, description and versionOrder change, and frozen fields be sent unchanged', async () => {
    const current = (await t.app.inject({ url: `/api/firmware/${firmwareX}`, headers: t.auth })).json();
    const response = await t.app.inject({
      method: 'PATCH',
      url: `/api/firmware/${firmwareX}`,
      headers: t.auth,
      payload: { name: 'renamed', description: 'in the field', versionOrder: 20, version: current.version, size: current.size, properties: { channel: 'test' } },
    });
    expect(response.statusCode, response.body).toBe(200);
    expect(response.json()).toMatchObject({ name: 'renamed', description: 'in the field', versionOrder: 20, version: '2.0.0' });
  });

  it('leaves a firmware without active records free', async () => {
    const response = await t.app.inject({ method: 'PATCH', url: `/api/firmware/${firmwareY}`, headers: t.auth, payload: { version: '3.0.1' } });
    expect(response.statusCode, response.body).toBe(200);
  });

  it('thaws once the records are final or canceled', async () => {
    for (const taskId of [pushTaskId, pullTaskId]) {
      const cancel = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/cancel`, headers: t.auth, payload: { includeProcessing: true } });
      expect(cancel.statusCode, cancel.body).toBe(200);
    }
    for (const payload of frozenPatches.slice(0, 6)) {
      const response = await t.app.inject({ method: 'PATCH', url: `/api/firmware/${firmwareX}`, headers: t.auth, payload });
      expect(response.statusCode, `${JSON.stringify(payload)}: ${response.body}`).toBe(200);
    }
    const replacement = randomBytes(2048);
    const upload = await t.app.inject({ method: 'PUT', url: `/api/firmware/${firmwareX}/file`, headers: { ...t.auth, 'content-type': 'application/octet-stream' }, payload: replacement });
    expect(upload.statusCode, upload.body).toBe(200);
    expect(upload.json()).toMatchObject({ size: 2048, hasFile: true });
  });
});
