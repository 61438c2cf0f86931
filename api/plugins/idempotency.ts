// Idempotency-Key on the routes that opt in with `config: { idempotent: true }`: a repeat of a
// request with the same key gets the first answer back and does nothing twice.
//
// The first request claims the key (a row in idempotency_keys, state in_progress) after validation
// and before its handler; its final answer (status < 500) is stored as sent and replayed to every
// repeat with `Idempotency-Replayed: true`. A 5xx gives the key back so a retry runs anew. Keys are
// scoped by the API key (its hash), the method and the path, and expire after 24 hours.
import type { FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { conflict, unprocessable, validationError } from '../../core/errors.ts';
import { IDEMPOTENCY_KEY_HEADER, isValidIdempotencyKey, requestFingerprint } from '../../core/idempotency.ts';
import {
  claimIdempotencyKey,
  completeIdempotencyKey,
  deleteExpiredIdempotencyKeys,
  findIdempotencyKey,
  releaseIdempotencyKey,
  type IdempotencyScope,
} from '../../db/queries/idempotency-keys.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Honour the Idempotency-Key header on this route. */
    idempotent?: boolean;
  }
  interface FastifyRequest {
    /** The idempotency key this request holds while its handler runs. */
    idempotencyClaim: HeldKey | null;
  }
}

interface HeldKey {
  scope: IdempotencyScope;
  requestHash: string;
}

export interface IdempotencyOptions {
  /** How long a key is remembered (default 24 h). */
  ttlSeconds?: number;
  /** A key in progress for longer than this belongs to a request that died with its process (default 10 min). */
  staleAfterSeconds?: number;
  /** Expired keys are swept at most this often per process (default 1 min). */
  sweepIntervalMs?: number;
}

export const REPLAYED_HEADER = 'idempotency-replayed';

export default fp<IdempotencyOptions>(async function idempotency(app, options) {
  const ttlSeconds = options.ttlSeconds ?? 86_400;
  const staleAfterSeconds = options.staleAfterSeconds ?? 600;
  const sweepIntervalMs = options.sweepIntervalMs ?? 60_000;
  let nextSweepAt = 0;

  app.decorateRequest('idempotencyClaim', null);

  function sweepExpired(request: FastifyRequest): void {
    const now = Date.now();
    if (now < nextSweepAt) return;
    nextSweepAt = now + sweepIntervalMs;
    deleteExpiredIdempotencyKeys(app.db).catch((error: unknown) => {
      request.log.warn({ err: error }, 'sweeping expired idempotency keys failed');
    });
  }

  // after validation (a refused body never takes a key) and authentication (the key is scoped by it)
  app.addHook('preHandler', async (request: FastifyRequest, reply: FastifyReply) => {
    if (request.routeOptions.config.idempotent !== true) return;
    const key = request.headers[IDEMPOTENCY_KEY_HEADER];
    if (key === undefined) return;
    if (!isValidIdempotencyKey(key)) {
      throw validationError('headers/idempotency-key must be 1 to 255 visible ASCII characters');
    }
    const scope: IdempotencyScope = {
      apiKeyHash: request.apiKeyHash ?? 'anonymous',
      method: request.method,
      path: request.url.split('?')[0] ?? request.url,
      key,
    };
    const requestHash = requestFingerprint(request.body ?? null);
    sweepExpired(request);

    // a key found gone between the claim and the look-up was given back or expired: claim again
    for (let attempt = 0; attempt < 3; attempt += 1) {
      if (await claimIdempotencyKey(app.db, { ...scope, requestHash, ttlSeconds, staleAfterSeconds })) {
        request.idempotencyClaim = { scope, requestHash };
        return;
      }
      const earlier = await findIdempotencyKey(app.db, scope);
      if (!earlier) continue;
      if (earlier.request_hash !== requestHash) {
        throw unprocessable('idempotency_key_reused', `Idempotency-Key ${key} was used for a different request body`);
      }
      if (earlier.state !== 'done' || earlier.response_status === null || earlier.response_body === null) break;
      return reply
        .code(earlier.response_status)
        .header(REPLAYED_HEADER, 'true')
        .type('application/json; charset=utf-8')
        .send(earlier.response_body);
    }
    reply.header('retry-after', '1');
    throw conflict('idempotency_key_in_progress', `a request with Idempotency-Key ${key} is still in progress`);
  });

  app.addHook('onSend', async (request: FastifyRequest, reply: FastifyReply, payload: unknown) => {
    const held = request.idempotencyClaim;
    if (!held) return payload;
    request.idempotencyClaim = null;
    try {
      if (reply.statusCode < 500 && typeof payload === 'string') {
        await completeIdempotencyKey(app.db, held.scope, held.requestHash, reply.statusCode, payload);
      } else {
        await releaseIdempotencyKey(app.db, held.scope, held.requestHash);
      }
    } catch (error) {
      // the answer itself still goes out; the key stays in progress until it counts as stale
      request.log.warn({ err: error, idempotencyKey: held.scope.key }, 'storing the idempotent answer failed');
    }
    return payload;
  });
}, { name: 'otter-idempotency', dependencies: ['otter-auth'] });
