// The dispatcher's rounds without services: which tasks it visits, the budget it asks for from
// each task's rollout limits and the process's backlog, how claimed records become jobs, and the
// pace (busy / held back / idle) that decides when the next round runs. The store, queue, rate
// limiter and direct path are fakes that record what the dispatcher asked of them.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Dispatcher, type DirectSendPath, type DispatcherOptions, type DispatchStore } from '../../workers/dispatcher.ts';
import type { ClaimedRecord, DispatchableTask, InFlight } from '../../db/queries/dispatch.ts';
import { upgradeJob, upgradeJobId, type UpgradeJob, type UpgradeJobData } from '../../core/jobs.ts';
import type { RolloutLimits } from '../../core/tasks.ts';

interface BudgetAsked {
  taskId: string;
  inFlight: InFlight;
  budget: number;
}

/** Tasks with a number of dispatchable records each; a claim takes as many as the budget allows. */
class FakeStore implements DispatchStore {
  readonly tasks: DispatchableTask[] = [];
  /** Dispatchable records left per task. */
  readonly waiting = new Map<string, number>();
  /** What claimRecordsForDispatch would count under the task's lock. */
  readonly inFlight = new Map<string, InFlight>();
  readonly budgets: BudgetAsked[] = [];
  readonly claims: string[] = [];
  rounds = 0;
  /** While set, a round's read waits for it (a slow database). */
  gate: Promise<void> | undefined;
  failNext: Error | undefined;
  private nextId = 1;

  addTask(
    id: string,
    waiting: number,
    rollout: RolloutLimits = {},
    inFlight: InFlight = { processing: 0, queuedUnsent: 0 },
    extra: Partial<Pick<DispatchableTask, 'success' | 'windows'>> = {},
  ): void {
    this.tasks.push({ id, rollout, processing: inFlight.processing, success: 0, windows: null, ...extra });
    this.waiting.set(id, waiting);
    this.inFlight.set(id, inFlight);
  }

  async findDispatchableTasks(): Promise<DispatchableTask[]> {
    this.rounds += 1;
    if (this.gate) await this.gate;
    if (this.failNext) {
      const error = this.failNext;
      this.failNext = undefined;
      throw error;
    }
    return this.tasks.filter((task) => (this.waiting.get(task.id) ?? 0) > 0);
  }

  async claim(taskId: string, budget: (inFlight: InFlight) => Promise<number>): Promise<ClaimedRecord[]> {
    this.claims.push(taskId);
    const inFlight = this.inFlight.get(taskId)!;
    // as lockedBudget does: the budget is asked under the lock, rounded down
    const allowed = Math.floor(await budget(inFlight));
    this.budgets.push({ taskId, inFlight, budget: allowed });
    const count = Math.max(0, Math.min(allowed, this.waiting.get(taskId) ?? 0));
    this.waiting.set(taskId, (this.waiting.get(taskId) ?? 0) - count);
    return Array.from({ length: count }, () => {
      const id = this.nextId++;
      return { id, deviceId: `dev-${id}`, dispatches: 1 + (id % 3) };
    });
  }
}

class FakeQueue {
  readonly batches: UpgradeJob[][] = [];
  async addBulk(jobs: UpgradeJob[]) {
    this.batches.push(jobs);
    return [];
  }
  get jobs(): UpgradeJob[] {
    return this.batches.flat();
  }
}

class FakeRateLimiter {
  /** Sends each rate-limited task may still make in the window. */
  readonly room = new Map<string, number>();
  readonly asked: Array<{ taskId: string; maxPerMinute: number | undefined }> = [];
  async available(taskId: string, maxPerMinute: number | undefined): Promise<number> {
    this.asked.push({ taskId, maxPerMinute });
    return this.room.get(taskId) ?? Number.POSITIVE_INFINITY;
  }
}

/** The direct path: sends as many as the budget allows, from the store's waiting records. */
function fakeDirectPath(store: FakeStore, perRound: number, behind = 0) {
  const calls: BudgetAsked[] = [];
  let backlogReads = 0;
  const path: DirectSendPath & { calls: BudgetAsked[]; backlog: () => Promise<number>; behind: number } = {
    calls,
    behind,
    perRound,
    backlog: async () => {
      backlogReads += 1;
      return path.behind;
    },
    sends: {
      dispatch: async (taskId, budget) => {
        const inFlight = store.inFlight.get(taskId)!;
        const allowed = Math.floor(await budget(inFlight));
        calls.push({ taskId, inFlight, budget: allowed });
        const count = Math.max(0, Math.min(allowed, store.waiting.get(taskId) ?? 0));
        store.waiting.set(taskId, (store.waiting.get(taskId) ?? 0) - count);
        return count;
      },
    },
  };
  return Object.assign(path, { backlogReads: () => backlogReads });
}

function fakeLogger() {
  return { warn: vi.fn(), debug: vi.fn() };
}

function setup(options: DispatcherOptions = {}, direct?: ReturnType<typeof fakeDirectPath>, store = new FakeStore()) {
  const queue = new FakeQueue();
  const rateLimiter = new FakeRateLimiter();
  const logger = fakeLogger();
  const dispatcher = new Dispatcher(store, queue, rateLimiter, logger, { intervalMs: 250, jitter: () => 0.5, ...options }, direct);
  return { store, queue, rateLimiter, logger, dispatcher };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('Dispatcher round: the budget of a queued task', () => {
  it('without limits, a task gets its round share (perTaskPerRound)', async () => {
    const { store, queue, dispatcher } = setup({ perTaskPerRound: 100, maxBacklog: 5_000 });
    store.addTask('t1', 1_000, {}, { processing: 400, queuedUnsent: 0 });
    expect(await dispatcher.round()).toBe('busy');
    expect(store.budgets).toEqual([{ taskId: 't1', inFlight: { processing: 400, queuedUnsent: 0 }, budget: 100 }]);
    expect(queue.jobs).toHaveLength(100);
  });

  it('maxBacklog bounds queued-but-unsent records: the room left, never the share', async () => {
    const { store, dispatcher } = setup({ perTaskPerRound: 100, maxBacklog: 300 });
    store.addTask('t1', 1_000, {}, { processing: 0, queuedUnsent: 250 });
    await dispatcher.round();
    expect(store.budgets[0]!.budget).toBe(50);

    store.inFlight.set('t1', { processing: 0, queuedUnsent: 300 });
    expect(await dispatcher.round()).toBe('idle');
    expect(store.budgets[1]!.budget).toBe(0);

    // past the cap (another process queued meanwhile) the budget is negative: nothing is claimed
    store.inFlight.set('t1', { processing: 0, queuedUnsent: 320 });
    await dispatcher.round();
    expect(store.budgets[2]!.budget).toBe(-20);
    expect(store.waiting.get('t1')).toBe(1_000 - 50);
  });

  it('maxInFlight counts processing and queued records', async () => {
    const { store, rateLimiter, dispatcher } = setup({ perTaskPerRound: 100 });
    store.addTask('t1', 1_000, { maxInFlight: 10 }, { processing: 4, queuedUnsent: 3 });
    expect(await dispatcher.round()).toBe('idle');
    expect(store.budgets[0]!.budget).toBe(3);
    // no rate limit: the limiter is never asked
    expect(rateLimiter.asked).toEqual([]);

    store.inFlight.set('t1', { processing: 9, queuedUnsent: 1 });
    await dispatcher.round();
    expect(store.budgets[1]!.budget).toBe(0);
  });

  it('maxPerMinute: the window\'s room less the records already queued for it', async () => {
    const { store, rateLimiter, dispatcher } = setup({ perTaskPerRound: 100 });
    store.addTask('t1', 1_000, { maxPerMinute: 60 }, { processing: 0, queuedUnsent: 5 });
    rateLimiter.room.set('t1', 20);
    await dispatcher.round();
    expect(rateLimiter.asked).toEqual([{ taskId: 't1', maxPerMinute: 60 }]);
    expect(store.budgets[0]!.budget).toBe(15);
  });

  it('a ramp: the rate asked grows by its factor for every everySucceeded successes, capped by maxPerMinute; its task takes the job path', async () => {
    const ramp = { startPerMinute: 60, factor: 2, everySucceeded: 20 };
    const cases = [
      { success: 0, expected: 60 },
      { success: 19, expected: 60 },
      { success: 20, expected: 120 },
      { success: 45, expected: 240 },
      { success: 100, expected: 500 },
    ];
    for (const { success, expected } of cases) {
      const store = new FakeStore();
      const direct = fakeDirectPath(store, 100);
      const { rateLimiter, dispatcher } = setup({ perTaskPerRound: 100 }, direct, store);
      store.addTask('t1', 1_000, { ramp, maxPerMinute: 500 }, undefined, { success });
      await dispatcher.round();
      expect(rateLimiter.asked, `after ${success} successes`).toEqual([{ taskId: 't1', maxPerMinute: expected }]);
      expect(direct.calls).toEqual([]);
      expect(store.claims).toEqual(['t1']);
    }
  });

  it('maintenance windows: nothing is claimed while they are closed, by the injected clock; inside one, as usual', async () => {
    // Mondays 02:00–03:00 in Tokyo (UTC+9): Sunday 17:00–18:00 UTC
    const windows = [{ days: ['mon' as const], start: '02:00', durationMinutes: 60, timeZone: 'Asia/Tokyo' }];
    let now = Date.parse('2026-06-07T16:59:59Z');
    const { store, dispatcher } = setup({ perTaskPerRound: 100, clock: () => now });
    store.addTask('t1', 1_000, {}, undefined, { windows });
    await dispatcher.round();
    expect(store.budgets).toEqual([]);
    now = Date.parse('2026-06-07T17:00:00Z');
    await dispatcher.round();
    expect(store.budgets.map((b) => b.budget)).toEqual([100]);
    now = Date.parse('2026-06-07T18:00:00Z');
    await dispatcher.round();
    expect(store.budgets).toHaveLength(1);
  });

  it('maxPerMinute is not asked once another limit leaves nothing', async () => {
    const { store, rateLimiter, dispatcher } = setup({ perTaskPerRound: 100 });
    store.addTask('t1', 1_000, { maxPerMinute: 60, maxInFlight: 5 }, { processing: 3, queuedUnsent: 2 });
    await dispatcher.round();
    expect(store.budgets[0]!.budget).toBe(0);
    expect(rateLimiter.asked).toEqual([]);
  });

  it('the smallest of share, backlog, in-flight and rate room wins', async () => {
    const cases: Array<{ rollout: RolloutLimits; inFlight: InFlight; room: number; expected: number }> = [
      { rollout: { maxInFlight: 50, maxPerMinute: 600 }, inFlight: { processing: 10, queuedUnsent: 0 }, room: 600, expected: 40 },
      { rollout: { maxInFlight: 500, maxPerMinute: 600 }, inFlight: { processing: 10, queuedUnsent: 0 }, room: 600, expected: 100 },
      { rollout: { maxInFlight: 500, maxPerMinute: 600 }, inFlight: { processing: 10, queuedUnsent: 20 }, room: 30, expected: 10 },
      { rollout: { maxInFlight: 500 }, inFlight: { processing: 0, queuedUnsent: 180 }, room: 0, expected: 20 },
    ];
    for (const { rollout, inFlight, room, expected } of cases) {
      const { store, rateLimiter, dispatcher } = setup({ perTaskPerRound: 100, maxBacklog: 200 });
      store.addTask('t1', 1_000, rollout, inFlight);
      rateLimiter.room.set('t1', room);
      await dispatcher.round();
      expect({ rollout, inFlight, room, budget: store.budgets[0]!.budget }).toEqual({ rollout, inFlight, room, budget: expected });
    }
  });
});

describe('Dispatcher round: the direct path', () => {
  it('a task without a rate limit is sent directly, its share perRound, its backlog room less what the process is behind', async () => {
    const store = new FakeStore();
    const direct = fakeDirectPath(store, 50, 30);
    const { queue, dispatcher } = setup({ perTaskPerRound: 2_000, maxBacklog: 100 }, direct, store);
    store.addTask('t1', 1_000);
    expect(await dispatcher.round()).toBe('busy');
    expect(direct.calls).toEqual([{ taskId: 't1', inFlight: { processing: 0, queuedUnsent: 0 }, budget: 50 }]);
    // sent directly: no claim through the store, no job added by the dispatcher
    expect(store.claims).toEqual([]);
    expect(queue.batches).toEqual([]);
    expect(direct.backlogReads()).toBe(1);
  });

  it('held back: the process\'s own backlog leaves less than a share', async () => {
    const store = new FakeStore();
    const direct = fakeDirectPath(store, 50, 80);
    const { dispatcher } = setup({ maxBacklog: 100 }, direct, store);
    store.addTask('t1', 1_000);
    expect(await dispatcher.round()).toBe('held_back');
    expect(direct.calls[0]!.budget).toBe(20);

    // so far behind that nothing goes: still held back, not idle
    direct.behind = 150;
    expect(await dispatcher.round()).toBe('held_back');
    expect(direct.calls[1]!.budget).toBe(-50);
  });

  it('not held back when the limit is the task\'s own (maxInFlight), nor when the process is not behind', async () => {
    const store = new FakeStore();
    const direct = fakeDirectPath(store, 50, 10);
    const { dispatcher } = setup({ maxBacklog: 100 }, direct, store);
    store.addTask('t1', 1_000, { maxInFlight: 5 });
    expect(await dispatcher.round()).toBe('idle');
    expect(direct.calls[0]!.budget).toBe(5);

    // a small backlog cap with nothing behind: the cap limits, but nothing waits for this process
    const store2 = new FakeStore();
    const direct2 = fakeDirectPath(store2, 50, 0);
    const second = setup({ maxBacklog: 20 }, direct2, store2);
    store2.addTask('t2', 1_000);
    expect(await second.dispatcher.round()).toBe('idle');
    expect(direct2.calls[0]!.budget).toBe(20);
  });

  it('a rate-limited task goes through the queue even with a direct path, its backlog not read', async () => {
    const store = new FakeStore();
    const direct = fakeDirectPath(store, 50, 1_000);
    const { queue, rateLimiter, dispatcher } = setup({ perTaskPerRound: 100, maxBacklog: 5_000 }, direct, store);
    store.addTask('t1', 1_000, { maxPerMinute: 30 });
    rateLimiter.room.set('t1', 30);
    expect(await dispatcher.round()).toBe('idle');
    expect(direct.calls).toEqual([]);
    expect(direct.backlogReads()).toBe(0);
    // the share is perTaskPerRound, and the process's backlog does not count against it
    expect(store.budgets[0]!.budget).toBe(30);
    expect(queue.jobs).toHaveLength(30);
  });

  it('with a direct path, a round is busy once a task claims min(perTaskPerRound, perRound)', async () => {
    const store = new FakeStore();
    const direct = fakeDirectPath(store, 50);
    const { rateLimiter, dispatcher } = setup({ perTaskPerRound: 100 }, direct, store);
    store.addTask('limited', 1_000, { maxPerMinute: 600 });
    rateLimiter.room.set('limited', 60);
    expect(await dispatcher.round()).toBe('busy');
    expect(store.budgets[0]!.budget).toBe(60);
  });
});

describe('Dispatcher round: tasks visited and jobs added', () => {
  it('visits every dispatchable task once per round, in the store\'s order, even after a busy one', async () => {
    const store = new FakeStore();
    const direct = fakeDirectPath(store, 10);
    const { dispatcher, rateLimiter } = setup({ perTaskPerRound: 10 }, direct, store);
    store.addTask('a', 100);
    store.addTask('empty', 0);
    store.addTask('b', 3, { maxPerMinute: 60 });
    store.addTask('c', 100);
    rateLimiter.room.set('b', 60);
    expect(await dispatcher.round()).toBe('busy');
    expect(direct.calls.map((c) => c.taskId)).toEqual(['a', 'c']);
    expect(store.claims).toEqual(['b']);
  });

  it('no dispatchable task: idle, and nothing is claimed', async () => {
    const { store, queue, dispatcher } = setup();
    store.addTask('done', 0);
    expect(await dispatcher.round()).toBe('idle');
    expect(store.claims).toEqual([]);
    expect(queue.batches).toEqual([]);
  });

  it('busy wins over held back whichever task comes first', async () => {
    for (const order of [['slow', 'fast'], ['fast', 'slow']]) {
      const store = new FakeStore();
      // the direct task is held back by the backlog; the rate-limited one fills its share
      const direct = fakeDirectPath(store, 50, 90);
      const { dispatcher, rateLimiter } = setup({ perTaskPerRound: 20, maxBacklog: 100 }, direct, store);
      for (const id of order) store.addTask(id, 1_000, id === 'fast' ? { maxPerMinute: 6_000 } : {});
      rateLimiter.room.set('fast', 6_000);
      expect(await dispatcher.round()).toBe('busy');
      // held back below the busy mark (min(perTaskPerRound, perRound) = 20) on its own
      expect(direct.calls[0]!.budget).toBe(10);
    }
  });

  it('claimed records become their jobs (core/jobs.ts upgradeJob), added in chunks of 1,000', async () => {
    const { store, queue, dispatcher } = setup({ perTaskPerRound: 5_000, maxBacklog: 10_000 });
    store.addTask('t1', 2_500);
    await dispatcher.round();
    expect(queue.batches.map((batch) => batch.length)).toEqual([1_000, 1_000, 500]);
    const jobs = queue.jobs;
    expect(new Set(jobs.map((job) => job.opts.jobId)).size).toBe(2_500);
    expect(jobs[0]).toEqual(upgradeJob({ id: 1, deviceId: 'dev-1', dispatches: 2, taskId: 't1' }));
    expect(jobs[0]).toEqual({
      name: 'dev-1',
      data: { recordId: 1, taskId: 't1', deviceId: 'dev-1' } satisfies UpgradeJobData,
      opts: { jobId: upgradeJobId(1, 2) },
    });
    // ids follow the claim order across chunks
    expect(jobs.map((job) => job.data.recordId)).toEqual(Array.from({ length: 2_500 }, (_, i) => i + 1));
  });

  it('a claim of nothing adds no job', async () => {
    const { store, queue, dispatcher } = setup({ maxBacklog: 10 });
    store.addTask('t1', 100, {}, { processing: 0, queuedUnsent: 10 });
    await dispatcher.round();
    expect(queue.batches).toEqual([]);
  });
});

describe('Dispatcher pace: when the next round runs', () => {
  const INTERVAL = 250;

  async function started(options: DispatcherOptions = {}, direct?: ReturnType<typeof fakeDirectPath>, store = new FakeStore()) {
    vi.useFakeTimers();
    const context = setup({ intervalMs: INTERVAL, ...options }, direct, store);
    return context;
  }

  /** Lets pending promises and due timers run, the clock moving `ms`. */
  const advance = (ms: number) => vi.advanceTimersByTimeAsync(ms);
  /** Runs whatever is due now (promises, immediates, zero-delay timers) without moving the clock. */
  const settle = async () => {
    for (let i = 0; i < 20; i += 1) await vi.advanceTimersByTimeAsync(0);
  };

  it('idle: the next round after intervalMs, not before', async () => {
    const { store, dispatcher } = await started();
    dispatcher.start();
    await settle();
    expect(store.rounds).toBe(1);
    await advance(INTERVAL - 1);
    expect(store.rounds).toBe(1);
    await advance(1);
    expect(store.rounds).toBe(2);
    await advance(INTERVAL);
    expect(store.rounds).toBe(3);
    await dispatcher.stop();
  });

  it('idle: the pause is jittered between half and one and a half intervalMs, so processes do not keep their phase', async () => {
    for (const [jitter, pause] of [[0, INTERVAL / 2], [0.999, Math.round(INTERVAL * 1.499)]] as const) {
      const { store, dispatcher } = await started({ jitter: () => jitter });
      dispatcher.start();
      await settle();
      expect(store.rounds).toBe(1);
      await advance(pause - 1);
      expect(store.rounds).toBe(1);
      await advance(1);
      expect(store.rounds).toBe(2);
      await dispatcher.stop();
      vi.useRealTimers();
    }
  });

  it('held back: the next round after 20 ms', async () => {
    const store = new FakeStore();
    const direct = fakeDirectPath(store, 50, 80);
    const { dispatcher } = await started({ maxBacklog: 100 }, direct, store);
    store.addTask('t1', 1_000_000);
    dispatcher.start();
    await settle();
    expect(store.rounds).toBe(1);
    await advance(19);
    expect(store.rounds).toBe(1);
    await advance(1);
    expect(store.rounds).toBe(2);
    // nothing left to send: back to the normal interval
    store.waiting.set('t1', 0);
    await advance(20);
    expect(store.rounds).toBe(3);
    await advance(INTERVAL - 1);
    expect(store.rounds).toBe(3);
    await advance(1);
    expect(store.rounds).toBe(4);
    await dispatcher.stop();
  });

  it('busy: the next round right away, without waiting for a timer', async () => {
    const { store, queue, dispatcher } = await started({ perTaskPerRound: 10 });
    store.addTask('t1', 35);
    dispatcher.start();
    // 10, 10, 10 (busy each time), then 5 (idle): four rounds with no time passing
    const t0 = Date.now();
    // each busy round schedules the next as an immediate: the clock never moves
    for (let i = 0; i < 20 && store.rounds < 4; i += 1) await vi.advanceTimersToNextTimerAsync();
    expect(store.rounds).toBe(4);
    expect(Date.now()).toBe(t0);
    await settle();
    expect(queue.jobs).toHaveLength(35);
    await advance(INTERVAL - 1);
    expect(store.rounds).toBe(4);
    await dispatcher.stop();
  });

  it('poke during a round runs one more round right after it', async () => {
    const { store, dispatcher } = await started();
    let open!: () => void;
    store.gate = new Promise((resolve) => (open = resolve));
    dispatcher.start();
    await settle();
    expect(store.rounds).toBe(1);
    dispatcher.poke();
    dispatcher.poke();
    store.gate = undefined;
    open();
    await settle();
    // two pokes while running make one more round, not two
    expect(store.rounds).toBe(2);
    await advance(INTERVAL - 1);
    expect(store.rounds).toBe(2);
    await advance(1);
    expect(store.rounds).toBe(3);
    await dispatcher.stop();
  });

  it('poke between rounds runs one now and restarts the interval', async () => {
    const { store, dispatcher } = await started();
    dispatcher.start();
    await advance(100);
    expect(store.rounds).toBe(1);
    dispatcher.poke();
    await settle();
    expect(store.rounds).toBe(2);
    // the old timer (due at 250) was cleared: the next is 250 after the poke
    await advance(INTERVAL - 1);
    expect(store.rounds).toBe(2);
    await advance(1);
    expect(store.rounds).toBe(3);
    await dispatcher.stop();
  });

  it('a failed round is logged and the next one comes after intervalMs', async () => {
    const { store, logger, dispatcher } = await started();
    const failure = new Error('database away');
    store.failNext = failure;
    dispatcher.start();
    await settle();
    expect(logger.warn).toHaveBeenCalledWith({ err: failure }, 'dispatch round failed');
    expect(store.rounds).toBe(1);
    await advance(INTERVAL);
    expect(store.rounds).toBe(2);
    await dispatcher.stop();
  });

  it('stop() waits for the running round, and no round follows', async () => {
    const { store, queue, dispatcher } = await started({ perTaskPerRound: 10 });
    store.addTask('t1', 1_000);
    let open!: () => void;
    store.gate = new Promise((resolve) => (open = resolve));
    dispatcher.start();
    await settle();
    let stopped = false;
    const stopping = dispatcher.stop().then(() => (stopped = true));
    await advance(1_000);
    expect(stopped).toBe(false);
    open();
    await stopping;
    // the round in flight finished its work (a busy one) but scheduled nothing after it
    expect(queue.jobs).toHaveLength(10);
    await advance(10 * INTERVAL);
    expect(store.rounds).toBe(1);
    dispatcher.poke();
    await advance(10 * INTERVAL);
    expect(store.rounds).toBe(1);
  });

  it('nothing runs before start()', async () => {
    const { store, dispatcher } = await started();
    dispatcher.poke();
    await advance(10 * INTERVAL);
    expect(store.rounds).toBe(0);
  });
});
