// Wakes parked upgrade jobs when their record changes (a device finished, failed or a retry was
// scheduled), and mirrors device progress onto the jobs so bull-board shows it. A job that is
// running right now cannot be promoted; it is tried again shortly, and its deadline is the last
// resort, so a lost wake-up delays a job but never loses a record.
import type { UpgradeQueues } from '../services/upgrade-queues.ts';
import type { Logger } from 'pino';

const RETRY_DELAYS_MS = [50, 200, 1_000, 3_000];
const PROGRESS_FLUSH_MS = 250;

export class JobWaker {
  private readonly queue: UpgradeQueues;
  private readonly logger: Logger;
  private progress = new Map<string, number>();
  private progressTimer: NodeJS.Timeout | undefined;
  private readonly retryTimers = new Set<NodeJS.Timeout>();
  private stopped = false;

  constructor(queue: UpgradeQueues, logger: Logger) {
    this.queue = queue;
    this.logger = logger;
  }

  wake(jobIds: Iterable<string>): void {
    for (const jobId of jobIds) void this.promote(jobId, 0);
  }

  private async promote(jobId: string, attempt: number): Promise<void> {
    if (this.stopped) return;
    try {
      await this.queue.promote(jobId);
    } catch (error) {
      const delay = RETRY_DELAYS_MS[attempt];
      if (delay === undefined) {
        this.logger.debug({ jobId, err: (error as Error).message }, 'job not woken; its deadline will run it');
        return;
      }
      const timer = setTimeout(() => {
        this.retryTimers.delete(timer);
        void this.promote(jobId, attempt + 1);
      }, delay);
      this.retryTimers.add(timer);
    }
  }

  /** Records the latest progress of a job; written to Redis a few times a second at most. */
  mirrorProgress(jobId: string, progress: number): void {
    this.progress.set(jobId, progress);
    this.progressTimer ??= setTimeout(() => void this.flushProgress(), PROGRESS_FLUSH_MS);
  }

  private async flushProgress(): Promise<void> {
    this.progressTimer = undefined;
    const batch = this.progress;
    this.progress = new Map();
    if (batch.size === 0) return;
    // a lost write is made good by the next report; bull-board's view may lag, nothing else reads it
    await this.queue.updateProgress([...batch]).catch((error: unknown) => {
      this.logger.debug({ err: (error as Error).message, jobs: batch.size }, 'job progress not mirrored');
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.retryTimers) clearTimeout(timer);
    if (this.progressTimer) clearTimeout(this.progressTimer);
    await this.flushProgress();
  }
}
