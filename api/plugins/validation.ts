// Request validation. Bodies are checked strictly (a number where a string belongs is an error,
// not silently converted); query strings and path parameters arrive as text, so they are coerced.
// What cannot be stored (text holding U+0000, JSON nested absurdly deep) is refused up front.
import { Ajv, type Options } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { findUnstorable } from '../../core/storable-json.ts';
import { validationError } from '../../core/errors.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The body is a batch whose items are judged one by one (device messages): not refused whole here for one bad item. */
    itemsJudgedAlone?: boolean;
  }
}

// ajv-formats is CommonJS; its default export arrives wrapped under ESM.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (ajv: Ajv) => Ajv;

function createAjv(options: Options): Ajv {
  const ajv = new Ajv({ useDefaults: true, removeAdditional: true, allErrors: false, strict: false, ...options });
  addFormats(ajv);
  return ajv;
}

async function refuseUnstorable(request: FastifyRequest): Promise<void> {
  const parts: Array<[string, unknown]> = [['params', request.params], ['querystring', request.query]];
  if (request.routeOptions.config.itemsJudgedAlone !== true) parts.push(['body', request.body]);
  for (const [part, value] of parts) {
    const found = findUnstorable(value);
    if (found) throw validationError(`${part}${found.path}: ${found.problem}`);
  }
}

export default fp(async function validation(app: FastifyInstance) {
  const strict = createAjv({ coerceTypes: false });
  const coercing = createAjv({ coerceTypes: 'array' });
  app.setValidatorCompiler(({ schema, httpPart }) =>
    httpPart === 'body' ? strict.compile(schema) : coercing.compile(schema),
  );
  app.addHook('preValidation', refuseUnstorable);
}, { name: 'otter-validation' });
