// The console acts through the REST API itself, in process: every form becomes the same request a
// platform would send, with the signed-in user's key, so validation, roles, idempotency, the audit
// log and every rule apply to the console exactly as to REST (docs/operations.md#the-console).
import type { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';

export type ApiAnswer<T> =
  | { ok: true; status: number; body: T; etag: string | undefined }
  | { ok: false; status: number; code: string; message: string };

export class ConsoleApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export class ConsoleApi {
  private readonly app: FastifyInstance;
  private readonly authorization: string;

  constructor(app: FastifyInstance, key: string) {
    this.app = app;
    this.authorization = `Bearer ${key}`;
  }

  async call<T>(method: Method, url: string, body?: unknown, headers: Record<string, string> = {}): Promise<ApiAnswer<T>> {
    const response = await this.app.inject({
      method,
      url,
      headers: { authorization: this.authorization, ...headers },
      ...(body !== undefined ? { payload: body as Record<string, unknown> } : {}),
    });
    const etag = typeof response.headers.etag === 'string' ? response.headers.etag : undefined;
    if (response.statusCode < 300) {
      const parsed = response.body.length > 0 ? (response.json() as T) : (null as T);
      return { ok: true, status: response.statusCode, body: parsed, etag };
    }
    let code = 'error';
    let message = response.body;
    try {
      const error = response.json() as { code?: string; message?: string };
      code = error.code ?? code;
      message = error.message ?? message;
    } catch {
      // not the API's JSON: keep the text
    }
    return { ok: false, status: response.statusCode, code, message };
  }

  /** A read that must succeed: anything else is thrown, and the console's error page shows it. */
  async get<T>(url: string): Promise<T> {
    const answer = await this.call<T>('GET', url);
    if (!answer.ok) throw new ConsoleApiError(answer.status, answer.code, answer.message);
    return answer.body;
  }

  /** Streams a file to PUT /api/firmware/{id}/file. */
  async upload<T>(firmwareId: string, file: Readable, signMethod: string): Promise<ApiAnswer<T>> {
    const response = await this.app.inject({
      method: 'PUT',
      url: `/api/firmware/${encodeURIComponent(firmwareId)}/file?signMethod=${encodeURIComponent(signMethod)}`,
      headers: { authorization: this.authorization, 'content-type': 'application/octet-stream' },
      payload: file,
    });
    if (response.statusCode < 300) return { ok: true, status: response.statusCode, body: response.json() as T, etag: undefined };
    const error = response.json() as { code?: string; message?: string };
    return { ok: false, status: response.statusCode, code: error.code ?? 'error', message: error.message ?? '' };
  }
}

/** A query string from the values that are set. */
export function query(values: Record<string, string | number | undefined | null>): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(values)) {
    if (value !== undefined && value !== null && value !== '') params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}
