// API-key authentication (docs/rest-api.md#authentication): `Authorization: Bearer <key>`, or HTTP Basic with the key
// as password so a browser can open bull-board. Routes opt in with `onRequest: app.authenticate`.
// A client that keeps presenting wrong keys is refused with 429 for a while; a valid key always passes.
import type { FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import fastifyAuth from '@fastify/auth';
import fastifyBearerAuth from '@fastify/bearer-auth';
import fastifyBasicAuth from '@fastify/basic-auth';
import { apiKeyFingerprint, auditKeyFingerprint, createKeyMatcher, roleOfKey, type ApiRole } from '../../core/api-keys.ts';
import { forbidden, tooManyFailedAttempts, unauthorized } from '../../core/errors.ts';
import { DEFAULT_FAILED_AUTH_LIMITS, FailedAuthLimiter, clientAddressKey, type FailedAuthLimits } from './failed-auth-limiter.ts';

declare module 'fastify' {
  interface FastifyInstance {
    authenticate: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
  }
  interface FastifyRequest {
    /** A hash naming the API key the request was authenticated with (never the key); null before. */
    apiKeyHash: string | null;
    /** The key's short fingerprint for the audit log (never the key); null before authentication. */
    keyFingerprint: string | null;
    /** The role of the key the request was authenticated with; null before authentication. */
    role: ApiRole | null;
  }
}

export interface AuthOptions {
  apiKeys: readonly string[];
  /** Failed attempts per client address before it is refused with 429 (defaults: 20 in 60 s). */
  failedAttempts?: FailedAuthLimits;
}

/** A preHandler for routes only some roles may use: anyone else authenticated gets 403 `forbidden`. */
export function requireRole(...roles: ApiRole[]) {
  return async function checkRole(request: FastifyRequest): Promise<void> {
    if (request.role === null || !roles.includes(request.role)) {
      throw forbidden('forbidden', `this needs the ${roles.join(' or ')} role`);
    }
  };
}

export default fp<AuthOptions>(async function auth(app, options) {
  const matches = createKeyMatcher(options.apiKeys);
  const limiter = new FailedAuthLimiter(options.failedAttempts ?? DEFAULT_FAILED_AUTH_LIMITS);
  app.decorateRequest('apiKeyHash', null);
  app.decorateRequest('keyFingerprint', null);
  app.decorateRequest('role', null);

  function accept(key: string, request: FastifyRequest): boolean {
    if (!matches(key)) return false;
    request.apiKeyHash = apiKeyFingerprint(key);
    request.keyFingerprint = auditKeyFingerprint(key);
    request.role = roleOfKey(key);
    return true;
  }

  await app.register(fastifyBearerAuth, {
    keys: [],
    auth: (key: string, request: FastifyRequest) => accept(key, request),
    addHook: false,
    verifyErrorLogLevel: 'debug',
  });
  await app.register(fastifyBasicAuth, {
    authenticate: { realm: 'otter' },
    async validate(_username: string, password: string, request: FastifyRequest) {
      if (!accept(password, request)) throw unauthorized();
    },
  });
  await app.register(fastifyAuth);

  const either = app.auth([app.verifyBearerAuth!, app.basicAuth]);
  app.decorate('authenticate', async function authenticate(request: FastifyRequest, reply: FastifyReply) {
    const accepted = await new Promise<boolean>((resolve) => {
      either.call(app, request, reply, (error?: Error) => resolve(!error));
    });
    if (accepted) return;
    // the socket's address, not request.ip: behind trustProxy, X-Forwarded-For is the client's to write
    const client = clientAddressKey(request.socket.remoteAddress);
    const retryAfter = limiter.retryAfterSeconds(client);
    if (retryAfter > 0) {
      reply.removeHeader('www-authenticate');
      reply.header('retry-after', String(retryAfter));
      throw tooManyFailedAttempts(retryAfter);
    }
    // a request that presents no credentials at all is not a guess
    if (request.headers.authorization !== undefined) limiter.recordFailure(client);
    throw unauthorized();
  });
}, { name: 'otter-auth' });
