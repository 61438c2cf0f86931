// bull-board over the upgrade queue, mounted at /admin/queues behind the API key (HTTP Basic with
// the key as password works in a browser). Operators watch each device's job move: waiting to be
// sent → delayed while the device upgrades (with its progress) → completed or failed with the reason.
import type { FastifyInstance } from 'fastify';
import type { Queue } from 'bullmq';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';

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
    board.addHook('onRequest', board.authenticate);
    await board.register(serverAdapter.registerPlugin(), { prefix: BULL_BOARD_PATH });
  });
}
