// Replies to a firmware read are matched by device and messageId together, across processes (Redis
// pub/sub): a reply from another device that carries the right messageId does not answer the read.
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReadReplyPublisher, ReadReplyWaiters } from '../../services/read-replies.ts';
import { uniqueName } from '../helpers/database.ts';
import { TEST_REDIS_URL } from '../helpers/env.ts';

describe('read replies', () => {
  const prefix = uniqueName('otter-read-replies');
  let publisherRedis: Redis;
  let publisher: ReadReplyPublisher;
  let waiters: ReadReplyWaiters;

  beforeAll(async () => {
    publisherRedis = new Redis(TEST_REDIS_URL);
    publisher = new ReadReplyPublisher(publisherRedis, prefix);
    waiters = new ReadReplyWaiters(new Redis(TEST_REDIS_URL), prefix);
    await waiters.start();
  });

  afterAll(async () => {
    await waiters?.stop();
    publisherRedis?.disconnect();
  });

  it('takes the reply of the device asked, not one from another device with the same messageId', async () => {
    const waiter = waiters.wait('meter-1', 'm-1', 2_000);
    publisher.publish({ messageId: 'm-1', deviceId: 'meter-2', version: '6.6.6', properties: undefined });
    await new Promise((resolve) => setTimeout(resolve, 200));
    publisher.publish({ messageId: 'm-1', deviceId: 'meter-1', version: '1.2.3', properties: { hw: 'a' } });
    expect(await waiter.reply).toEqual({ messageId: 'm-1', deviceId: 'meter-1', version: '1.2.3', properties: { hw: 'a' } });
  });

  it('times out when only another device answers', async () => {
    const waiter = waiters.wait('meter-3', 'm-3', 500);
    publisher.publish({ messageId: 'm-3', deviceId: 'meter-4', version: '6.6.6', properties: undefined });
    expect(await waiter.reply).toBeUndefined();
  });
});
