// Which database errors are waited out (db/transient-errors.ts), and how a bounded wait ends: the
// last transient error as a typed DatabaseUnavailableError; any other error at once, as it is.
import { describe, expect, it } from 'vitest';
import { DatabaseUnavailableError, isTransientDbError, retryTransient } from '../../db/transient-errors.ts';

const refused = () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });

describe('retryTransient', () => {
  it('waits out a database that comes back', async () => {
    let calls = 0;
    const value = await retryTransient(async () => {
      calls += 1;
      if (calls < 3) throw refused();
      return 'read';
    }, { maxRetryTime: 5_000 });
    expect(value).toBe('read');
    expect(calls).toBe(3);
  });

  it('ends a wait that runs out with DatabaseUnavailableError, its cause the last error', async () => {
    const error = await retryTransient(async () => {
      throw refused();
    }, { maxRetryTime: 100 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DatabaseUnavailableError);
    expect(error).toMatchObject({ code: 'dependency_unavailable', statusCode: 503, cause: { code: 'ECONNREFUSED' } });
    expect((error as Error).message).toMatch(/^PostgreSQL unavailable for 0 s: connect ECONNREFUSED/);
    expect(isTransientDbError(error)).toBe(true);
  });

  it('throws any other error at once, as it is', async () => {
    const violation = Object.assign(new Error('duplicate key value violates unique constraint'), { code: '23505' });
    let calls = 0;
    await expect(retryTransient(async () => {
      calls += 1;
      throw violation;
    }, { maxRetryTime: 5_000 })).rejects.toBe(violation);
    expect(calls).toBe(1);
  });
});
