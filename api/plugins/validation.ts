// Request validation. Bodies are checked strictly: a number where a string belongs is an error, not
// silently converted, and a property the schema does not know — at any depth — is refused and named,
// never dropped (a misspelt rollout limit must not vanish). Query strings and path parameters arrive
// as text, so they are coerced. What cannot be stored (text holding U+0000, JSON nested absurdly
// deep) is refused up front.
import { Ajv, type ErrorObject, type Options } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify';
import fp from 'fastify-plugin';
import { findUnstorable } from '../../core/storable-json.ts';
import { validationError, type ErrorDetail } from '../../core/errors.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The body is a batch whose items are judged one by one (device messages): not refused whole here for one bad item. */
    itemsJudgedAlone?: boolean;
  }
}


// ajv-formats is CommonJS; its default export arrives wrapped under ESM.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (ajv: Ajv) => Ajv;

function createAjv(options: Options): Ajv {
  const ajv = new Ajv({ useDefaults: true, allErrors: false, strict: false, ...options });
  addFormats(ajv);
  return ajv;
}

type SchemaNode = Record<string, unknown>;

function isSchemaNode(value: unknown): value is SchemaNode {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Closes every object a body schema describes: `additionalProperties: false` wherever the schema
 * says nothing about extra properties. Done in place, on the route's own schema, so the OpenAPI
 * document shows it too; a schema that allows extras on purpose (`additionalProperties: true`, or
 * a map with `patternProperties`) keeps them.
 */
export function closeObjectSchemas(schema: unknown, seen = new Set<object>()): void {
  if (!isSchemaNode(schema) || seen.has(schema)) return;
  seen.add(schema);
  const describesObject = schema.type === 'object' || isSchemaNode(schema.properties);
  if (describesObject && schema.additionalProperties === undefined && schema.patternProperties === undefined) {
    schema.additionalProperties = false;
  }
  for (const key of ['properties', 'patternProperties', 'definitions', '$defs']) {
    const children = schema[key];
    if (isSchemaNode(children)) for (const child of Object.values(children)) closeObjectSchemas(child, seen);
  }
  for (const key of ['items', 'additionalProperties', 'additionalItems', 'contains', 'then', 'else', 'if']) {
    const child = schema[key];
    if (Array.isArray(child)) child.forEach((item) => closeObjectSchemas(item, seen));
    else closeObjectSchemas(child, seen);
  }
  for (const key of ['anyOf', 'oneOf', 'allOf', 'prefixItems']) {
    const branches = schema[key];
    if (Array.isArray(branches)) branches.forEach((branch) => closeObjectSchemas(branch, seen));
  }
}

/** The JSON body schemas of a route: `body` itself, or each JSON media type of a `content` map. */
export function jsonBodySchemas(body: unknown): SchemaNode[] {
  if (!isSchemaNode(body)) return [];
  const content = body.content;
  if (!isSchemaNode(content)) return [body];
  return Object.entries(content)
    .filter(([mediaType]) => mediaType.includes('json'))
    .map(([, media]) => (isSchemaNode(media) ? media.schema : undefined))
    .filter(isSchemaNode);
}

function pointerSegment(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}

/**
 * What a refused request did wrong, from ajv's errors: unknown properties first (inside an `anyOf`,
 * ajv also reports the other branches' complaints, which would only hide the typo).
 */
export function validationDetails(errors: readonly ErrorObject[]): ErrorDetail[] {
  const unknown = errors.filter((error) => error.keyword === 'additionalProperties');
  const chosen = unknown.length > 0 ? unknown : errors.filter((error) => error.keyword !== 'anyOf' && error.keyword !== 'oneOf');
  const details = (chosen.length > 0 ? chosen : errors).map((error): ErrorDetail => {
    if (error.keyword === 'additionalProperties') {
      const property = String((error.params as { additionalProperty?: unknown }).additionalProperty);
      return { path: `${error.instancePath}/${pointerSegment(property)}`, message: 'unknown property' };
    }
    if (error.keyword === 'required') {
      const property = String((error.params as { missingProperty?: unknown }).missingProperty);
      return { path: `${error.instancePath}/${pointerSegment(property)}`, message: 'required property is missing' };
    }
    return { path: error.instancePath || '/', message: error.message ?? 'is not valid' };
  });
  const unique = new Map(details.map((detail) => [`${detail.path}\u0000${detail.message}`, detail]));
  return [...unique.values()].slice(0, 20);
}

async function refuseUnstorable(request: FastifyRequest): Promise<void> {
  const parts: Array<[string, unknown]> = [['params', request.params], ['querystring', request.query]];
  if (request.routeOptions.config.itemsJudgedAlone !== true) parts.push(['body', request.body]);
  for (const [part, value] of parts) {
    const found = findUnstorable(value);
    if (found) throw validationError(`${part}${found.path}: ${found.problem}`, [{ path: found.path || '/', message: found.problem }]);
  }
}

export default fp(async function validation(app: FastifyInstance) {
  const strict = createAjv({ coerceTypes: false, removeAdditional: false });
  const coercing = createAjv({ coerceTypes: 'array', removeAdditional: true });
  app.addHook('onRoute', (route: RouteOptions) => {
    for (const schema of jsonBodySchemas(route.schema?.body)) closeObjectSchemas(schema);
  });
  app.setValidatorCompiler(({ schema, httpPart }) =>
    httpPart === 'body' ? strict.compile(schema) : coercing.compile(schema),
  );
  app.addHook('preValidation', refuseUnstorable);
}, { name: 'otter-validation' });
