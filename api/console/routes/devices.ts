// Devices (docs/operations.md#the-console): the list with search, a device with its version and
// upgrade history, Read firmware (POST /api/devices/{id}/firmware/read), and one record's timeline.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { searchDevices } from '../../../db/queries/console-devices.ts';
import { deviceToJson } from '../../schemas/devices.ts';
import type { RecordWithEventsJson, UpgradeRecordJson } from '../../schemas/records.ts';
import { query } from '../api-client.ts';
import { apiOf, sendPage, viewOf } from '../plugin.ts';
import { deviceListPage, devicePage, recordPage, type DevicePageData } from '../views/devices.ts';

type Params = { id: string };
const PAGE_SIZE = 20;

function pageOf(request: FastifyRequest): number {
  return Math.min(Math.max(1, Math.floor(Number((request.query as Record<string, unknown>).page) || 1)), 100_000);
}

export default async function deviceRoutes(app: FastifyInstance): Promise<void> {
  app.get('/devices', async (request, reply) => {
    const q = request.query as Record<string, string | undefined>;
    const productId = (q.productId ?? '').trim().slice(0, 64);
    const search = (q.q ?? '').trim().slice(0, 64);
    const page = pageOf(request);
    const { rows, more } = await searchDevices(app.db, { productId, q: search }, { limit: PAGE_SIZE, offset: (page - 1) * PAGE_SIZE });
    return sendPage(reply, deviceListPage(viewOf(request), { items: rows.map(deviceToJson), page, more, productId, q: search }));
  });

  async function renderDevice(request: FastifyRequest<{ Params: Params }>, reply: FastifyReply, extra: Pick<DevicePageData, 'read' | 'readError'> = {}, status = 200) {
    const api = apiOf(request);
    const id = encodeURIComponent(request.params.id);
    const page = pageOf(request);
    const device = await api.get<DevicePageData['device']>(`/api/devices/${id}`);
    const history = await api.get<{ items: UpgradeRecordJson[]; total: number }>(`/api/devices/${id}/records${query({ page, pageSize: PAGE_SIZE })}`);
    return sendPage(reply, devicePage(viewOf(request), { device, history: history.items, historyPage: page, historyMore: page * PAGE_SIZE < history.total, ...extra }), status);
  }

  app.get<{ Params: Params }>('/devices/:id', async (request, reply) => renderDevice(request, reply));

  app.post<{ Params: Params }>('/devices/:id/read', async (request, reply) => {
    const id = encodeURIComponent(request.params.id);
    const answer = await apiOf(request).call<{ version: string; properties: Record<string, unknown> | null }>('POST', `/api/devices/${id}/firmware/read`, { timeoutMs: 5_000 });
    if (answer.ok) return renderDevice(request, reply, { read: answer.body });
    return renderDevice(request, reply, { readError: answer.message }, answer.status);
  });

  app.get<{ Params: { id: string } }>('/records/:id', async (request, reply) => {
    const record = await apiOf(request).get<RecordWithEventsJson>(`/api/records/${encodeURIComponent(request.params.id)}`);
    return sendPage(reply, recordPage(viewOf(request), record));
  });
}

