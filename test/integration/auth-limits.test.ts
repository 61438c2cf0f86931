// Failed authentication is rate limited per client address (docs/rest-api.md#authentication, failed attempts): after too many
// wrong keys in a window, requests from that address without a valid key answer 429
// `too_many_failed_attempts` with Retry-After until the window passes; a valid key always passes.
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { TEST_API_KEY } from '../helpers/env.ts';

const LIMIT = 5;
const WINDOW_SECONDS = 2;
const WRONG = { authorization: 'Bearer wrong-key' };

let t: TestApp;

beforeAll(async () => {
  t = await buildTestApp({ AUTH_FAILURE_LIMIT: String(LIMIT), AUTH_FAILURE_WINDOW_SECONDS: String(WINDOW_SECONDS) });
});

afterAll(async () => {
  await t?.close();
});

function from(remoteAddress: string, headers: Record<string, string> = {}, url = '/api/devices', method: InjectOptions['method'] = 'GET'): Promise<LightMyRequestResponse> {
  return t.app.inject({ method, url, remoteAddress, headers });
}

function expectBlocked(response: LightMyRequestResponse, label: string): void {
  expect(response.statusCode, `${label}: ${response.body}`).toBe(429);
  expect(response.json(), label).toEqual({
    statusCode: 429,
    code: 'too_many_failed_attempts',
    error: 'Too Many Requests',
    message: expect.any(String),
  });
  const retryAfter = Number(response.headers['retry-after']);
  expect(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= WINDOW_SECONDS, `${label}: retry-after ${retryAfter}`).toBe(true);
  expect(response.headers['www-authenticate'], label).toBeUndefined();
}

async function fail(remoteAddress: string, times: number, headers: Record<string, string> = WRONG): Promise<void> {
  for (let i = 0; i < times; i += 1) {
    const response = await from(remoteAddress, headers);
    expect(response.statusCode, `failure ${i + 1} from ${remoteAddress}: ${response.body}`).toBe(401);
  }
}

describe('failed authentication limits', () => {
  it('refuses an address with 429 after too many wrong keys, whatever it sends next without a valid key', async () => {
    const ip = '10.0.0.1';
    await fail(ip, LIMIT);
    expectBlocked(await from(ip, WRONG), 'wrong Bearer key');
    expectBlocked(await from(ip, { authorization: `Basic ${Buffer.from('a:nope').toString('base64')}` }), 'wrong Basic password');
    expectBlocked(await from(ip), 'no key');
    expectBlocked(await from(ip, WRONG, '/api/tasks', 'POST'), 'another route');
    expectBlocked(await from(ip, WRONG, '/metrics'), '/metrics');
    expectBlocked(await from(ip, WRONG, '/admin/queues'), '/admin/queues');
  });

  it('never blocks a valid key, even from a refused address', async () => {
    const ip = '10.0.0.2';
    await fail(ip, LIMIT);
    expectBlocked(await from(ip, WRONG), 'wrong key');
    for (const authorization of [`Bearer ${TEST_API_KEY}`, `Basic ${Buffer.from(`x:${TEST_API_KEY}`).toString('base64')}`]) {
      const response = await from(ip, { authorization });
      expect(response.statusCode, response.body).toBe(200);
    }
    expectBlocked(await from(ip, WRONG), 'wrong key after a valid one');
  });

  it('counts per address: another address is not affected', async () => {
    await fail('10.0.0.3', LIMIT);
    expectBlocked(await from('10.0.0.3', WRONG), 'the guessing address');
    expect((await from('10.0.0.4', WRONG)).statusCode).toBe(401);
  });

  it('lets the address try again once its window has passed', async () => {
    const ip = '10.0.0.5';
    await fail(ip, LIMIT);
    const blocked = await from(ip, WRONG);
    expectBlocked(blocked, 'within the window');
    await new Promise((resolve) => setTimeout(resolve, WINDOW_SECONDS * 1000 + 100));
    expect((await from(ip, WRONG)).statusCode).toBe(401);
    expect((await from(ip)).statusCode).toBe(401);
  });

  it('does not count requests that present no credentials at all', async () => {
    const ip = '10.0.0.6';
    await fail(ip, LIMIT * 4, {});
    expect((await from(ip, WRONG)).statusCode).toBe(401);
  });

  it('cannot be dodged with X-Forwarded-For: the connection address counts', async () => {
    const ip = '10.0.0.7';
    for (let i = 0; i < LIMIT; i += 1) {
      const response = await from(ip, { ...WRONG, 'x-forwarded-for': `192.0.2.${i + 1}` });
      expect(response.statusCode).toBe(401);
    }
    expectBlocked(await from(ip, { ...WRONG, 'x-forwarded-for': '192.0.2.200' }), 'with a fresh X-Forwarded-For');
  });

  it('counts an IPv6 client by its /64 prefix', async () => {
    for (let i = 1; i <= LIMIT; i += 1) {
      expect((await from(`2001:db8:1:2::${i}`, WRONG)).statusCode).toBe(401);
    }
    expectBlocked(await from('2001:db8:1:2:ffff::99', WRONG), 'same /64');
    expect((await from('2001:db8:1:3::1', WRONG)).statusCode).toBe(401);
  });

  it('answers a refusal on bull-board in the API error shape too', async () => {
    const response = await from('10.0.0.9', WRONG, '/admin/queues');
    expect(response.statusCode).toBe(401);
    expect(response.json()).toEqual({ statusCode: 401, code: 'unauthorized', error: 'Unauthorized', message: expect.any(String) });
    expect(String(response.headers['www-authenticate'])).toMatch(/^Basic\b/);
  });

  it('keeps open routes open for a refused address', async () => {
    const ip = '10.0.0.8';
    await fail(ip, LIMIT);
    expectBlocked(await from(ip, WRONG), 'wrong key');
    expect((await from(ip, WRONG, '/health/live')).statusCode).toBe(200);
    expect((await from(ip, {}, '/docs/json')).statusCode).toBe(200);
  });
});

describe('failed authentication limits: defaults', () => {
  it('the app refuses the 21st wrong key within a minute by default', async () => {
    const defaults = await buildTestApp({ AUTH_FAILURE_LIMIT: undefined });
    try {
      expect(defaults.config.authFailureLimit).toBe(20);
      expect(defaults.config.authFailureWindowSeconds).toBe(60);
      for (let i = 0; i < 20; i += 1) {
        expect((await defaults.app.inject({ method: 'GET', url: '/api/devices', headers: WRONG, remoteAddress: '10.1.0.1' })).statusCode).toBe(401);
      }
      const refused = await defaults.app.inject({ method: 'GET', url: '/api/devices', headers: WRONG, remoteAddress: '10.1.0.1' });
      expect(refused.statusCode).toBe(429);
      expect(Number(refused.headers['retry-after'])).toBeGreaterThan(55);
    } finally {
      await defaults.close();
    }
  });
});
