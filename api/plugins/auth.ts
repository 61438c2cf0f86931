// API-key authentication (CONTRACT §3): `Authorization: Bearer <key>`, or HTTP Basic with the key
// as password so a browser can open bull-board. Routes opt in with `onRequest: app.authenticate`.
import type { FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import fastifyAuth from '@fastify/auth';
import fastifyBearerAuth from '@fastify/bearer-auth';
import fastifyBasicAuth from '@fastify/basic-auth';
import { createKeyMatcher } from '../../core/api-keys.ts';
import { unauthorized } from '../../core/errors.ts';

declare module 'fastify' {
  interface FastifyInstance {
    authenticate: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
  }
}

export interface AuthOptions {
  apiKeys: readonly string[];
}

export default fp<AuthOptions>(async function auth(app, options) {
  const matches = createKeyMatcher(options.apiKeys);
  await app.register(fastifyBearerAuth, {
    keys: [],
    auth: (key: string) => matches(key),
    addHook: false,
    verifyErrorLogLevel: 'debug',
  });
  await app.register(fastifyBasicAuth, {
    authenticate: { realm: 'otter' },
    async validate(_username: string, password: string) {
      if (!matches(password)) throw unauthorized();
    },
  });
  await app.register(fastifyAuth);

  const either = app.auth([app.verifyBearerAuth!, app.basicAuth]);
  app.decorate('authenticate', async function authenticate(request: FastifyRequest, reply: FastifyReply) {
    await new Promise<void>((resolve, reject) => {
      either.call(app, request, reply, (error?: Error) => (error ? reject(unauthorized()) : resolve()));
    });
  });
}, { name: 'otter-auth' });

