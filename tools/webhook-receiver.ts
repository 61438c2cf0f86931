// A webhook receiver on localhost for the tests and the benchmark (docs/rest-api.md#webhooks): it
// checks each delivery's X-Otter-Signature over the raw body, answers as told (2xx, or an error
// while `failWith` is set), and keeps what an integrator would check — events per type and per
// device, batch sizes, and whether event ids rise within each task in arrival order.
import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReceivedEvent {
  id: number;
  type: string;
  at: string;
  data: Record<string, unknown>;
}

export interface ReceivedDelivery {
  deliveryId: string;
  path: string;
  events: ReceivedEvent[];
  /** The answer this receiver gave. */
  status: number;
  signatureValid: boolean;
  receivedAt: number;
}

/** The stream a receiver orders events by: the task, or for device events the product. */
function streamOf(event: ReceivedEvent): string {
  const data = event.data;
  if (typeof data.taskId === 'string') return `task:${data.taskId}`;
  return `product:${String(data.productId)}`;
}

function validSignature(secret: string, body: Buffer, header: string | undefined): boolean {
  if (!header?.startsWith('sha256=')) return false;
  const expected = Buffer.from(createHmac('sha256', secret).update(body).digest('hex'));
  const given = Buffer.from(header.slice('sha256='.length));
  return expected.length === given.length && timingSafeEqual(expected, given);
}

export class WebhookReceiver {
  private server: http.Server | undefined;
  private readonly secrets = new Map<string, string>();
  /** Answers every delivery with this status while set (e.g. 500), instead of 204. */
  failWith: number | undefined;
  /** Keep every delivery's events (tests); the benchmark only counts. */
  readonly keepEvents: boolean;
  readonly deliveries: ReceivedDelivery[] = [];
  /** Deliveries answered 2xx, by id: a repeat of one of these is a redelivery. */
  readonly accepted = new Set<string>();
  readonly eventsByType = new Map<string, number>();
  /** record.final events per `taskId/deviceId`, from accepted deliveries. */
  readonly finalsByRecord = new Map<string, number>();
  /** Largest event id accepted per stream: ids must rise within a stream (unless a whole delivery repeats). */
  private readonly lastIdByStream = new Map<string, number>();
  outOfOrder = 0;
  badSignatures = 0;
  largestBatch = 0;
  acceptedDeliveries = 0;
  refusedDeliveries = 0;
  lastAcceptedAt = 0;

  constructor(options: { keepEvents?: boolean } = {}) {
    this.keepEvents = options.keepEvents ?? true;
  }

  async start(): Promise<void> {
    this.server = http.createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const status = this.handle(request, Buffer.concat(chunks));
        if (status >= 300 && status < 400) response.setHeader('location', '/sink');
        response.writeHead(status).end();
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
  }

  /** The URL of a path on this receiver, whose deliveries are checked against `secret`. */
  url(path: string, secret: string): string {
    this.secrets.set(path, secret);
    return `http://127.0.0.1:${(this.server!.address() as AddressInfo).port}${path}`;
  }

  /** Requests to paths that were never registered (a redirect followed would land there). */
  strayRequests = 0;

  private handle(request: http.IncomingMessage, body: Buffer): number {
    const path = request.url ?? '/';
    if (path === '/redirect') return 302;
    const secret = this.secrets.get(path);
    if (secret === undefined) {
      this.strayRequests += 1;
      return 404;
    }
    const signatureValid = validSignature(secret, body, request.headers['x-otter-signature'] as string | undefined);
    const parsed = JSON.parse(body.toString('utf8')) as { deliveryId: string; events: ReceivedEvent[] };
    let status = this.failWith ?? 204;
    if (!signatureValid) {
      this.badSignatures += 1;
      status = 401;
    }
    if (this.keepEvents) {
      this.deliveries.push({ deliveryId: parsed.deliveryId, path, events: parsed.events, status, signatureValid, receivedAt: Date.now() });
    }
    if (status >= 300) {
      this.refusedDeliveries += 1;
      return status;
    }
    this.largestBatch = Math.max(this.largestBatch, parsed.events.length);
    const repeat = this.accepted.has(parsed.deliveryId);
    this.accepted.add(parsed.deliveryId);
    this.acceptedDeliveries += 1;
    this.lastAcceptedAt = Date.now();
    for (const event of parsed.events) {
      this.eventsByType.set(event.type, (this.eventsByType.get(event.type) ?? 0) + 1);
      if (event.type === 'record.final') {
        const key = `${String(event.data.taskId)}/${String(event.data.deviceId)}`;
        this.finalsByRecord.set(key, (this.finalsByRecord.get(key) ?? 0) + 1);
      }
      const stream = streamOf(event);
      const last = this.lastIdByStream.get(stream) ?? 0;
      if (event.id <= last && !repeat) this.outOfOrder += 1;
      this.lastIdByStream.set(stream, Math.max(last, event.id));
    }
    return status;
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
  }
}
