// The webhook rules without services: the body and its signature (checked against openssl's), the
// back-off, when a delivery is given up, and which answers count as delivered.
import { describe, expect, it } from 'vitest';
import {
  WEBHOOK_RETRY_MAX_DELAY_MS,
  WEBHOOK_RETRY_WINDOW_MS,
  afterFailure,
  deliveryBody,
  eventJson,
  refusalOf,
  retryDelayMs,
  signDelivery,
} from '../../core/webhooks.ts';

describe('webhook deliveries', () => {
  it('writes the body as JSON, the events\' data spliced in as stored', () => {
    const at = '2026-12-01T02:00:00.123Z';
    const body = deliveryBody('d-1', [eventJson(7, 'record.final', at, '{"deviceId" : "a\\"b", "attempts" : 1}'), eventJson(8, 'task.completed', at, '{}')]);
    expect(JSON.parse(body)).toEqual({
      deliveryId: 'd-1',
      events: [
        { id: 7, type: 'record.final', at: '2026-12-01T02:00:00.123Z', data: { deviceId: 'a"b', attempts: 1 } },
        { id: 8, type: 'task.completed', at: '2026-12-01T02:00:00.123Z', data: {} },
      ],
    });
  });

  it('signs the exact body with HMAC-SHA256, as openssl computes it', () => {
    const body = deliveryBody('d', []);
    expect(body).toBe('{"deliveryId":"d","events":[]}');
    // printf %s '{"deliveryId":"d","events":[]}' | openssl dgst -sha256 -hmac 'a-test-secret-of-some-length'
    expect(signDelivery('a-test-secret-of-some-length', body)).toBe('sha256=d22ad556c351ee207a47b1cbc828558a193e5ca964bede8f205ba85d7716f3c5');
    expect(signDelivery('another-secret-of-some-length', body)).not.toBe(signDelivery('a-test-secret-of-some-length', body));
  });

  it('backs off exponentially from the base, never beyond 15 minutes', () => {
    expect([1, 2, 3, 4, 5].map((n) => retryDelayMs(n, 5_000))).toEqual([5_000, 10_000, 20_000, 40_000, 80_000]);
    expect(retryDelayMs(9, 5_000)).toBe(WEBHOOK_RETRY_MAX_DELAY_MS);
    expect(retryDelayMs(10_000, 5_000)).toBe(WEBHOOK_RETRY_MAX_DELAY_MS);
    expect(retryDelayMs(0, 250)).toBe(250);
  });

  it('retries for 24 h after a batch was made, then gives it up', () => {
    const made = Date.parse('2026-12-01T00:00:00Z');
    expect(afterFailure(1, made, made + 1_000, 5_000)).toEqual({ retryAt: made + 6_000 });
    expect(afterFailure(50, made, made + WEBHOOK_RETRY_WINDOW_MS - 1, 5_000)).toEqual({ retryAt: made + WEBHOOK_RETRY_WINDOW_MS - 1 + WEBHOOK_RETRY_MAX_DELAY_MS });
    expect(afterFailure(50, made, made + WEBHOOK_RETRY_WINDOW_MS, 5_000)).toEqual({ expired: true });
  });

  it('counts only a 2xx as delivered; a redirect is named and not followed', () => {
    for (const status of [200, 201, 202, 204, 299]) expect(refusalOf(status, null)).toBeUndefined();
    expect(refusalOf(500, null)).toBe('answered 500');
    expect(refusalOf(404, null)).toBe('answered 404');
    expect(refusalOf(301, 'https://elsewhere.example.com/')).toBe('answered 301 to https://elsewhere.example.com/; redirects are not followed');
    expect(refusalOf(100, null)).toBe('answered 100');
  });
});
