// One error shape for the whole API: { statusCode, code, error, message, details? }, where
// `details` names what a refused request got wrong (JSON Pointers into the part it was in).
// 4xx messages pass through; a 5xx becomes a generic message and a log line with the request.
import type { FastifyError, FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { OtterError, errorBody, type ErrorCode, type ErrorDetail } from '../../core/errors.ts';

export { errorBody, type ErrorBody } from '../../core/errors.ts';
import { validationDetails } from './validation.ts';

const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload_too_large',
  FST_REQ_FILE_TOO_LARGE: 'payload_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'validation_error',
  FST_ERR_CTP_INVALID_JSON_BODY: 'validation_error',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'validation_error',
  FST_INVALID_MULTIPART_CONTENT_TYPE: 'validation_error',
  FST_ERR_VALIDATION: 'validation_error',
};

interface Described {
  statusCode: number;
  code: ErrorCode;
  message: string;
  details?: ErrorDetail[];
}


function describe(error: FastifyError | OtterError): Described {
  if (error instanceof OtterError) return { statusCode: error.statusCode, code: error.code, message: error.message, details: error.details };
  const fastifyError = error as FastifyError;
  if (fastifyError.validation) {
    const part = fastifyError.validationContext ?? 'request';
    const details = validationDetails(fastifyError.validation);
    const first = details[0];
    const message = first ? `${part}${first.path === '/' ? '' : first.path}: ${first.message}` : fastifyError.message;
    return { statusCode: 400, code: 'validation_error', message, details };
  }
  const statusCode = fastifyError.statusCode ?? 500;
  if (statusCode === 401) return { statusCode, code: 'unauthorized', message: 'a valid API key is required' };
  if (statusCode >= 500) return { statusCode: 500, code: 'internal_error', message: 'internal error' };
  const code = (fastifyError.code ? FASTIFY_CODES[fastifyError.code] : undefined) ?? (statusCode === 404 ? 'not_found' : 'bad_request');
  return { statusCode, code, message: fastifyError.message };
}

/**
 * Errors Fastify meets while routing, before any hook or handler runs: a path parameter longer than
 * any id, or a URL that is not validly percent-encoded.
 */
export function describeFrameworkError(error: FastifyError): Described {
  if (error.code === 'FST_ERR_MAX_PARAM_LENGTH') return { statusCode: 414, code: 'uri_too_long', message: 'a path parameter is too long' };
  if (error.code === 'FST_ERR_BAD_URL') return { statusCode: 400, code: 'validation_error', message: 'the URL is not validly percent-encoded' };
  return { statusCode: 500, code: 'internal_error', message: 'internal error' };
}

export default fp(async function errorHandler(app: FastifyInstance) {
  app.setErrorHandler((error: FastifyError | OtterError, request, reply) => {
    const described = describe(error);
    if (described.statusCode >= 500) {
      request.log.error({ err: error, method: request.method, url: request.url }, 'request failed');
    } else {
      request.log.debug({ code: described.code, message: described.message }, 'request refused');
    }
    if (described.statusCode === 401 && !reply.hasHeader('www-authenticate')) {
      reply.header('www-authenticate', 'Basic realm="otter", charset="UTF-8"');
    }
    return reply.code(described.statusCode).send(errorBody(described.statusCode, described.code, described.message, described.details));
  });
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send(errorBody(404, 'not_found', `route ${request.method} ${request.url.split('?')[0]} not found`));
  });
}, { name: 'otter-error-handler' });
