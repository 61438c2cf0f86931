// Liveness and readiness (docs/operations.md#health-and-readiness). Open without a key, for orchestrators.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';

const HealthReply = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('unavailable')]),
  checks: Type.Optional(Type.Record(Type.String(), Type.String())),
  message: Type.Optional(Type.String()),
});

const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/health/live', {
    schema: { tags: ['health'], security: [], response: { 200: HealthReply } },
  }, async () => ({ status: 'ok' as const }));

  app.get('/health/ready', {
    schema: { tags: ['health'], security: [], response: { 200: HealthReply, 503: HealthReply } },
  }, async (_request, reply) => {
    const checks = await app.readiness.check();
    const down = Object.entries(checks).filter(([, state]) => state !== 'ok');
    if (down.length === 0) return { status: 'ok' as const, checks };
    reply.code(503);
    return {
      status: 'unavailable' as const,
      checks,
      message: `not ready: ${down.map(([name, state]) => `${name} ${state}`).join('; ')}`,
    };
  });
};

export default healthRoutes;
