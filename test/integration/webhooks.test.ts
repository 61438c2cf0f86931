// Webhooks end to end (docs/rest-api.md#webhooks): the routes and their validation; a 1,000-device
// rollout over a real broker whose every record.final reaches a local receiver — signed, in batches
// of at most 1,000, ids rising per task — with two worker processes delivering; the receiver
// answering 500 for a minute (WEBHOOK_TEST_FAIL_MS) and then 200: everything arrives afterwards and
// the deliveries show their attempts; a redirect is never followed, and a delivery that keeps
// failing past 24 h is given up so the next one goes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { envFor, spawnOtter, type OtterProcess } from '../helpers/processes.ts';
import { expectErrorKeys } from '../helpers/error-shape.ts';
import { Fleet, fleetDeviceIds } from '../../tools/fleet.ts';
import { WebhookReceiver } from '../../tools/webhook-receiver.ts';
import { allFinal, createFirmware, createTask, registerDevices, waitForTask } from '../helpers/rollout.ts';

const DEVICES = 1_000;
/** How long the receiver answers 500: a minute, as the acceptance asks; shorter for a quick local run. */
const FAIL_MS = Number(process.env.WEBHOOK_TEST_FAIL_MS ?? 60_000);
/** Short back-off so the retries after the outage come quickly: 0.25, 0.5, 1, 2 … s. */
const RETRY_BASE_MS = 250;
const SECRET = 'a-test-secret-of-some-length';

async function waitFor<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

describe('webhooks', () => {
  let broker: TestBroker;
  let t: TestApp;
  let receiver: WebhookReceiver;
  let secondWorker: OtterProcess | undefined;
  const fleets: Fleet[] = [];

  beforeAll(async () => {
    broker = await startBroker();
    receiver = new WebhookReceiver();
    await receiver.start();
    t = await buildTestApp({ ROLE: 'all', MQTT_URL: broker.url, WORKER_CONCURRENCY: '100', WEBHOOK_RETRY_BASE_MS: String(RETRY_BASE_MS) });
    // a second worker process on the same database: deliveries are shared out, never overtake each other
    secondWorker = await spawnOtter(envFor(t.config, { ROLE: 'worker', WORKER_CONCURRENCY: '100', WEBHOOK_RETRY_BASE_MS: String(RETRY_BASE_MS) }));
  });

  afterAll(async () => {
    // first: a child process must not outlive the file, whatever else hangs below
    await secondWorker?.stop('SIGKILL');
    for (const fleet of fleets) await fleet.stop();
    await t?.close();
    await receiver?.stop();
    await broker?.stop();
  });

  async function createHook(body: Record<string, unknown>) {
    const response = await t.app.inject({ method: 'POST', url: '/api/webhooks', headers: t.auth, payload: body });
    expect(response.statusCode, response.body).toBe(201);
    return response.json() as { id: string; url: string; events: string[]; productId: string | null; secretSet: boolean };
  }

  async function deliveries(hookId: string, query = '') {
    const response = await t.app.inject({ method: 'GET', url: `/api/webhooks/${hookId}/deliveries?pageSize=500${query}`, headers: t.auth });
    expect(response.statusCode, response.body).toBe(200);
    return response.json() as { total: number; items: Array<{ id: string; state: string; attempts: number; eventCount: number; lastStatus: number | null; lastError: string | null; stream: string }> };
  }

  async function rollout(product: string, options: { failRate: number; silentRate: number }) {
    const ids = fleetDeviceIds(product, DEVICES);
    await registerDevices(t.app, t.auth, product, ids);
    const fleet = new Fleet({ mqttUrl: broker.url, productId: product, deviceIds: ids, progressSteps: 2, stepMs: 10, seed: product, reportOnStart: false, ...options });
    fleets.push(fleet);
    await fleet.start();
    const firmwareId = await createFirmware(t.app, t.auth, product);
    const taskId = await createTask(t.app, t.auth, { firmwareId, timeoutSeconds: 4, retry: { maxAttempts: 1, backoffSeconds: 1, on: ['timeout'] } });
    const release = await t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: t.auth, payload: { allDevices: true, push: true } });
    expect(release.json().added).toBe(DEVICES);
    await waitForTask(t.app, t.auth, taskId, (x) => allFinal(x) && x.state === 'completed', 120_000);
    const records = await t.database.db.selectFrom('upgrade_records').select(['device_id', 'state']).where('task_id', '=', taskId).execute();
    return { ids, taskId, fleet, states: new Map(records.map((r) => [r.device_id, r.state])) };
  }

  /** Every record.final of the task arrived (at least once), with the record's final state. */
  function expectEveryFinal(taskId: string, ids: string[], states: Map<string, string>) {
    const missing = ids.filter((id) => !receiver.finalsByRecord.has(`${taskId}/${id}`));
    expect(missing).toEqual([]);
    const seen = new Map<string, string>();
    for (const delivery of receiver.deliveries) {
      if (delivery.status >= 300) continue;
      for (const event of delivery.events) {
        if (event.type === 'record.final' && event.data.taskId === taskId) seen.set(event.data.deviceId as string, event.data.state as string);
      }
    }
    for (const id of ids) expect(seen.get(id), id).toBe(states.get(id));
  }

  it('registers, lists, reads and deletes hooks; the secret is never answered', async () => {
    const created = await createHook({ url: 'https://platform.example.com/otter?x=1', secret: SECRET, events: ['record.final', 'wave.gate'], productId: 'thermo' });
    expect(created).toMatchObject({ url: 'https://platform.example.com/otter?x=1', events: ['record.final', 'wave.gate'], productId: 'thermo', secretSet: true });
    expect(JSON.stringify(created)).not.toContain(SECRET);

    const list = await t.app.inject({ method: 'GET', url: '/api/webhooks', headers: t.auth });
    expect(list.statusCode).toBe(200);
    expect(list.json().items.map((hook: { id: string }) => hook.id)).toContain(created.id);
    expect(list.body).not.toContain(SECRET);
    const one = await t.app.inject({ method: 'GET', url: `/api/webhooks/${created.id}`, headers: t.auth });
    expect(one.json()).toEqual(created);
    expect(one.body).not.toContain(SECRET);
    expect((await deliveries(created.id)).items).toEqual([]);

    const gone = await t.app.inject({ method: 'DELETE', url: `/api/webhooks/${created.id}`, headers: t.auth });
    expect(gone.statusCode).toBe(204);
    for (const url of [`/api/webhooks/${created.id}`, `/api/webhooks/${created.id}/deliveries`]) {
      const response = await t.app.inject({ method: 'GET', url, headers: t.auth });
      expect(response.statusCode).toBe(404);
      expect(response.json().code).toBe('not_found');
      expectErrorKeys(response.json());
    }
    expect((await t.app.inject({ method: 'DELETE', url: `/api/webhooks/${created.id}`, headers: t.auth })).statusCode).toBe(404);
    expect((await t.app.inject({ method: 'GET', url: '/api/webhooks/not-a-uuid', headers: t.auth })).statusCode).toBe(400);
    expect((await t.app.inject({ method: 'GET', url: '/api/webhooks' })).statusCode).toBe(401);
  });

  it('refuses what cannot be delivered: a URL that is not http(s), a missing secret, an unknown event or property', async () => {
    const valid = { url: 'http://127.0.0.1:9/hook', secret: SECRET, events: ['record.final'] };
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ ...valid, url: 'ftp://files.example.com/hook' }, '/url'],
      [{ ...valid, url: 'javascript:alert(1)' }, '/url'],
      [{ ...valid, url: 'http://' }, '/url'],
      [{ ...valid, url: 'not a url' }, '/url'],
      [{ url: valid.url, events: valid.events }, ''],
      [{ ...valid, secret: 'short' }, '/secret'],
      [{ ...valid, events: [] }, '/events'],
      [{ ...valid, events: ['record.finale'] }, '/events/0'],
      [{ ...valid, events: ['record.final', 'record.final'] }, '/events'],
      [{ ...valid, productId: 'bad id with spaces' }, '/productId'],
      [{ ...valid, retries: 3 }, '/retries'],
    ];
    for (const [payload, path] of cases) {
      const response = await t.app.inject({ method: 'POST', url: '/api/webhooks', headers: t.auth, payload });
      expect(response.statusCode, JSON.stringify(payload)).toBe(400);
      expect(response.json().code).toBe('validation_error');
      expectErrorKeys(response.json());
      if (path) expect(response.json().details?.[0]?.path, JSON.stringify(payload)).toBe(path);
    }
  });

  it('a 1,000-device rollout: every record.final arrives, signed, in batches of at most 1,000, in order per task', async () => {
    const hook = await createHook({ url: receiver.url('/rollout', SECRET), secret: SECRET, events: ['record.final', 'task.state_changed', 'task.completed', 'device.registered'], productId: 'thermo' });
    // a hook of another product hears nothing of this one
    const other = await createHook({ url: receiver.url('/other', SECRET), secret: SECRET, events: ['record.final', 'device.registered'], productId: 'elsewhere' });

    const { ids, taskId, fleet, states } = await rollout('thermo', { failRate: 0.02, silentRate: 0.01 });
    expect(fleet.fateCount('fail') + fleet.fateCount('silent')).toBeGreaterThan(0);
    await waitFor('every record.final', () => ids.every((id) => receiver.finalsByRecord.has(`${taskId}/${id}`)) || undefined, 60_000);
    await waitFor('task.completed', () => (receiver.eventsByType.get('task.completed') ?? 0) >= 1 || undefined, 30_000);

    expectEveryFinal(taskId, ids, states);
    expect([...states.values()].filter((state) => state === 'failed').length).toBe(fleet.fateCount('fail') + fleet.fateCount('silent'));
    expect(receiver.badSignatures).toBe(0);
    expect(receiver.outOfOrder).toBe(0);
    expect(receiver.largestBatch).toBeLessThanOrEqual(1_000);
    expect(receiver.eventsByType.get('device.registered')).toBe(DEVICES);

    // the task's own events, in its stream: running … completed, and completed after every record.final
    const taskEvents = receiver.deliveries.filter((d) => d.path === '/rollout' && d.status < 300).flatMap((d) => d.events)
      .filter((e) => e.data.taskId === taskId);
    const types = taskEvents.map((e) => e.type);
    const running = taskEvents.find((e) => e.type === 'task.state_changed' && e.data.state === 'running')!;
    expect(running.data).toMatchObject({ taskId, productId: 'thermo', previousState: 'created' });
    const completed = taskEvents.findIndex((e) => e.type === 'task.completed');
    expect(taskEvents[completed]!.data).toMatchObject({ state: 'completed', stats: { total: DEVICES, waiting: 0, processing: 0 } });
    expect(types.lastIndexOf('record.final')).toBeLessThan(completed);
    const sample = taskEvents.find((e) => e.type === 'record.final' && e.data.state === 'failed')!;
    expect(sample.data).toMatchObject({ taskId, productId: 'thermo', version: '2.0.0', fromVersion: '1.0.0', attempts: 1 });
    expect(typeof sample.data.errorReason).toBe('string');
    expect(Number.isNaN(Date.parse(sample.at))).toBe(false);

    const list = await deliveries(hook.id);
    expect(list.items.every((d) => d.state === 'delivered' && d.lastStatus === 204)).toBe(true);
    expect(list.items.reduce((n, d) => n + d.eventCount, 0)).toBe(receiver.deliveries.filter((d) => d.path === '/rollout' && d.status < 300).reduce((n, d) => n + d.events.length, 0));
    expect((await deliveries(other.id)).total).toBe(0);
    expect(receiver.deliveries.filter((d) => d.path === '/other')).toEqual([]);

    // both worker processes delivered
    const metrics = await (await fetch(`${secondWorker!.baseUrl}/metrics`, { headers: t.auth })).text();
    const inSecond = Number(/otter_webhook_attempts_total\{result="delivered"\} (\d+)/.exec(metrics)?.[1] ?? 0);
    const inFirst = (await t.otter.metrics.webhookAttempts.get()).values.find((v) => v.labels.result === 'delivered')?.value ?? 0;
    console.log(`deliveries: ${list.total} (${inFirst} by the first worker, ${inSecond} by the second); largest batch ${receiver.largestBatch}`);
    expect(inFirst + inSecond).toBeGreaterThanOrEqual(list.total);
    await t.app.inject({ method: 'DELETE', url: `/api/webhooks/${other.id}`, headers: t.auth });
  }, 180_000);

  it(`the receiver answers 500 for ${FAIL_MS / 1000} s: deliveries are retried and all arrive afterwards, with their attempts shown`, async () => {
    const hook = await createHook({ url: receiver.url('/flaky', SECRET), secret: SECRET, events: ['record.final', 'task.completed'], productId: 'valve' });
    receiver.failWith = 500;
    const outageStarted = Date.now();
    const { ids, taskId, states } = await rollout('valve', { failRate: 0.01, silentRate: 0 });
    // canceled records are final too
    const extra = fleetDeviceIds('valve-idle', 5);
    await registerDevices(t.app, t.auth, 'valve', extra);
    const idleFirmware = await createFirmware(t.app, t.auth, 'valve', '3.0.0', 3);
    const idleTask = await createTask(t.app, t.auth, { firmwareId: idleFirmware });
    await t.app.inject({ method: 'POST', url: `/api/tasks/${idleTask}/release`, headers: t.auth, payload: { deviceIds: extra } });
    const cancel = await t.app.inject({ method: 'POST', url: `/api/tasks/${idleTask}/cancel`, headers: t.auth, payload: {} });
    expect(cancel.json().canceled).toBe(5);

    expect(ids.some((id) => receiver.finalsByRecord.has(`${taskId}/${id}`))).toBe(false);
    // the outbox is sealed and delivered in the background: under load the first attempt may come after the rollout ends
    await waitFor('a delivery answered 500 during the outage', () => receiver.refusedDeliveries > 0 || undefined, Math.max(1_000, FAIL_MS - (Date.now() - outageStarted) - 5_000));
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, FAIL_MS - (Date.now() - outageStarted))));
    receiver.failWith = undefined;
    const recovered = Date.now();

    await waitFor('every record.final after the outage', () => ids.every((id) => receiver.finalsByRecord.has(`${taskId}/${id}`)) || undefined, 120_000);
    await waitFor('the canceled records', () => extra.every((id) => receiver.finalsByRecord.has(`${idleTask}/${id}`)) || undefined, 30_000);
    console.log(`outage ${((recovered - outageStarted) / 1000).toFixed(1)} s: ${receiver.refusedDeliveries} deliveries answered 500; all ${DEVICES} record.final arrived ${((Date.now() - recovered) / 1000).toFixed(1)} s after it`);
    expectEveryFinal(taskId, ids, states);
    expect(receiver.outOfOrder).toBe(0);
    expect(receiver.badSignatures).toBe(0);
    expect(receiver.largestBatch).toBeLessThanOrEqual(1_000);
    const canceled = receiver.deliveries.filter((d) => d.status < 300).flatMap((d) => d.events).filter((e) => e.data.taskId === idleTask);
    expect(canceled.map((e) => e.data.state)).toEqual(Array(5).fill('canceled'));

    await waitFor('every delivery delivered', async () => {
      const list = await deliveries(hook.id);
      return list.items.every((d) => d.state === 'delivered') ? list : undefined;
    }, 30_000);
    const list = await deliveries(hook.id);
    // the first delivery of the rollout's task was tried through the whole outage
    const retried = list.items.filter((d) => d.attempts > 1);
    expect(retried.length).toBeGreaterThan(0);
    expect(Math.max(...retried.map((d) => d.attempts))).toBeGreaterThanOrEqual(4);
    expect(retried.every((d) => d.lastStatus === 204 && d.lastError === null)).toBe(true);
    const pending = await deliveries(hook.id, '&state=pending');
    expect(pending.total).toBe(0);
  }, FAIL_MS + 240_000);

  it('never follows a redirect, and gives a delivery up after 24 h of failures so the next one goes', async () => {
    const hook = await createHook({ url: receiver.url('/redirect', SECRET), secret: SECRET, events: ['device.registered'], productId: 'moved' });
    await registerDevices(t.app, t.auth, 'moved', ['moved-1', 'moved-2']);
    const first = await waitFor('a failed attempt', async () => (await deliveries(hook.id)).items.find((d) => d.attempts >= 1 && d.lastStatus !== null), 30_000);
    expect(first).toMatchObject({ state: 'pending', lastStatus: 302 });
    expect(first.lastError).toContain('redirect');
    expect(receiver.strayRequests).toBe(0);

    // a day later (its batch was made 25 h ago): the next failure ends it
    await sql`UPDATE webhook_deliveries SET created_at = now() - interval '25 hours', next_attempt_at = now() WHERE webhook_id = ${hook.id}`.execute(t.database.db);
    await waitFor('the delivery given up', async () => (await deliveries(hook.id)).items.find((d) => d.id === first.id && d.state === 'failed'), 30_000);
    // later events of the stream are delivered (tried) after it
    await registerDevices(t.app, t.auth, 'moved', ['moved-3']);
    const later = await waitFor('the next delivery tried', async () => (await deliveries(hook.id)).items.find((d) => d.id !== first.id && d.attempts >= 1 && d.lastStatus !== null), 30_000);
    expect(later.lastStatus).toBe(302);
    expect(receiver.strayRequests).toBe(0);
  });
});
