// The OpenAPI 3 document at /docs/json and Swagger UI at /docs, built from the routes' schemas.
import fp from 'fastify-plugin';
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';

export default fp(async function swagger(app) {
  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Otter',
        description: 'Firmware upgrade (OTA) orchestration: firmware catalogue, upgrade tasks, per-device upgrade records.',
        version: '0.1.0',
      },
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'an API key from API_KEYS' },
          basic: { type: 'http', scheme: 'basic', description: 'any user name, an API key as password' },
        },
      },
      security: [{ bearer: [] }, { basic: [] }],
      tags: [
        { name: 'firmware', description: 'the firmware catalogue and its files' },
        { name: 'devices', description: 'devices and their firmware' },
        { name: 'tasks', description: 'upgrade tasks and their records' },
        { name: 'device-messages', description: 'device messages from platforms that terminate device protocols' },
        { name: 'health', description: 'liveness and readiness' },
      ],
    },
  });
  await app.register(fastifySwaggerUi, { routePrefix: '/docs' });
}, { name: 'otter-swagger' });
