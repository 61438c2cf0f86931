// Console sessions (docs/operations.md#the-console): a signed, stateless cookie naming the key by its
// hash (never the key), a session id and an expiry, so any API process with the same secret accepts
// it. Sign-out ends a session everywhere by noting its id in Redis until it would have expired.
// Forms carry a CSRF token derived from the session id.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { RedisClient } from '../../services/redis-client.ts';

export const SESSION_COOKIE = 'otter_session';

export interface Session {
  /** apiKeyFingerprint of the key signed in with. */
  keyHash: string;
  id: string;
  /** Seconds since the epoch. */
  expires: number;
}

export interface SessionStoreOptions {
  secret: string;
  ttlSeconds: number;
  /** The Redis connection that remembers signed-out sessions, and the key prefix there. */
  redis: () => Promise<RedisClient>;
  prefix: string;
  now?: () => number;
}

function mac(secret: string, purpose: string, value: string): Buffer {
  return createHmac('sha256', secret).update(purpose).update('\0').update(value).digest();
}

function sameBytes(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

export class ConsoleSessions {
  private readonly options: SessionStoreOptions;

  constructor(options: SessionStoreOptions) {
    this.options = options;
  }

  private nowSeconds(): number {
    return Math.floor((this.options.now?.() ?? Date.now()) / 1000);
  }

  /** A new session for the key with this hash, and the cookie value that carries it. */
  create(keyHash: string): { session: Session; cookie: string } {
    const session = { keyHash, id: randomBytes(16).toString('base64url'), expires: this.nowSeconds() + this.options.ttlSeconds };
    const body = `v1.${session.keyHash}.${session.id}.${session.expires}`;
    return { session, cookie: `${body}.${mac(this.options.secret, 'session', body).toString('base64url')}` };
  }

  /** The session a cookie carries, if it is ours, intact, unexpired and not signed out. */
  async read(cookie: string | undefined): Promise<Session | null> {
    if (!cookie || cookie.length > 512) return null;
    const parts = cookie.split('.');
    if (parts.length !== 5 || parts[0] !== 'v1') return null;
    const body = parts.slice(0, 4).join('.');
    const signature = Buffer.from(parts[4]!, 'base64url');
    if (!sameBytes(signature, mac(this.options.secret, 'session', body))) return null;
    const expires = Number(parts[3]);
    if (!Number.isSafeInteger(expires) || expires <= this.nowSeconds()) return null;
    const session = { keyHash: parts[1]!, id: parts[2]!, expires };
    const redis = await this.options.redis();
    if ((await redis.exists(this.signedOutKey(session.id))) === 1) return null;
    return session;
  }

  /** Ends the session in every process: remembered until it would have expired anyway. */
  async signOut(session: Session): Promise<void> {
    const remaining = Math.max(1, session.expires - this.nowSeconds());
    const redis = await this.options.redis();
    await redis.set(this.signedOutKey(session.id), '1', 'EX', remaining);
  }

  /** The token a form of this session carries; a form from elsewhere cannot know it. */
  csrfToken(session: Session): string {
    return mac(this.options.secret, 'csrf', session.id).toString('base64url');
  }

  checkCsrf(session: Session, token: unknown): boolean {
    if (typeof token !== 'string' || token.length > 100) return false;
    return sameBytes(Buffer.from(token, 'base64url'), mac(this.options.secret, 'csrf', session.id));
  }

  private signedOutKey(id: string): string {
    return `${this.options.prefix}:console:signed-out:${id}`;
  }
}
