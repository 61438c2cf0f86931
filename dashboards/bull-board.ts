// bull-board over the upgrade queue, mounted at /admin/queues behind the API key (HTTP Basic with
// the key as password works in a browser). Operators watch each device's job move: waiting to be
// sent → delayed while the device upgrades (with its progress) → completed or failed with the reason.
// Only an admin may use its write actions (retry, clean, pause, …); for operators and viewers every
// write is refused 403 and the board shows itself read-only (docs/operations.md#roles).
import type { FastifyInstance } from 'fastify';
import type { Queue } from 'bullmq';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import { OtterError, forbidden } from '../core/errors.ts';
import { errorBody } from '../core/errors.ts';

export const BULL_BOARD_PATH = '/admin/queues';

const READ_METHODS = new Set(['GET', 'HEAD']);
const QUEUES_API = `${BULL_BOARD_PATH}/api/queues`;

/**
 * The board's queue list as a read-only user gets it: bull-board's UI hides every action of a
 * queue in read-only mode, so the one board serves each role its own view.
 */
export function asReadOnly(payload: string): string {
  const body = JSON.parse(payload) as { queues?: Array<Record<string, unknown>> };
  for (const queue of body.queues ?? []) {
    queue.readOnlyMode = true;
    queue.allowRetries = false;
    queue.allowCompletedRetries = false;
  }
  return JSON.stringify(body);
}

export async function mountBullBoard(app: FastifyInstance, queues: readonly Queue[]): Promise<void> {
  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(BULL_BOARD_PATH);
  createBullBoard({
    queues: queues.map((queue) => new BullMQAdapter(queue, { readOnlyMode: false })),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'Otter upgrades' } },
  });
  await app.register(async (board) => {
    board.addHook('onRequest', async (request, reply) => {
      try {
        await board.authenticate(request, reply);
      } catch (error) {
        // bull-board's own error handler would answer in its shape; a refusal answers in the API's
        if (!(error instanceof OtterError)) throw error;
        if (error.statusCode === 401) reply.header('www-authenticate', 'Basic realm="otter", charset="UTF-8"');
        return reply.code(error.statusCode).send(errorBody(error.statusCode, error.code, error.message));
      }
      if (request.role !== 'admin' && !READ_METHODS.has(request.method)) {
        const refusal = forbidden('forbidden', "bull-board's write actions need the admin role");
        return reply.code(403).send(errorBody(403, refusal.code, refusal.message));
      }
    });
    board.addHook('onSend', async (request, reply, payload) => {
      const path = request.url.split('?')[0];
      if (request.role === 'admin' || path !== QUEUES_API || reply.statusCode !== 200 || typeof payload !== 'string') return payload;
      return asReadOnly(payload);
    });
    await board.register(serverAdapter.registerPlugin(), { prefix: BULL_BOARD_PATH });
  });
}
