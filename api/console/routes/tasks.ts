// A task's page (docs/operations.md#the-console): Release (all devices, or chosen ones by search and
// pick or by a pasted list), the live board, and Push upgrade, Pause, Resume, Cancel, Retry failed.
// Board polls answer only the fragments whose fingerprint changed, or 204 when nothing did.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { boardColumns } from '../../../db/queries/console-board.ts';
import { searchDevices } from '../../../db/queries/console-devices.ts';
import { deviceToJson } from '../../schemas/devices.ts';
import type { Firmware } from '../../schemas/firmware.ts';
import { recordToJson } from '../../schemas/records.ts';
import type { TaskJson } from '../../schemas/tasks.ts';
import { html } from '../html.ts';
import { apiOf, sendPage, viewOf } from '../plugin.ts';
import { BOARD_COLUMNS, BOARD_PAGE_SIZE, boardFragments, taskPage, type BoardColumn, type BoardData, type ReleaseView } from '../views/task.ts';
import { noticeOf } from './firmware.ts';
import { formFields, list, text } from './form.ts';

type Params = { id: string };

const NOTICES = new Set(['pushed', 'paused', 'resumed', 'canceled', 'retried', 'approved']);
const SKIP_REASONS = ['already_on_version', 'busy', 'version_filtered', 'unknown_device', 'already_in_task'] as const;
const SEARCH_LIMIT = 50;

function pagesOf(request: FastifyRequest): Record<BoardColumn, number> {
  const q = request.query as Record<string, unknown>;
  return Object.fromEntries(BOARD_COLUMNS.map((column) => {
    const page = Math.floor(Number(q[`p_${column}`]) || 1);
    return [column, Math.min(Math.max(1, page), 1_000_000)];
  })) as Record<BoardColumn, number>;
}

/** "Released to 5 devices. Skipped: busy 2" from the numbers a release redirected with. */
function releaseNotice(request: FastifyRequest): string | undefined {
  const q = request.query as Record<string, unknown>;
  if (typeof q.released !== 'string' || !/^\d{1,9}$/.test(q.released)) return undefined;
  const { t } = viewOf(request);
  const skips = SKIP_REASONS
    .filter((reason) => typeof q[`sk_${reason}`] === 'string' && /^\d{1,9}$/.test(q[`sk_${reason}`] as string))
    .map((reason) => `${t[`skip_${reason}`]} ${q[`sk_${reason}`] as string}`);
  return `${t.released} ${q.released} ${t.devicesWord}.${skips.length > 0 ? ` ${t.skipped}: ${skips.join(', ')}` : ''}`;
}

export default async function taskRoutes(app: FastifyInstance): Promise<void> {
  async function board(request: FastifyRequest, id: string): Promise<BoardData> {
    const task = await apiOf(request).get<TaskJson>(`/api/tasks/${encodeURIComponent(id)}`);
    const pages = pagesOf(request);
    const rows = await boardColumns(app.db, task.id, pages, BOARD_PAGE_SIZE);
    const columns = Object.fromEntries(BOARD_COLUMNS.map((column) => [column, rows[column].map(recordToJson)])) as BoardData['columns'];
    return { task, columns, pages };
  }

  async function renderTask(request: FastifyRequest<{ Params: Params }>, reply: FastifyReply, outcome: { status?: number; error?: string } = {}) {
    const data = await board(request, request.params.id);
    const q = String((request.query as Record<string, unknown>).q ?? '').trim().slice(0, 64);
    const release: ReleaseView = { q, found: [] };
    if (q && viewOf(request).canAct) {
      const found = await searchDevices(app.db, { productId: data.task.productId, q }, { limit: SEARCH_LIMIT, offset: 0 });
      release.found = found.rows.map(deviceToJson);
    }
    const fw = await apiOf(request).call<Firmware>('GET', `/api/firmware/${data.task.firmwareId}`);
    const firmware = fw.ok ? fw.body : { id: data.task.firmwareId, name: data.task.firmwareVersion };
    const notice = releaseNotice(request) ?? noticeOf(request, NOTICES);
    return sendPage(reply, taskPage(viewOf(request), data, firmware, release, notice, outcome.error), outcome.status ?? 200);
  }

  app.get<{ Params: Params }>('/tasks/:id', async (request, reply) => renderTask(request, reply));

  // the live board's one endpoint: the fragments that changed since the fingerprints the page holds
  app.get<{ Params: Params }>('/tasks/:id/board', async (request, reply) => {
    const data = await board(request, request.params.id);
    const q = request.query as Record<string, unknown>;
    const changed = boardFragments(viewOf(request), data, true).filter((fragment) => q[`h_${fragment.id}`] !== fragment.hash);
    if (changed.length === 0) return reply.code(204).send();
    return reply.type('text/html; charset=utf-8').send(html`${changed.map((fragment) => fragment.html)}`.text);
  });

  app.post<{ Params: Params }>('/tasks/:id/release', async (request, reply) => {
    const fields = formFields(request);
    const fromVersions = text(fields, 'fromVersions').split(',').map((v) => v.trim()).filter(Boolean);
    const selection: Record<string, unknown> = { ...(fromVersions.length > 0 ? { fromVersions } : {}) };
    if (text(fields, 'target') === 'chosen') {
      const pasted = text(fields, 'pastedIds').split(/[\s,;]+/).filter(Boolean);
      const ids = [...new Set([...list(fields, 'deviceIds'), ...pasted])];
      if (ids.length === 0) return renderTask(request, reply, { status: 400, error: viewOf(request).t.noDevicesChosen });
      selection.deviceIds = ids;
    } else {
      selection.allDevices = true;
    }
    const id = encodeURIComponent(request.params.id);
    const released = await apiOf(request).call<{ added: number; skipped: Record<string, number> }>('POST', `/api/tasks/${id}/release`, selection);
    if (!released.ok) return renderTask(request, reply, { status: released.status, error: released.message });
    const skips = Object.entries(released.body.skipped).filter(([, count]) => count > 0).map(([reason, count]) => `&sk_${reason}=${count}`).join('');
    return reply.code(303).redirect(`/console/tasks/${id}?released=${released.body.added}${skips}`);
  });

  app.post<{ Params: Params & { n: string } }>('/tasks/:id/waves/:n/approve', async (request, reply) => {
    const id = encodeURIComponent(request.params.id);
    const answer = await apiOf(request).call('POST', `/api/tasks/${id}/waves/${encodeURIComponent(request.params.n)}/approve`, {});
    if (!answer.ok) return renderTask(request, reply, { status: answer.status, error: answer.message });
    return reply.code(303).redirect(`/console/tasks/${id}?notice=approved`);
  });

  const actions: Array<[string, string]> = [['push', 'pushed'], ['pause', 'paused'], ['resume', 'resumed'], ['cancel', 'canceled'], ['retry', 'retried']];
  for (const [action, notice] of actions) {
    app.post<{ Params: Params }>(`/tasks/:id/${action}`, async (request, reply) => {
      const id = encodeURIComponent(request.params.id);
      const answer = await apiOf(request).call('POST', `/api/tasks/${id}/${action}`, {});
      if (!answer.ok) return renderTask(request, reply, { status: answer.status, error: answer.message });
      return reply.code(303).redirect(`/console/tasks/${id}?notice=${notice}`);
    });
  }
}

