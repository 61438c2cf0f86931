// bull-board over the upgrade queue, mounted at /admin/queues behind the API key (HTTP Basic with
// the key as password works in a browser). Operators watch each device's job move: waiting to be
// sent → delayed while the device upgrades (with its progress) → completed or failed with the reason.
import type { FastifyInstance } from 'fastify';
import type { Queue } from 'bullmq';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import { OtterError } from '../core/errors.ts';
import { errorBody } from '../api/plugins/error-handler.ts';

export const BULL_BOARD_PATH = '/admin/queues';

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
    });
    await board.register(serverAdapter.registerPlugin(), { prefix: BULL_BOARD_PATH });
  });
}
