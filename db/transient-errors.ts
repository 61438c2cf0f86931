// Which database errors are worth trying again: deadlocks and serialization failures between
// concurrent batches, and a server that is restarting or briefly unreachable.
import pRetry from 'p-retry';

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

export function isTransientDbError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: string }).code;
  if (code && (TRANSIENT_SQLSTATES.has(code) || TRANSIENT_NODE_CODES.has(code))) return true;
  return /Connection terminated|connection timeout|Client has encountered a connection error|timeout exceeded when trying to connect/i.test(error.message);
}

export interface RetryOptions {
  /** Give up after this long (ms). */
  maxRetryTime: number;
  onRetry?: (error: unknown, attempt: number) => void;
}

/** Runs `fn`, trying again with exponential back-off while it fails with a transient error. */
export function retryTransient<T>(fn: () => Promise<T>, options: RetryOptions): Promise<T> {
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
  });
}
