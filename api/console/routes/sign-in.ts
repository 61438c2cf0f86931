// Sign-in and sign-out (docs/operations.md#the-console). A key typed here counts against the same
// failed-attempt limit as a key in a header; the session cookie names the key by its hash only.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { OtterError } from '../../../core/errors.ts';
import { CONSOLE_PATH, sendPage, viewOf } from '../plugin.ts';
import { SESSION_COOKIE } from '../session.ts';
import { signInPage } from '../views/sign-in.ts';

/** Only a console address: never an open redirect to elsewhere. */
export function safeNext(value: unknown): string {
  if (typeof value !== 'string' || !value.startsWith(`${CONSOLE_PATH}`) || value.startsWith('//') || /[\\\r\n]/.test(value)) return CONSOLE_PATH;
  if (value.startsWith(`${CONSOLE_PATH}/sign-`)) return CONSOLE_PATH;
  return value;
}

function cookieOptions(request: FastifyRequest, maxAge: number) {
  return { path: CONSOLE_PATH, httpOnly: true, sameSite: 'strict' as const, secure: request.protocol === 'https', maxAge };
}

export default async function signInRoutes(app: FastifyInstance): Promise<void> {
  const open = { config: { consolePublic: true } };

  app.get('/sign-in', open, async (request, reply) => {
    const next = safeNext((request.query as Record<string, unknown>).next);
    if (await app.consoleSessions.read(request.cookies[SESSION_COOKIE])) return reply.code(303).redirect(next);
    return sendPage(reply, signInPage(viewOf(request), next));
  });

  app.post('/sign-in', open, async (request, reply) => {
    const body = (request.body ?? {}) as Record<string, unknown>;
    const next = safeNext(body.next);
    const key = typeof body.apiKey === 'string' ? body.apiKey.trim() : '';
    const view = viewOf(request);
    let identity;
    try {
      identity = app.verifyPresentedKey(request, reply, key);
    } catch (error) {
      if (!(error instanceof OtterError)) throw error;
      const message = error.statusCode === 429 ? view.t.tooManyAttempts : view.t.wrongKey;
      return sendPage(reply, signInPage(view, next, message), error.statusCode);
    }
    const { cookie } = app.consoleSessions.create(identity.hash);
    reply.setCookie(SESSION_COOKIE, cookie, cookieOptions(request, app.config.consoleSessionSeconds));
    request.log.info({ key: identity.auditFingerprint, role: identity.role }, 'console: signed in');
    return reply.code(303).redirect(next);
  });

  app.post('/sign-out', async (request, reply) => {
    if (request.consoleSession) await app.consoleSessions.signOut(request.consoleSession);
    reply.clearCookie(SESSION_COOKIE, cookieOptions(request, 0));
    return reply.code(303).redirect(`${CONSOLE_PATH}/sign-in`);
  });
}
