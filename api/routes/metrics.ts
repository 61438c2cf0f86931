// GET /metrics: Prometheus text of this process (docs/operations.md#metrics), behind the API key.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';

const metricsRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/metrics', {
    onRequest: app.authenticate,
    schema: {
      tags: ['health'],
      summary: 'Prometheus metrics',
      response: { 200: Type.String({ description: 'Prometheus text exposition format' }) },
    },
  }, async (_request, reply) => {
    reply.type(app.metrics.registry.contentType);
    return app.metrics.registry.metrics();
  });
};

export default metricsRoutes;
