// API-key authentication (docs/rest-api.md#authentication): `Authorization: Bearer <key>`, or HTTP Basic with the key
// as password so a browser can open bull-board. Routes opt in with `onRequest: app.authenticate`.
// A client that keeps presenting wrong keys is refused with 429 for a while; a valid key always passes.
// Roles (docs/operations.md#roles) are applied here, in one place: a viewer's key is refused 403
// `forbidden` on every method but GET and HEAD, whatever the route.
import type { FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import fastifyAuth from '@fastify/auth';
import fastifyBearerAuth from '@fastify/bearer-auth';
import fastifyBasicAuth from '@fastify/basic-auth';
import { createKeyRing, type ApiKeyEntry, type ApiRole, type KeyIdentity, type KeyRing } from '../../core/api-keys.ts';
import { forbidden, tooManyFailedAttempts, unauthorized } from '../../core/errors.ts';
import { DEFAULT_FAILED_AUTH_LIMITS, FailedAuthLimiter, clientAddressKey, type FailedAuthLimits } from './failed-auth-limiter.ts';

declare module 'fastify' {
  interface FastifyInstance {
    authenticate: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
    /** The configured keys, looked up by key or by hash (console sessions). */
    keyRing: KeyRing;
    /**
     * Checks a key typed into a form (the console's sign-in) as `authenticate` checks a header:
     * the same failed-attempt limit (429). Answers the key's identity, or throws 401/429.
     */
    verifyPresentedKey: (request: FastifyRequest, reply: FastifyReply, key: string) => KeyIdentity;
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
  /** The keys; a plain string is an admin's key. */
  apiKeys: readonly (string | ApiKeyEntry)[];
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

/** Methods a viewer may use: reads. */
const READ_METHODS = new Set(['GET', 'HEAD']);

/** Marks the request as made with this key; a viewer is refused anything but a read. */
export function actAs(request: FastifyRequest, identity: KeyIdentity): void {
  request.apiKeyHash = identity.hash;
  request.keyFingerprint = identity.auditFingerprint;
  request.role = identity.role;
}

/** The one check of the viewer role (docs/operations.md#roles), for every authenticated route. */
export function refuseViewerWrites(request: FastifyRequest): void {
  if (request.role === 'viewer' && !READ_METHODS.has(request.method)) {
    throw forbidden('forbidden', 'this key has the viewer role: it may only read');
  }
}

export default fp<AuthOptions>(async function auth(app, options) {
  const ring = createKeyRing(options.apiKeys.map((entry) => (typeof entry === 'string' ? { key: entry, role: 'admin' as const } : entry)));
  const limiter = new FailedAuthLimiter(options.failedAttempts ?? DEFAULT_FAILED_AUTH_LIMITS);
  app.decorateRequest('apiKeyHash', null);
  app.decorateRequest('keyFingerprint', null);
  app.decorateRequest('role', null);
  app.decorate('keyRing', ring);

  function accept(key: string, request: FastifyRequest): boolean {
    const identity = ring.match(key);
    if (!identity) return false;
    actAs(request, identity);
    return true;
  }

  /** After a refused key: 429 while the client is over its limit, else 401 (and the failure counted). */
  function refuse(request: FastifyRequest, reply: FastifyReply, presented: boolean): never {
    // the socket's address, not request.ip: behind trustProxy, X-Forwarded-For is the client's to write
    const client = clientAddressKey(request.socket.remoteAddress);
    const retryAfter = limiter.retryAfterSeconds(client);
    if (retryAfter > 0) {
      reply.removeHeader('www-authenticate');
      reply.header('retry-after', String(retryAfter));
      throw tooManyFailedAttempts(retryAfter);
    }
    // a request that presents no credentials at all is not a guess
    if (presented) limiter.recordFailure(client);
    throw unauthorized();
  }

  app.decorate('verifyPresentedKey', function verifyPresentedKey(request: FastifyRequest, reply: FastifyReply, key: string): KeyIdentity {
    const identity = key.length > 0 ? ring.match(key) : null;
    if (identity) return identity;
    return refuse(request, reply, key.length > 0);
  });

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
    if (accepted) {
      refuseViewerWrites(request);
      return;
    }
    refuse(request, reply, request.headers.authorization !== undefined);
  });
}, { name: 'otter-auth' });
