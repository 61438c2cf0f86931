// Typed errors: every failure the API or a worker reports carries a stable machine `code`
// (docs/rest-api.md#errors) and, where it reaches HTTP, the status to answer with.
import { STATUS_CODES } from 'node:http';

/** Every code an error may carry (docs/rest-api.md#errors): clients branch on these, so they are stable. */
export type ErrorCode =
  // the request as sent
  | 'validation_error'
  | 'bad_request'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'uri_too_long'
  | 'upload_aborted'
  | 'not_found'
  | 'precondition_failed'
  // who is asking
  | 'unauthorized'
  | 'forbidden'
  | 'too_many_failed_attempts'
  // what the request would do to the state
  | 'firmware_version_exists'
  | 'firmware_in_use'
  | 'firmware_has_no_file'
  | 'task_active'
  | 'task_closed'
  | 'task_mode_pull'
  | 'task_not_paused'
  | 'task_not_running'
  | 'device_busy'
  | 'unknown_device'
  | 'idempotency_key_in_progress'
  | 'idempotency_key_reused'
  | 'webhook_limit_reached'
  | 'wave_not_approvable'
  | 'waves_fixed'
  // device credentials and downloads
  | 'invalid_csr'
  | 'device_ca_not_configured'
  | 'device_ca_invalid'
  | 'device_crl_unwritable'
  | 'invalid_signature'
  | 'signature_expired'
  // devices and the service's own dependencies
  | 'device_timeout'
  | 'send_error'
  | 'backlog_full'
  | 'dependency_unavailable'
  | 'internal_error'
  // at start
  | 'config_error'
  | 'connector_not_loaded'
  | 'migration_failed'
  | 'mqtt_tls_file_unreadable';

/** One problem of a refused request: a JSON Pointer into what was sent, and what is wrong there. */
export interface ErrorDetail {
  path: string;
  message: string;
}

export class OtterError extends Error {
  readonly code: ErrorCode;
  readonly statusCode: number;
  readonly details?: ErrorDetail[];

  constructor(code: ErrorCode, message: string, statusCode = 400, details?: ErrorDetail[]) {
    super(message);
    this.name = 'OtterError';
    this.code = code;
    this.statusCode = statusCode;
    if (details) this.details = details;
  }
}

export function notFound(what: string, id: string | number): OtterError {
  return new OtterError('not_found', `${what} ${id} not found`, 404);
}

export function conflict(code: ErrorCode, message: string): OtterError {
  return new OtterError(code, message, 409);
}

/** A well-formed request the server will not act on as sent (422). */
export function unprocessable(code: ErrorCode, message: string): OtterError {
  return new OtterError(code, message, 422);
}

/**
 * The request's If-Match names a revision the resource no longer has (412): someone changed it
 * since the caller read it. Nothing was written.
 */
export function preconditionFailed(what: string, id: string, currentRevision?: number): OtterError {
  const now = currentRevision === undefined ? '' : ` (its ETag is now "${currentRevision}")`;
  return new OtterError('precondition_failed', `${what} ${id} has changed since the If-Match ETag was read${now}; read it again and retry`, 412);
}

export function validationError(message: string, details?: ErrorDetail[]): OtterError {
  return new OtterError('validation_error', message, 400, details);
}

export function unauthorized(message = 'a valid API key is required'): OtterError {
  return new OtterError('unauthorized', message, 401);
}

export function forbidden(code: ErrorCode, message: string): OtterError {
  return new OtterError(code, message, 403);
}

/** A dependency (Postgres, Redis, broker) that cannot be reached at start. */
export class DependencyError extends OtterError {
  readonly dependency: string;
  readonly url: string;
  readonly hint: string;

  constructor(dependency: string, url: string, hint: string, cause?: unknown) {
    super('dependency_unavailable', `${dependency} is not reachable at ${url}`, 503);
    this.dependency = dependency;
    this.url = url;
    this.hint = hint;
    this.cause = cause;
  }
}

/** Too many failed authentication attempts from one client: refused until `retryAfterSeconds` pass. */
export function tooManyFailedAttempts(retryAfterSeconds: number): OtterError {
  return new OtterError(
    'too_many_failed_attempts',
    `too many failed authentication attempts; try again in ${retryAfterSeconds} s`,
    429,
  );
}

/** The one shape of an error answer: { statusCode, code, error, message, details? } (docs/rest-api.md#errors). */
export interface ErrorBody {
  statusCode: number;
  code: ErrorCode;
  error: string;
  message: string;
  details?: ErrorDetail[];
}

export function errorBody(statusCode: number, code: ErrorCode, message: string, details?: ErrorDetail[]): ErrorBody {
  const body: ErrorBody = { statusCode, code, error: STATUS_CODES[statusCode] ?? 'Error', message };
  if (details && details.length > 0) body.details = details;
  return body;
}
