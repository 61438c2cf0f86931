// A small REST client of Otter's API for the demo and the benchmark.
export interface TaskView {
  id: string;
  state: string;
  stats: { total: number; waiting: number; processing: number; success: number; failed: number; canceled: number };
  /** With canary waves (docs/strategies.md#waves): each wave's state. */
  waves?: Array<{ index: number; size: number; state: string }>;
}

export class OtterClient {
  readonly baseUrl: string;
  private readonly apiKey: string;

  constructor(baseUrl: string, apiKey: string) {
    this.baseUrl = baseUrl.replace(/\/$/, '');
    this.apiKey = apiKey;
  }

  async request<T>(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<T> {
    const response = await fetch(`${this.baseUrl}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${this.apiKey}`,
        ...(body === undefined ? {} : { 'content-type': contentType }),
      },
      body: body === undefined ? undefined : contentType === 'application/json' ? JSON.stringify(body) : (body as Uint8Array),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path} answered ${response.status}: ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  async registerDevices(productId: string, ids: string[], firmwareVersion: string): Promise<void> {
    for (let i = 0; i < ids.length; i += 10_000) {
      await this.request('PUT', '/api/devices', { devices: ids.slice(i, i + 10_000).map((id) => ({ id, productId, firmwareVersion })) });
    }
  }

  createFirmware(body: Record<string, unknown>): Promise<{ id: string }> {
    return this.request('POST', '/api/firmware', body);
  }

  uploadFirmware(firmwareId: string, bytes: Uint8Array): Promise<{ size: number; sign: string }> {
    return this.request('PUT', `/api/firmware/${firmwareId}/file`, bytes, 'application/octet-stream');
  }

  createTask(body: Record<string, unknown>): Promise<TaskView> {
    return this.request('POST', '/api/tasks', body);
  }

  release(taskId: string, body: Record<string, unknown>): Promise<{ added: number; skipped: Record<string, number> }> {
    return this.request('POST', `/api/tasks/${taskId}/release`, body);
  }

  task(taskId: string): Promise<TaskView> {
    return this.request('GET', `/api/tasks/${taskId}`);
  }
}
