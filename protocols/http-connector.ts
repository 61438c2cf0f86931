// The `http` connector (docs/device-protocol.md#the-http-connector), for platforms that terminate device protocols themselves:
// each platform → device message is POSTed to HTTP_CONNECTOR_URL with an HMAC-SHA256 signature;
// device messages come back through POST /api/device-messages.
import { createHmac } from 'node:crypto';
import type { Connector, ConnectorContext, OutgoingDeviceMessage } from './connector.ts';

export const SIGNATURE_HEADER = 'x-otter-signature';
const SEND_TIMEOUT_MS = 10_000;

export function signBody(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

export class HttpConnector implements Connector {
  readonly name = 'http';
  private readonly url: string;
  private readonly secret: string;

  constructor(context: ConnectorContext) {
    this.url = context.config.httpConnectorUrl ?? '';
    this.secret = context.config.httpConnectorSecret ?? '';
  }

  async start(): Promise<void> {}

  async send(message: OutgoingDeviceMessage): Promise<void> {
    const body = JSON.stringify({ ...message.body, messageType: message.messageType, productId: message.productId });
    const response = await fetch(this.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', [SIGNATURE_HEADER]: signBody(this.secret, body) },
      body,
      signal: AbortSignal.timeout(SEND_TIMEOUT_MS),
    });
    // drain the body so the connection can be reused
    await response.arrayBuffer().catch(() => undefined);
    if (!response.ok) throw new Error(`HTTP connector answered ${response.status}`);
  }

  async stop(): Promise<void> {}
}

export function createHttpConnector(context: ConnectorContext): Connector {
  return new HttpConnector(context);
}
