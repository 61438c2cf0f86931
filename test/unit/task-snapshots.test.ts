// TaskSnapshots: polls are answered from a recent read, refreshed in the background; a write
// through the process (clear) makes the next poll read again.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { TaskSnapshots } from '../../services/task-snapshots.ts';
import type { TaskRow } from '../../db/database.ts';

const row = (state: string) => ({ id: 't1', state }) as unknown as TaskRow;

function loader() {
  let state = 'running';
  const load = vi.fn(async () => row(state));
  return { load, set: (next: string) => (state = next) };
}

describe('TaskSnapshots', () => {
  afterEach(() => vi.useRealTimers());

  it('reads once for polls within refreshAfterMs', async () => {
    vi.useFakeTimers({ now: 0 });
    const { load } = loader();
    const snapshots = new TaskSnapshots(load, { refreshAfterMs: 50, maxAgeMs: 250 });
    await snapshots.get('t1');
    vi.setSystemTime(40);
    await snapshots.get('t1');
    expect(load).toHaveBeenCalledTimes(1);
  });

  it('answers from the snapshot and refreshes it in the background once it is older than refreshAfterMs', async () => {
    vi.useFakeTimers({ now: 0 });
    const { load, set } = loader();
    const snapshots = new TaskSnapshots(load, { refreshAfterMs: 50, maxAgeMs: 250 });
    await snapshots.get('t1');
    set('paused');
    vi.setSystemTime(100);
    expect((await snapshots.get('t1'))?.state).toBe('running');
    await vi.waitFor(() => expect(load).toHaveBeenCalledTimes(2));
    await Promise.resolve();
    expect((await snapshots.get('t1'))?.state).toBe('paused');
  });

  it('never answers with a read older than maxAgeMs', async () => {
    vi.useFakeTimers({ now: 0 });
    const { load, set } = loader();
    const snapshots = new TaskSnapshots(load, { refreshAfterMs: 50, maxAgeMs: 250 });
    await snapshots.get('t1');
    set('completed');
    vi.setSystemTime(300);
    expect((await snapshots.get('t1'))?.state).toBe('completed');
  });

  it('reads again after clear(), and a read begun before clear() is not kept', async () => {
    const { load, set } = loader();
    const snapshots = new TaskSnapshots(load, { refreshAfterMs: 10_000, maxAgeMs: 20_000 });
    const before = snapshots.get('t1');
    snapshots.clear();
    await before;
    set('paused');
    expect((await snapshots.get('t1'))?.state).toBe('paused');
    expect(load).toHaveBeenCalledTimes(2);
  });

  it('shares one read among concurrent polls, and a failed read is not remembered', async () => {
    let fail = true;
    const load = vi.fn(async () => {
      if (fail) throw new Error('db away');
      return row('running');
    });
    const snapshots = new TaskSnapshots(load);
    const results = await Promise.allSettled([snapshots.get('t1'), snapshots.get('t1')]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect(load).toHaveBeenCalledTimes(1);
    fail = false;
    expect((await snapshots.get('t1'))?.state).toBe('running');
  });

  it('keeps at most maxEntries tasks, dropping the least recently read', async () => {
    const load = vi.fn(async (id: string) => ({ id, state: 'running' }) as unknown as TaskRow);
    const snapshots = new TaskSnapshots(load, { refreshAfterMs: 10_000, maxAgeMs: 20_000, maxEntries: 2 });
    await snapshots.get('a');
    await snapshots.get('b');
    await snapshots.get('a');
    await snapshots.get('c');
    load.mockClear();
    await snapshots.get('a');
    await snapshots.get('b');
    expect(load.mock.calls.map((call) => call[0])).toEqual(['b']);
  });
});
