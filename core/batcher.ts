// Coalesces many small calls into one bulk call: items arriving within `maxWaitMs` (or until
// `maxItems`) are handed to `run` together, and each caller gets its own result back. This is how
// hundreds of concurrent jobs and device messages share one SQL statement instead of one each.
export type BatchRunner<I, O> = (items: I[]) => Promise<O[]>;

interface Pending<I, O> {
  item: I;
  resolve: (value: O) => void;
  reject: (error: unknown) => void;
}

export interface BatcherOptions {
  maxItems: number;
  maxWaitMs: number;
  /** How many batches may run at once; more items wait for the next free slot. */
  concurrency?: number;
}

export class Batcher<I, O> {
  private pending: Pending<I, O>[] = [];
  private timer: NodeJS.Timeout | undefined;
  private running = 0;
  private readonly run: BatchRunner<I, O>;
  private readonly options: Required<BatcherOptions>;

  constructor(run: BatchRunner<I, O>, options: BatcherOptions) {
    this.run = run;
    this.options = { concurrency: 1, ...options };
  }

  add(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.pending.push({ item, resolve, reject });
      if (this.pending.length >= this.options.maxItems) this.flush();
      else this.timer ??= setTimeout(() => this.flush(), this.options.maxWaitMs);
    });
  }

  get size(): number {
    return this.pending.length;
  }

  /** Resolves once nothing is pending or running (for a graceful shutdown). */
  async idle(): Promise<void> {
    while (this.pending.length > 0 || this.running > 0) {
      if (this.pending.length > 0 && this.running === 0) this.flush();
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.length === 0 || this.running >= this.options.concurrency) return;
    const batch = this.pending.splice(0, this.options.maxItems);
    this.running += 1;
    let running: Promise<O[]>;
    try {
      running = this.run(batch.map((entry) => entry.item));
    } catch (error) {
      // a runner that throws synchronously fails its batch instead of jamming the batcher
      running = Promise.reject(error);
    }
    running
      .then(
        (results) => batch.forEach((entry, index) => entry.resolve(results[index] as O)),
        (error: unknown) => batch.forEach((entry) => entry.reject(error)),
      )
      .finally(() => {
        this.running -= 1;
        if (this.pending.length > 0) this.flush();
      });
  }
}
