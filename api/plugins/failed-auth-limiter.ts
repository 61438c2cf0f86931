// Failed authentication attempts counted per client address in fixed windows: a client that
// keeps guessing keys is refused with 429 until its window passes. Memory-bounded.

export interface FailedAuthLimits {
  /** Failed attempts allowed per window; the next request without a valid key is refused. 0 turns the limit off. */
  maxFailures: number;
  windowSeconds: number;
  /** Clients remembered at most; the oldest windows are forgotten first. */
  maxClients?: number;
}

export const DEFAULT_FAILED_AUTH_LIMITS: Required<FailedAuthLimits> = { maxFailures: 20, windowSeconds: 60, maxClients: 10_000 };

interface Window {
  failures: number;
  startedAt: number;
}

export class FailedAuthLimiter {
  private readonly maxFailures: number;
  private readonly windowMs: number;
  private readonly maxClients: number;
  private readonly now: () => number;
  // insertion order is the order windows started in: a new window is always appended
  private readonly windows = new Map<string, Window>();

  constructor(limits: FailedAuthLimits, now: () => number = Date.now) {
    this.maxFailures = limits.maxFailures;
    this.windowMs = limits.windowSeconds * 1000;
    this.maxClients = Math.max(1, limits.maxClients ?? DEFAULT_FAILED_AUTH_LIMITS.maxClients);
    this.now = now;
  }

  /** Clients currently remembered. */
  get size(): number {
    return this.windows.size;
  }

  /** Seconds until the client may try again; 0 when it is not refused. */
  retryAfterSeconds(client: string): number {
    if (this.maxFailures <= 0) return 0;
    const now = this.now();
    const window = this.current(client, now);
    if (!window || window.failures < this.maxFailures) return 0;
    return Math.max(1, Math.ceil((window.startedAt + this.windowMs - now) / 1000));
  }

  recordFailure(client: string): void {
    if (this.maxFailures <= 0) return;
    const now = this.now();
    let window = this.current(client, now);
    if (!window) {
      this.makeRoom(now);
      window = { failures: 0, startedAt: now };
      this.windows.set(client, window);
    }
    window.failures += 1;
  }

  private current(client: string, now: number): Window | undefined {
    const window = this.windows.get(client);
    if (window && now - window.startedAt >= this.windowMs) {
      this.windows.delete(client);
      return undefined;
    }
    return window;
  }

  private makeRoom(now: number): void {
    for (const [client, window] of this.windows) {
      if (this.windows.size < this.maxClients && now - window.startedAt < this.windowMs) return;
      this.windows.delete(client);
    }
  }
}

/**
 * The address failures are counted against: IPv4 as is (also when mapped into IPv6), IPv6 by its
 * /64 prefix, since one client usually holds a whole /64.
 */
export function clientAddressKey(address: string | undefined): string {
  if (!address) return 'unknown';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!address.includes(':')) return address;
  const bare = address.replace(/%.*$/, '').toLowerCase();
  const [head = '', tail] = bare.split('::');
  const headGroups = head ? head.split(':') : [];
  const tailGroups = tail ? tail.split(':') : [];
  const groups = tail === undefined
    ? headGroups
    : [...headGroups, ...Array<string>(Math.max(0, 8 - headGroups.length - tailGroups.length)).fill('0'), ...tailGroups];
  const prefix = groups.slice(0, 4).map((group) => (Number.parseInt(group, 16) || 0).toString(16));
  return `${prefix.join(':')}::/64`;
}
