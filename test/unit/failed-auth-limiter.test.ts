// The failed-authentication limiter: fixed windows per client, refusal once the limit is reached,
// forgetting after the window, a bounded memory, and the address a client is counted under.
import { describe, expect, it } from 'vitest';
import { FailedAuthLimiter, clientAddressKey } from '../../api/plugins/failed-auth-limiter.ts';

function clock(start = 1_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => { now += ms; } };
}

describe('FailedAuthLimiter', () => {
  it('refuses once maxFailures are reached, with the seconds left in the window', () => {
    const time = clock();
    const limiter = new FailedAuthLimiter({ maxFailures: 3, windowSeconds: 60 }, time.now);
    for (let i = 0; i < 3; i += 1) {
      expect(limiter.retryAfterSeconds('a')).toBe(0);
      limiter.recordFailure('a');
    }
    expect(limiter.retryAfterSeconds('a')).toBe(60);
    time.advance(59_500);
    expect(limiter.retryAfterSeconds('a')).toBe(1);
    expect(limiter.retryAfterSeconds('b')).toBe(0);
    time.advance(500);
    expect(limiter.retryAfterSeconds('a')).toBe(0);
    expect(limiter.size).toBe(0);
  });

  it('a window starts with the first failure and is not extended by later ones', () => {
    const time = clock();
    const limiter = new FailedAuthLimiter({ maxFailures: 2, windowSeconds: 10 }, time.now);
    limiter.recordFailure('a');
    time.advance(9_000);
    limiter.recordFailure('a');
    expect(limiter.retryAfterSeconds('a')).toBe(1);
    time.advance(1_000);
    limiter.recordFailure('a');
    expect(limiter.retryAfterSeconds('a')).toBe(0);
  });

  it('maxFailures 0 turns it off', () => {
    const limiter = new FailedAuthLimiter({ maxFailures: 0, windowSeconds: 60 });
    for (let i = 0; i < 1000; i += 1) limiter.recordFailure('a');
    expect(limiter.retryAfterSeconds('a')).toBe(0);
    expect(limiter.size).toBe(0);
  });

  it('remembers at most maxClients, forgetting expired windows first, then the oldest', () => {
    const time = clock();
    const limiter = new FailedAuthLimiter({ maxFailures: 1, windowSeconds: 10, maxClients: 100 }, time.now);
    for (let i = 0; i < 10_000; i += 1) {
      limiter.recordFailure(`client-${i}`);
      expect(limiter.size).toBeLessThanOrEqual(100);
    }
    // the newest are still refused, the oldest forgotten
    expect(limiter.retryAfterSeconds('client-9999')).toBeGreaterThan(0);
    expect(limiter.retryAfterSeconds('client-0')).toBe(0);

    time.advance(10_000);
    limiter.recordFailure('late');
    expect(limiter.size).toBe(1);
  });
});

describe('clientAddressKey', () => {
  it.each([
    ['10.1.2.3', '10.1.2.3'],
    ['::ffff:10.1.2.3', '10.1.2.3'],
    ['::FFFF:10.1.2.3', '10.1.2.3'],
    ['2001:db8:1:2::1', '2001:db8:1:2::/64'],
    ['2001:0db8:0001:0002:aaaa:bbbb:cccc:dddd', '2001:db8:1:2::/64'],
    ['2001:db8::1', '2001:db8:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    [undefined, 'unknown'],
    ['', 'unknown'],
  ])('%s → %s', (address, key) => {
    expect(clientAddressKey(address)).toBe(key);
  });
});
