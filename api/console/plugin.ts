// The console (docs/operations.md#the-console): server-rendered pages under /console for those who
// would rather click than call REST. Sign-in with an API key gives a signed session cookie; every page
// acts through the REST API in process (api-client.ts); htmx (served here, no build step) keeps the
// task board live. Security: a strict Content-Security-Policy (no inline script or style), escaped
// output (html.ts), CSRF tokens plus an Origin check on every POST, HttpOnly SameSite=Strict cookies.
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fastifyCookie from '@fastify/cookie';
import fastifyFormbody from '@fastify/formbody';
import fastifyMultipart from '@fastify/multipart';
import fastifyStatic from '@fastify/static';
import { createRedis, type RedisClient } from '../../services/redis-client.ts';
import { actAs } from '../plugins/auth.ts';
import { ConsoleApi, ConsoleApiError } from './api-client.ts';
import { documentText, type SafeHtml } from './html.ts';
import { LANG_COOKIE, labelsFor, requestedLang } from './labels.ts';
import { ConsoleSessions, SESSION_COOKIE, type Session } from './session.ts';
import type { View } from './views/layout.ts';
import { errorPage } from './views/sign-in.ts';
import signInRoutes from './routes/sign-in.ts';
import firmwareRoutes from './routes/firmware.ts';
import taskRoutes from './routes/tasks.ts';
import deviceRoutes from './routes/devices.ts';

export const CONSOLE_PATH = '/console';

/** What the console's pages may load: nothing inline, nothing from elsewhere. */
export const CONSOLE_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "object-src 'none'",
].join('; ');

declare module 'fastify' {
  interface FastifyInstance {
    consoleSessions: ConsoleSessions;
  }
  interface FastifyRequest {
    consoleSession: Session | null;
    consoleApi: ConsoleApi | null;
    consoleView: View | null;
  }
  interface FastifyContextConfig {
    /** A console route open without a session (sign-in, assets). */
    consolePublic?: boolean;
  }
}

const here = path.dirname(fileURLToPath(import.meta.url));
const htmxDir = path.dirname(createRequire(import.meta.url).resolve('htmx.org/dist/htmx.min.js'));

export function sendPage(reply: FastifyReply, page: SafeHtml, status = 200): FastifyReply {
  return reply.code(status).type('text/html; charset=utf-8').send(documentText(page));
}

/** The view of a request, for pages rendered before or without a session too. */
export function viewOf(request: FastifyRequest): View {
  if (request.consoleView) return request.consoleView;
  const { lang } = requestedLang(request);
  return { t: labelsFor(lang), lang, role: null, csrf: '', canAct: false, path: request.url };
}

/** The console API of a request that has a session (every route but the public ones). */
export function apiOf(request: FastifyRequest): ConsoleApi {
  if (!request.consoleApi) throw new Error('console route without a session');
  return request.consoleApi;
}

/** The POST came from a page of this very origin (browsers send Origin on every form POST). */
function sameOrigin(request: FastifyRequest): boolean {
  const origin = request.headers.origin;
  const expected = `${request.protocol}://${request.host}`;
  if (typeof origin === 'string') return origin === expected;
  const referer = request.headers.referer;
  if (typeof referer !== 'string') return false;
  try {
    return new URL(referer).origin === expected;
  } catch {
    return false;
  }
}

function isMultipart(request: FastifyRequest): boolean {
  return (request.headers['content-type'] ?? '').toLowerCase().startsWith('multipart/');
}

export default async function consolePlugin(app: FastifyInstance): Promise<void> {
  const config = app.config;
  let redis: RedisClient | undefined;
  const sessions = new ConsoleSessions({
    secret: config.consoleSessionSecret,
    ttlSeconds: config.consoleSessionSeconds,
    prefix: config.queuePrefix,
    // its own connection, opened on first use; a session check fails fast rather than wait for Redis
    redis: async () => {
      if (!redis) {
        redis = createRedis(config, { maxRetriesPerRequest: 1 });
        redis.on('error', (error: Error) => app.log.debug({ err: error.message }, 'console: redis connection error'));
      }
      return redis;
    },
  });
  app.decorate('consoleSessions', sessions);
  app.addHook('onClose', async () => {
    await redis?.quit().catch(() => undefined);
  });

  // pages, not API: kept out of the OpenAPI document
  app.addHook('onRoute', (route) => {
    route.schema = { ...route.schema, hide: true };
  });

  await app.register(fastifyCookie);
  await app.register(fastifyFormbody, { bodyLimit: 1024 * 1024 });
  await app.register(fastifyMultipart, { limits: { fileSize: config.firmwareMaxBytes, files: 1, fields: 40, fieldSize: 64 * 1024 } });
  app.decorateRequest('consoleSession', null);
  app.decorateRequest('consoleApi', null);
  app.decorateRequest('consoleView', null);

  app.addHook('onRequest', async (request, reply) => {
    reply.header('content-security-policy', CONSOLE_CSP);
    // same-origin form posts then carry their Origin (with no-referrer they would say "null")
    reply.header('referrer-policy', 'same-origin');
    reply.header('x-frame-options', 'DENY');
    if (!request.url.startsWith(`${CONSOLE_PATH}/assets/`)) reply.header('cache-control', 'no-store');
  });

  app.addHook('preHandler', async (request, reply) => {
    const { lang, chosen } = requestedLang(request);
    if (chosen) reply.setCookie(LANG_COOKIE, lang, { path: CONSOLE_PATH, sameSite: 'strict', httpOnly: true, maxAge: 365 * 86_400, secure: request.protocol === 'https' });
    const t = labelsFor(lang);
    if (request.method === 'POST' && !sameOrigin(request)) {
      request.log.warn({ origin: request.headers.origin }, 'console: refused a cross-origin form post');
      return sendPage(reply, errorPage(viewOf(request), 403, 'cross-origin request refused'), 403);
    }
    // the sign-in page and the assets (which it needs too) are open
    if (request.routeOptions.config.consolePublic || request.url.startsWith(`${CONSOLE_PATH}/assets/`)) return;

    const session = await sessions.read(request.cookies[SESSION_COOKIE]);
    const identity = session ? app.keyRing.byHash(session.keyHash) : null;
    const key = session ? app.keyRing.keyOf(session.keyHash) : null;
    if (!session || !identity || !key) {
      if (request.headers['hx-request'] === 'true') {
        reply.header('hx-redirect', `${CONSOLE_PATH}/sign-in`);
        return reply.code(401).send();
      }
      if (request.method !== 'GET') return reply.code(303).redirect(`${CONSOLE_PATH}/sign-in`);
      return reply.code(303).redirect(`${CONSOLE_PATH}/sign-in?next=${encodeURIComponent(request.url)}`);
    }
    actAs(request, identity);
    request.consoleSession = session;
    request.consoleApi = new ConsoleApi(app, key);
    request.consoleView = { t, lang, role: identity.role, csrf: sessions.csrfToken(session), canAct: identity.role !== 'viewer', path: request.url };

    if (request.method === 'POST') {
      // a multipart form's token is read in its handler, before its file
      if (!isMultipart(request) && !sessions.checkCsrf(session, (request.body as Record<string, unknown> | undefined)?._csrf)) {
        return sendPage(reply, errorPage(request.consoleView, 403, 'the form is stale or not from this console: reload the page'), 403);
      }
      if (identity.role === 'viewer' && request.routeOptions.url !== `${CONSOLE_PATH}/sign-out`) {
        return sendPage(reply, errorPage(request.consoleView, 403, t.forbidden), 403);
      }
    }
  });

  app.setErrorHandler(async (error, request, reply) => {
    const view = viewOf(request);
    if (error instanceof ConsoleApiError) {
      return sendPage(reply, errorPage(view, error.status, error.status === 404 ? `${view.t.notFound} ${error.message}` : error.message), error.status);
    }
    const status = (error as { statusCode?: number }).statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      return sendPage(reply, errorPage(view, status, (error as Error).message), status);
    }
    request.log.error({ err: error }, 'console: request failed');
    return sendPage(reply, errorPage(view, 500, 'something went wrong; the service log has the details'), 500);
  });

  app.setNotFoundHandler(async (request, reply) => sendPage(reply, errorPage(viewOf(request), 404, viewOf(request).t.notFound), 404));

  await app.register(fastifyStatic, {
    root: [path.join(here, 'assets'), htmxDir],
    prefix: '/assets/',
    allowedPath: (pathName) => pathName === '/console.css' || pathName === '/htmx.min.js',
    decorateReply: false,
    index: false,
    maxAge: 3_600_000,
  });

  await app.register(signInRoutes);
  await app.register(firmwareRoutes);
  await app.register(taskRoutes);
  await app.register(deviceRoutes);
}
