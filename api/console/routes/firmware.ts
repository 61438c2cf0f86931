// Firmware pages (docs/operations.md#the-console): list, New, View, Edit, Delete, and New task. Every
// change is the REST call a platform would make (POST/PATCH/DELETE /api/firmware, PUT …/file, POST /api/tasks).
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Firmware } from '../../schemas/firmware.ts';
import type { TaskJson } from '../../schemas/tasks.ts';
import { query, type ApiAnswer } from '../api-client.ts';
import type { LabelKey } from '../labels.ts';
import { apiOf, sendPage, viewOf } from '../plugin.ts';
import { deleteFirmwarePage, firmwareFormPage, firmwareListPage, firmwarePage, type FirmwareFormValues } from '../views/firmware.ts';
import { taskFormPage, type TaskFormValues } from '../views/task.ts';
import { formFields, list, numeric, readMultipart, text, type Fields, type UploadedFile } from './form.ts';

const PAGE_SIZE = 20;
const NOTICES = new Set(['deleted', 'saved']);

interface Page<T> {
  items: T[];
  total: number;
  page: number;
  pageSize: number;
}

type Params = { id: string };

export function noticeOf(request: FastifyRequest, allowed: ReadonlySet<string>): string | undefined {
  const notice = (request.query as Record<string, unknown>).notice;
  if (typeof notice !== 'string' || !allowed.has(notice)) return undefined;
  return viewOf(request).t[`notice_${notice}` as LabelKey];
}

function formValues(fields: Fields): FirmwareFormValues {
  return {
    productId: text(fields, 'productId'),
    name: text(fields, 'name'),
    version: text(fields, 'version'),
    versionOrder: text(fields, 'versionOrder'),
    url: text(fields, 'url'),
    signMethod: text(fields, 'signMethod') || 'sha256',
    description: text(fields, 'description'),
  };
}

function signMethodOf(fields: Fields): string {
  return text(fields, 'signMethod') === 'md5' ? 'md5' : 'sha256';
}

export default async function firmwareRoutes(app: FastifyInstance): Promise<void> {
  app.get('/', async (request, reply) => {
    const q = request.query as Record<string, string | undefined>;
    const page = Math.max(1, Math.floor(Number(q.page) || 1));
    const productId = (q.productId ?? '').trim();
    const search = (q.q ?? '').trim();
    const data = await apiOf(request).get<Page<Firmware>>(`/api/firmware${query({ productId, q: search, page, pageSize: PAGE_SIZE })}`);
    return sendPage(reply, firmwareListPage(viewOf(request), { ...data, productId, q: search }, noticeOf(request, NOTICES)));
  });

  app.get('/firmware/new', async (request, reply) => sendPage(reply, firmwareFormPage(viewOf(request), { kind: 'new' }, {})));

  app.post('/firmware', async (request, reply) => {
    const api = apiOf(request);
    const view = viewOf(request);
    return readMultipart(request, async (fields, file) => {
      if (!app.consoleSessions.checkCsrf(request.consoleSession!, text(fields, '_csrf'))) return refuseStale(request, reply);
      const values = formValues(fields);
      const body: Record<string, unknown> = {
        productId: values.productId,
        name: values.name,
        version: values.version,
        versionOrder: numeric(fields, 'versionOrder') ?? '',
        ...(values.description ? { description: values.description } : {}),
        // an uploaded file brings its own URL and sign; a URL alone is described by the form
        ...(!file && values.url ? { url: values.url, signMethod: signMethodOf(fields) } : {}),
      };
      const created = await api.call<Firmware>('POST', '/api/firmware', body);
      if (!created.ok) return sendPage(reply, firmwareFormPage(view, { kind: 'new' }, values, created.message), created.status);
      const uploaded = await uploadIfChosen(request, created.body.id, file, fields);
      if (uploaded && !uploaded.ok) {
        return sendPage(reply, firmwareFormPage(view, { kind: 'edit', id: created.body.id, hasFile: false }, { ...values, revision: created.body.revision }, uploaded.message), uploaded.status);
      }
      return reply.code(303).redirect(`/console/firmware/${created.body.id}`);
    });
  });

  app.get<{ Params: Params }>('/firmware/:id', async (request, reply) => {
    const api = apiOf(request);
    const id = encodeURIComponent(request.params.id);
    const fw = await api.get<Firmware>(`/api/firmware/${id}`);
    const tasks = await api.get<Page<TaskJson>>(`/api/tasks${query({ firmwareId: fw.id, pageSize: 100 })}`);
    return sendPage(reply, firmwarePage(viewOf(request), fw, tasks.items, noticeOf(request, NOTICES)));
  });

  app.get<{ Params: Params }>('/firmware/:id/edit', async (request, reply) => {
    const fw = await apiOf(request).get<Firmware>(`/api/firmware/${encodeURIComponent(request.params.id)}`);
    return sendPage(reply, firmwareFormPage(viewOf(request), { kind: 'edit', id: fw.id, hasFile: fw.hasFile }, fw));
  });

  app.post<{ Params: Params }>('/firmware/:id', async (request, reply) => {
    const api = apiOf(request);
    const view = viewOf(request);
    const id = encodeURIComponent(request.params.id);
    return readMultipart(request, async (fields, file) => {
      if (!app.consoleSessions.checkCsrf(request.consoleSession!, text(fields, '_csrf'))) return refuseStale(request, reply);
      const current = await api.get<Firmware>(`/api/firmware/${id}`);
      const values = formValues(fields);
      const mode = { kind: 'edit' as const, id: current.id, hasFile: current.hasFile };
      const changes = changedFields(current, values, fields, file !== null);
      if (Object.keys(changes).length > 0) {
        // If-Match: an edit based on a page older than the firmware is refused, not applied over it
        const revision = text(fields, 'revision');
        const updated = await api.call<Firmware>('PATCH', `/api/firmware/${id}`, changes, revision ? { 'if-match': `"${revision}"` } : {});
        if (!updated.ok) return sendPage(reply, firmwareFormPage(view, mode, { ...values, revision: current.revision }, updated.message), updated.status);
      }
      const uploaded = await uploadIfChosen(request, current.id, file, fields);
      if (uploaded && !uploaded.ok) return sendPage(reply, firmwareFormPage(view, mode, { ...values, revision: current.revision }, uploaded.message), uploaded.status);
      return reply.code(303).redirect(`/console/firmware/${current.id}?notice=saved`);
    });
  });

  app.get<{ Params: Params }>('/firmware/:id/delete', async (request, reply) => {
    const fw = await apiOf(request).get<Firmware>(`/api/firmware/${encodeURIComponent(request.params.id)}`);
    return sendPage(reply, deleteFirmwarePage(viewOf(request), fw));
  });

  app.post<{ Params: Params }>('/firmware/:id/delete', async (request, reply) => {
    const api = apiOf(request);
    const id = encodeURIComponent(request.params.id);
    const revision = text(formFields(request), 'revision');
    const deleted = await api.call('DELETE', `/api/firmware/${id}`, undefined, revision ? { 'if-match': `"${revision}"` } : {});
    if (deleted.ok) return reply.code(303).redirect('/console?notice=deleted');
    // a firmware in use (409) or changed meanwhile (412): say so on the confirmation page
    const fw = await api.get<Firmware>(`/api/firmware/${id}`);
    const view = viewOf(request);
    const message = deleted.code === 'firmware_in_use' ? view.t.error_firmware_in_use : deleted.message;
    return sendPage(reply, deleteFirmwarePage(view, fw, message), deleted.status);
  });

  app.get<{ Params: Params }>('/firmware/:id/tasks/new', async (request, reply) => {
    const fw = await apiOf(request).get<Firmware>(`/api/firmware/${encodeURIComponent(request.params.id)}`);
    return sendPage(reply, taskFormPage(viewOf(request), fw, { idempotencyKey: randomUUID() }));
  });

  app.post<{ Params: Params }>('/firmware/:id/tasks', async (request, reply) => {
    const api = apiOf(request);
    const fields = formFields(request);
    const fw = await api.get<Firmware>(`/api/firmware/${encodeURIComponent(request.params.id)}`);
    const idempotencyKey = /^[\x21-\x7e]{1,255}$/.test(text(fields, 'idempotencyKey')) ? text(fields, 'idempotencyKey') : randomUUID();
    const created = await api.call<TaskJson>('POST', '/api/tasks', taskBody(fw.id, fields), { 'idempotency-key': idempotencyKey });
    if (!created.ok) {
      const values: TaskFormValues = Object.fromEntries(Object.keys(fields).map((name) => [name, name === 'retryOn' ? list(fields, name) : text(fields, name)]));
      return sendPage(reply, taskFormPage(viewOf(request), fw, { ...values, retryOn: list(fields, 'retryOn'), idempotencyKey: randomUUID() }, created.message), created.status);
    }
    return reply.code(303).redirect(`/console/tasks/${created.body.id}`);
  });

  async function uploadIfChosen(request: FastifyRequest, firmwareId: string, file: UploadedFile | null, fields: Fields): Promise<ApiAnswer<Firmware> | null> {
    if (!file) return null;
    return apiOf(request).upload<Firmware>(firmwareId, file.stream, signMethodOf(fields));
  }

  function refuseStale(request: FastifyRequest, reply: FastifyReply) {
    return sendPage(reply, firmwareFormPage(viewOf(request), { kind: 'new' }, {}, 'the form is stale or not from this console: reload the page'), 403);
  }
}

/** The PATCH body of an edit: only what differs from the firmware as it is. */
function changedFields(current: Firmware, values: FirmwareFormValues, fields: Fields, newFile: boolean): Record<string, unknown> {
  const changes: Record<string, unknown> = {};
  if (values.productId !== current.productId) changes.productId = values.productId;
  if (values.name !== current.name) changes.name = values.name;
  if (values.version !== current.version) changes.version = values.version;
  const order = numeric(fields, 'versionOrder');
  if (order !== current.versionOrder) changes.versionOrder = order ?? '';
  const description = values.description || null;
  if (description !== current.description) changes.description = description;
  // a new file brings its own URL and sign
  if (!newFile) {
    const url = values.url || null;
    if (url !== current.url) changes.url = url;
    const signMethod = signMethodOf(fields);
    if (url !== null && signMethod !== current.signMethod) changes.signMethod = signMethod;
  }
  return changes;
}

/** POST /api/tasks from the New task form; what is left empty takes the API's default. */
function taskBody(firmwareId: string, fields: Fields): Record<string, unknown> {
  const rollout = { maxPerMinute: numeric(fields, 'maxPerMinute'), maxInFlight: numeric(fields, 'maxInFlight') };
  const failureRate = numeric(fields, 'abortFailureRate');
  const startAt = text(fields, 'startAt');
  const responseTimeout = numeric(fields, 'responseTimeoutSeconds');
  return {
    firmwareId,
    name: text(fields, 'name'),
    mode: text(fields, 'mode') === 'pull' ? 'pull' : 'push',
    ...(numeric(fields, 'timeoutSeconds') !== undefined ? { timeoutSeconds: numeric(fields, 'timeoutSeconds') } : {}),
    ...(responseTimeout !== undefined ? { responseTimeoutSeconds: responseTimeout } : {}),
    retry: {
      maxAttempts: numeric(fields, 'maxAttempts') ?? 3,
      backoffSeconds: numeric(fields, 'backoffSeconds') ?? 30,
      on: list(fields, 'retryOn'),
    },
    rollout: Object.fromEntries(Object.entries(rollout).filter(([, value]) => value !== undefined)),
    ...(failureRate !== undefined
      ? { abort: { failureRate: typeof failureRate === 'number' ? failureRate / 100 : failureRate, minFinished: numeric(fields, 'abortMinFinished') ?? 10 } }
      : {}),
    // the form's time is UTC (its label says so)
    ...(startAt ? { startAt: /^\d{4}-\d\d-\d\dT\d\d:\d\d$/.test(startAt) ? `${startAt}:00Z` : startAt } : {}),
  };
}
