// Log lines about refused device messages, at most one per reason per window: the first refusal of
// a reason is written at once, later ones in the window are counted and written as one line (count
// and the first example) when it ends. A flooding device can then not flood the logs too.
import type { Logger } from 'pino';

const WINDOW_MS = 10_000;
/** Longest text of an example kept in a line (a topic may be 64 KB). */
const MAX_EXAMPLE_CHARS = 200;

export type Example = Record<string, string | number | boolean | undefined>;

interface Pending {
  count: number;
  example: Example | undefined;
  timer: NodeJS.Timeout;
}

export interface RefusalLogOptions {
  windowMs?: number;
  level?: 'warn' | 'error';
  message?: string;
}

/** Cuts every text of `example` to a loggable length, saying how long it was. */
export function truncateExample(example: Example, maxChars = MAX_EXAMPLE_CHARS): Example {
  const out: Example = {};
  for (const [key, value] of Object.entries(example)) {
    out[key] = typeof value === 'string' && value.length > maxChars ? `${value.slice(0, maxChars)}… (${value.length} characters)` : value;
  }
  return out;
}

export class RefusalLog {
  private readonly logger: Logger;
  private readonly windowMs: number;
  private readonly level: 'warn' | 'error';
  private readonly message: string;
  private readonly pending = new Map<string, Pending>();

  constructor(logger: Logger, options: RefusalLogOptions = {}) {
    this.logger = logger;
    this.windowMs = options.windowMs ?? WINDOW_MS;
    this.level = options.level ?? 'warn';
    this.message = options.message ?? 'device messages refused';
  }

  /** Notes one refusal of `reason`; writes a line only when none was written for it in the window. */
  note(reason: string, example: Example): void {
    const pending = this.pending.get(reason);
    if (pending) {
      pending.count += 1;
      pending.example ??= truncateExample(example);
      return;
    }
    this.write(reason, 1, truncateExample(example));
    this.open(reason);
  }

  /** Writes what was counted and not written yet (at shutdown). */
  flush(): void {
    for (const [reason, pending] of this.pending) {
      clearTimeout(pending.timer);
      if (pending.count > 0) this.write(reason, pending.count, pending.example);
    }
    this.pending.clear();
  }

  private open(reason: string): void {
    const timer = setTimeout(() => this.close(reason), this.windowMs);
    timer.unref();
    this.pending.set(reason, { count: 0, example: undefined, timer });
  }

  /** The window ends: its count in one line, and a new window; or, if quiet, nothing. */
  private close(reason: string): void {
    const pending = this.pending.get(reason);
    this.pending.delete(reason);
    if (!pending || pending.count === 0) return;
    this.write(reason, pending.count, pending.example);
    this.open(reason);
  }

  private write(reason: string, count: number, example: Example | undefined): void {
    this.logger[this.level]({ reason, count, windowSeconds: this.windowMs / 1000, example }, this.message);
  }
}
