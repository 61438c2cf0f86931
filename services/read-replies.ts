// Replies to ReadFirmwareMessage travel from whichever process received them to the API process
// that asked, over Redis pub/sub; the asking request waits for its device's reply to its messageId,
// with a deadline. Matched by device and messageId together: another device that learns or guesses
// a messageId cannot answer in its place.
import type { RedisClient } from './redis-client.ts';

export interface ReadReply {
  messageId: string;
  deviceId: string;
  version: string;
  properties: Record<string, unknown> | undefined;
}

export function readReplyChannel(prefix: string): string {
  return `${prefix}:read-replies`;
}

export class ReadReplyPublisher {
  private readonly redis: RedisClient;
  private readonly channel: string;

  constructor(redis: RedisClient, prefix: string) {
    this.redis = redis;
    this.channel = readReplyChannel(prefix);
  }

  publish(reply: ReadReply): void {
    this.redis.publish(this.channel, JSON.stringify(reply)).catch(() => {});
  }
}

function waiterKey(deviceId: string, messageId: string): string {
  return JSON.stringify([deviceId, messageId]);
}

export class ReadReplyWaiters {
  private readonly waiting = new Map<string, (reply: ReadReply) => void>();
  private readonly subscriber: RedisClient;
  private readonly channel: string;

  constructor(subscriber: RedisClient, prefix: string) {
    this.subscriber = subscriber;
    this.channel = readReplyChannel(prefix);
  }

  async start(): Promise<void> {
    this.subscriber.on('message', (channel: string, text: string) => {
      if (channel !== this.channel) return;
      try {
        const reply = JSON.parse(text) as ReadReply;
        this.waiting.get(waiterKey(reply.deviceId, reply.messageId))?.(reply);
      } catch {
        // not ours
      }
    });
    await this.subscriber.subscribe(this.channel);
  }

  /** The reply of `deviceId` to `messageId`, or undefined after `timeoutMs`. */
  wait(deviceId: string, messageId: string, timeoutMs: number): { reply: Promise<ReadReply | undefined>; cancel(): void } {
    const key = waiterKey(deviceId, messageId);
    let timer: NodeJS.Timeout | undefined;
    const reply = new Promise<ReadReply | undefined>((resolve) => {
      timer = setTimeout(() => {
        this.waiting.delete(key);
        resolve(undefined);
      }, timeoutMs);
      this.waiting.set(key, (received) => {
        clearTimeout(timer);
        this.waiting.delete(key);
        resolve(received);
      });
    });
    return {
      reply,
      cancel: () => {
        clearTimeout(timer);
        this.waiting.delete(key);
      },
    };
  }

  async stop(): Promise<void> {
    await this.subscriber.unsubscribe(this.channel).catch(() => {});
    this.subscriber.disconnect();
  }
}
