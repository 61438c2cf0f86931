// The micro-batcher: what is run together, when, with how many batches at once, and who gets
// which result or error. Fake timers make the wait window exact.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Batcher } from '../../core/batcher.ts';

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A runner whose batches finish only when the test says so. */
function controlledRunner() {
  const calls: Array<{ items: number[]; done: Deferred<string[]> }> = [];
  let running = 0;
  let maxRunning = 0;
  const run = (items: number[]): Promise<string[]> => {
    running += 1;
    maxRunning = Math.max(maxRunning, running);
    const done = deferred<string[]>();
    calls.push({ items: [...items], done });
    return done.promise.finally(() => {
      running -= 1;
    });
  };
  return {
    run,
    calls,
    batches: () => calls.map((c) => c.items),
    finish: (index: number) => calls[index]!.done.resolve(calls[index]!.items.map((i) => `r${i}`)),
    fail: (index: number, error: unknown) => calls[index]!.done.reject(error),
    get running() {
      return running;
    },
    get maxRunning() {
      return maxRunning;
    },
  };
}

/** Settles every promise chain waiting on already-settled promises. */
async function settle(): Promise<void> {
  await vi.advanceTimersByTimeAsync(0);
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  vi.useRealTimers();
});

describe('Batcher', () => {
  it('runs items added within the wait window together, once the window closes', async () => {
    const runs: number[][] = [];
    const batcher = new Batcher<number, number>(async (items) => {
      runs.push([...items]);
      return items.map((i) => i * 10);
    }, { maxItems: 100, maxWaitMs: 50 });

    const a = batcher.add(1);
    await vi.advanceTimersByTimeAsync(20);
    const b = batcher.add(2);
    await vi.advanceTimersByTimeAsync(20);
    const c = batcher.add(3);
    expect(batcher.size).toBe(3);
    await vi.advanceTimersByTimeAsync(9);
    expect(runs).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(runs).toEqual([[1, 2, 3]]);
    expect(batcher.size).toBe(0);
    await expect(Promise.all([a, b, c])).resolves.toEqual([10, 20, 30]);
  });

  it('items after the window closed go into the next batch, with a window of their own', async () => {
    const runs: number[][] = [];
    const batcher = new Batcher<number, number>(async (items) => {
      runs.push([...items]);
      return items;
    }, { maxItems: 100, maxWaitMs: 50 });

    const first = batcher.add(1);
    await vi.advanceTimersByTimeAsync(50);
    const second = batcher.add(2);
    await vi.advanceTimersByTimeAsync(49);
    expect(runs).toEqual([[1]]);
    await vi.advanceTimersByTimeAsync(1);
    expect(runs).toEqual([[1], [2]]);
    await expect(first).resolves.toBe(1);
    await expect(second).resolves.toBe(2);
  });

  it('maxItems flushes at once, without waiting for the window', async () => {
    const runs: number[][] = [];
    const batcher = new Batcher<number, number>(async (items) => {
      runs.push([...items]);
      return items;
    }, { maxItems: 3, maxWaitMs: 10_000 });

    const results = [batcher.add(1), batcher.add(2), batcher.add(3)];
    // flushed synchronously by the third add: no time has passed
    expect(runs).toEqual([[1, 2, 3]]);
    expect(batcher.size).toBe(0);
    await expect(Promise.all(results)).resolves.toEqual([1, 2, 3]);

    // the fourth item starts a new window
    const fourth = batcher.add(4);
    await vi.advanceTimersByTimeAsync(9_999);
    expect(runs).toEqual([[1, 2, 3]]);
    await vi.advanceTimersByTimeAsync(1);
    expect(runs).toEqual([[1, 2, 3], [4]]);
    await expect(fourth).resolves.toBe(4);
  });

  it('a full batch cancels the pending window timer', async () => {
    const runs: number[][] = [];
    const batcher = new Batcher<number, number>(async (items) => {
      runs.push([...items]);
      return items;
    }, { maxItems: 2, maxWaitMs: 100 });
    const results = [batcher.add(1), batcher.add(2)];
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(500);
    expect(runs).toEqual([[1, 2]]);
    await expect(Promise.all(results)).resolves.toEqual([1, 2]);
  });

  it('maxItems 1 runs every item alone', async () => {
    const runs: string[][] = [];
    const batcher = new Batcher<string, string>(async (items) => {
      runs.push([...items]);
      return items.map((s) => s.toUpperCase());
    }, { maxItems: 1, maxWaitMs: 1_000, concurrency: 3 });
    const results = ['a', 'b', 'c'].map((s) => batcher.add(s));
    expect(runs).toEqual([['a'], ['b'], ['c']]);
    await expect(Promise.all(results)).resolves.toEqual(['A', 'B', 'C']);
  });

  it('each caller gets the result at its own index', async () => {
    const batcher = new Batcher<string, string>(async (items) => items.map((item, index) => `${index}:${item}`), { maxItems: 10, maxWaitMs: 5 });
    const results = ['x', 'y', 'z', 'x'].map((item) => batcher.add(item));
    await vi.advanceTimersByTimeAsync(5);
    await expect(Promise.all(results)).resolves.toEqual(['0:x', '1:y', '2:z', '3:x']);
  });

  it('a failing run rejects exactly the callers of that batch', async () => {
    const runner = controlledRunner();
    const batcher = new Batcher<number, string>(runner.run, { maxItems: 2, maxWaitMs: 10, concurrency: 2 });
    const outcomes: Array<{ item: number; value?: string; error?: unknown }> = [];
    const track = (item: number) =>
      batcher.add(item).then(
        (value) => outcomes.push({ item, value }),
        (error: unknown) => outcomes.push({ item, error }),
      );

    const settled = Promise.all([1, 2, 3, 4].map(track));
    expect(runner.batches()).toEqual([
      [1, 2],
      [3, 4],
    ]);
    const boom = new Error('database unreachable');
    runner.fail(0, boom);
    runner.finish(1);
    await settled;
    expect(outcomes.sort((x, y) => x.item - y.item)).toEqual([
      { item: 1, error: boom },
      { item: 2, error: boom },
      { item: 3, value: 'r3' },
      { item: 4, value: 'r4' },
    ]);
  });

  it('keeps working after a failed batch', async () => {
    let calls = 0;
    const batcher = new Batcher<number, number>(async (items) => {
      calls += 1;
      if (calls === 1) throw new Error('first fails');
      return items.map((i) => -i);
    }, { maxItems: 5, maxWaitMs: 10 });
    const first = batcher.add(1);
    const firstSettled = expect(first).rejects.toThrow('first fails');
    await vi.advanceTimersByTimeAsync(10);
    await firstSettled;
    const second = batcher.add(2);
    await vi.advanceTimersByTimeAsync(10);
    await expect(second).resolves.toBe(-2);
    expect(calls).toBe(2);
  });

  it('concurrency 1 (the default): the next batch waits for the running one, then runs at once', async () => {
    const runner = controlledRunner();
    const batcher = new Batcher<number, string>(runner.run, { maxItems: 2, maxWaitMs: 10 });
    const results = [1, 2, 3, 4, 5].map((i) => batcher.add(i));
    expect(runner.batches()).toEqual([[1, 2]]);
    expect(batcher.size).toBe(3);
    // the window passes, but the only slot is busy
    await vi.advanceTimersByTimeAsync(100);
    expect(runner.batches()).toEqual([[1, 2]]);

    runner.finish(0);
    await settle();
    expect(runner.batches()).toEqual([[1, 2], [3, 4]]);
    expect(batcher.size).toBe(1);
    runner.finish(1);
    await settle();
    expect(runner.batches()).toEqual([[1, 2], [3, 4], [5]]);
    runner.finish(2);
    await expect(Promise.all(results)).resolves.toEqual(['r1', 'r2', 'r3', 'r4', 'r5']);
    expect(runner.maxRunning).toBe(1);
  });

  it('concurrency 2: two batches run at once, never three', async () => {
    const runner = controlledRunner();
    const batcher = new Batcher<number, string>(runner.run, { maxItems: 2, maxWaitMs: 10, concurrency: 2 });
    const results = [1, 2, 3, 4, 5, 6, 7].map((i) => batcher.add(i));
    expect(runner.batches()).toEqual([[1, 2], [3, 4]]);
    expect(runner.running).toBe(2);
    await vi.advanceTimersByTimeAsync(100);
    expect(runner.calls).toHaveLength(2);
    expect(batcher.size).toBe(3);

    runner.finish(1);
    await settle();
    expect(runner.batches()).toEqual([[1, 2], [3, 4], [5, 6]]);
    expect(runner.running).toBe(2);

    runner.finish(0);
    await settle();
    expect(runner.batches()).toEqual([[1, 2], [3, 4], [5, 6], [7]]);
    runner.finish(2);
    runner.finish(3);
    await expect(Promise.all(results)).resolves.toEqual(['r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7']);
    expect(runner.maxRunning).toBe(2);
    expect(runner.running).toBe(0);
  });

  it('under a burst, no item is lost or run twice and concurrency stays within its bound', async () => {
    vi.useRealTimers();
    const seen: number[] = [];
    let running = 0;
    let maxRunning = 0;
    const batcher = new Batcher<number, number>(async (items) => {
      running += 1;
      maxRunning = Math.max(maxRunning, running);
      await new Promise((resolve) => setTimeout(resolve, 2));
      seen.push(...items);
      running -= 1;
      return items.map((i) => i + 1);
    }, { maxItems: 7, maxWaitMs: 1, concurrency: 3 });
    const items = Array.from({ length: 200 }, (_, i) => i);
    const results = await Promise.all(items.map((i) => batcher.add(i)));
    expect(results).toEqual(items.map((i) => i + 1));
    expect(seen.sort((a, b) => a - b)).toEqual(items);
    expect(maxRunning).toBeLessThanOrEqual(3);
    expect(maxRunning).toBeGreaterThanOrEqual(2);
  });
});
