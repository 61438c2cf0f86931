// Which database errors are worth trying again: deadlocks and serialization failures between
// concurrent batches, and a server that is restarting or briefly unreachable.
import pRetry from 'p-retry';
import { OtterError } from '../core/errors.ts';

const TRANSIENT_SQLSTATES = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up, in recovery)
  '08000', '08001', '08003', '08004', '08006', // connection exceptions
  '53300', // too_many_connections
]);

const TRANSIENT_NODE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN']);

// SQLSTATE classes that say "the connection or the server", not "your statement":
// 08 connection exception, 53 insufficient resources, 57 operator intervention (shutdown, restart)
const TRANSIENT_SQLSTATE_CLASSES = ['08', '53', '57'];

/**
 * PostgreSQL stayed unreachable for as long as the caller would wait (`retryTransient` ran out):
 * what it was reading or writing was not done, and may be tried again once the database is back.
 */
export class DatabaseUnavailableError extends OtterError {
  constructor(cause: unknown, waitedMs?: number) {
    const waited = waitedMs === undefined ? '' : ` for ${Math.round(waitedMs / 1000)} s`;
    super('dependency_unavailable', `PostgreSQL unavailable${waited}: ${cause instanceof Error ? cause.message : String(cause)}`, 503);
    this.name = 'DatabaseUnavailableError';
    this.cause = cause;
  }
}

export function isTransientDbError(error: unknown): boolean {
  if (error instanceof DatabaseUnavailableError) return true;
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: string }).code;
  if (code && (TRANSIENT_SQLSTATES.has(code) || TRANSIENT_NODE_CODES.has(code))) return true;
  if (code && /^[0-9A-Z]{5}$/.test(code) && TRANSIENT_SQLSTATE_CLASSES.includes(code.slice(0, 2))) return true;
  // errors of the client side of a connection that went away (pg, kysely), which carry no SQLSTATE
  return /Connection terminated|connection timeout|connection error|not queryable|Client was closed|socket hang up|timeout exceeded when trying to connect|Connection ended|terminating connection/i.test(error.message);
}

export interface RetryOptions {
  /** Give up after this long (ms). */
  maxRetryTime: number;
  onRetry?: (error: unknown, attempt: number) => void;
}

/**
 * Runs `fn`, trying again with exponential back-off while it fails with a transient error; once
 * `maxRetryTime` has passed, the last transient error is thrown as a DatabaseUnavailableError.
 */
export function retryTransient<T>(fn: () => Promise<T>, options: RetryOptions): Promise<T> {
  const started = Date.now();
  return pRetry(fn, {
    retries: 1_000,
    minTimeout: 20,
    maxTimeout: 2_000,
    factor: 2,
    randomize: true,
    maxRetryTime: options.maxRetryTime,
    shouldRetry: ({ error }) => isTransientDbError(error),
    onFailedAttempt: ({ error, attemptNumber }) => {
      if (isTransientDbError(error)) options.onRetry?.(error, attemptNumber);
    },
  }).catch((error: unknown) => {
    if (error instanceof DatabaseUnavailableError || !isTransientDbError(error)) throw error;
    throw new DatabaseUnavailableError(error, Date.now() - started);
  });
}
