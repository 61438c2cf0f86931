// The platform's side of the http connector in tests: a local HTTP server that takes every
// platform → device message Otter posts and keeps it for the test to look at.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SentMessage {
  messageType: string;
  deviceId: string;
}

export class PlatformSink<M extends SentMessage = SentMessage> {
  readonly received: M[] = [];
  url = '';
  private readonly server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      this.received.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as M);
      response.writeHead(204).end();
    });
  });

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/`;
  }

  upgradeFor(deviceId: string): M | undefined {
    return this.received.find((m) => m.messageType === 'UPGRADE_FIRMWARE' && m.deviceId === deviceId);
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
