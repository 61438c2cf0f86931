// Reading console forms: urlencoded fields as strings, and multipart forms whose file comes last
// (browsers send parts in the form's order), so the fields are known before the file streams by.
import type { Readable } from 'node:stream';
import type { FastifyRequest } from 'fastify';

export type Fields = Record<string, string | string[] | undefined>;

/** One field as text ('' when absent); the first of repeated ones. */
export function text(fields: Fields, name: string): string {
  const value = fields[name];
  const first = Array.isArray(value) ? value[0] : value;
  return typeof first === 'string' ? first.trim() : '';
}

/** Every value of a repeated field (checkboxes). */
export function list(fields: Fields, name: string): string[] {
  const value = fields[name];
  if (value === undefined) return [];
  return (Array.isArray(value) ? value : [value]).filter((item): item is string => typeof item === 'string');
}

/** A number field: undefined when empty, the text itself when it is not a number (the API names it). */
export function numeric(fields: Fields, name: string): number | string | undefined {
  const value = text(fields, name);
  if (value === '') return undefined;
  const number = Number(value);
  return Number.isFinite(number) ? number : value;
}

export function formFields(request: FastifyRequest): Fields {
  return (request.body ?? {}) as Fields;
}

export interface UploadedFile {
  stream: Readable;
  filename: string;
}

/**
 * Walks a multipart form: collects its fields, and hands them with the file (null when none was
 * chosen) to `handle`, which must read or drain the stream.
 */
export async function readMultipart<T>(request: FastifyRequest, handle: (fields: Fields, file: UploadedFile | null) => Promise<T>): Promise<T> {
  const fields: Record<string, string | string[]> = {};
  let result: { value: T } | undefined;
  for await (const part of request.parts()) {
    if (part.type === 'field') {
      const value = String(part.value);
      const before = fields[part.fieldname];
      fields[part.fieldname] = before === undefined ? value : [...(Array.isArray(before) ? before : [before]), value];
      continue;
    }
    if (result) {
      part.file.resume();
      continue;
    }
    const chosen = part.filename !== '';
    if (!chosen) part.file.resume();
    result = { value: await handle(fields, chosen ? { stream: part.file, filename: part.filename } : null) };
    // a handler that refused the form left the file unread: drain it so the request can end
    if (chosen && !part.file.readableEnded) part.file.resume();
  }
  return result ? result.value : handle(fields, null);
}
