// Tells the dispatchers of every worker process that a task has new work (pushed, resumed,
// retried, limits changed), over Redis pub/sub; without it they would still find it on their next
// poll, a quarter of a second later.
import type { RedisClient } from './redis-client.ts';

export interface DispatchSignal {
  poke(taskId: string): void;
}

export function dispatchChannel(prefix: string): string {
  return `${prefix}:dispatch`;
}

export class RedisDispatchSignal implements DispatchSignal {
  private readonly redis: RedisClient;
  private readonly channel: string;

  constructor(redis: RedisClient, prefix: string) {
    this.redis = redis;
    this.channel = dispatchChannel(prefix);
  }

  poke(taskId: string): void {
    this.redis.publish(this.channel, taskId).catch(() => {});
  }
}

/** Calls `onPoke` whenever any process signals; returns a function that unsubscribes. */
export async function listenForDispatch(subscriber: RedisClient, prefix: string, onPoke: () => void): Promise<() => Promise<void>> {
  const channel = dispatchChannel(prefix);
  subscriber.on('message', (received: string) => {
    if (received === channel) onPoke();
  });
  await subscriber.subscribe(channel);
  return async () => {
    await subscriber.unsubscribe(channel).catch(() => {});
    subscriber.disconnect();
  };
}
