// A loop of rounds that never overlap: a round runs when the previous one ended and its pause is
// over, or at once when poked (a poke during a round runs another right after it). The dispatcher
// and the webhook deliverer poll PostgreSQL this way.

/** What a round asks of the loop: the next round now, or after this many ms. */
export type NextRound = 'now' | number;

export class RoundLoop {
  private readonly round: () => Promise<NextRound>;
  private readonly onError: (err: unknown) => NextRound;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = true;

  /** `onError` handles a round that threw, and says when to try again. */
  constructor(round: () => Promise<NextRound>, onError: (err: unknown) => NextRound) {
    this.round = round;
    this.onError = onError;
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  start(): void {
    this.stopped = false;
    this.poke();
  }

  /** Runs a round now (after the current one, if one is running). */
  poke(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.running = this.round()
      .catch((err: unknown) => this.onError(err))
      .then((next) => {
        this.running = undefined;
        if (this.stopped) return;
        if (next === 'now' || this.again) {
          this.again = false;
          setImmediate(() => this.poke());
        } else {
          this.timer = setTimeout(() => this.poke(), next);
        }
      });
  }

  /** No more rounds; resolves once the running one ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }
}
