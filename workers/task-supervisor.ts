// Watches tasks whose records changed: aborts a task past its failure threshold, completes a task
// whose records are all final. Reviews are coalesced, so a burst of finished records costs one
// query per task, not one per record.
import type { UpgradeQueues } from '../services/upgrade-queues.ts';
import type { Logger } from 'pino';
import type { Db } from '../db/connection.ts';
import { abortTask, completeFinishedTasks, tasksPastAbortThreshold } from '../db/queries/task-lifecycle.ts';
import { removeJobs } from '../services/upgrade-jobs.ts';

const REVIEW_DELAY_MS = 50;

export class TaskSupervisor {
  private readonly db: Db;
  private readonly queue: UpgradeQueues;
  private readonly logger: Logger;
  private dirty = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private reviewing: Promise<void> = Promise.resolve();

  constructor(db: Db, queue: UpgradeQueues, logger: Logger) {
    this.db = db;
    this.queue = queue;
    this.logger = logger;
  }

  /** A record of these tasks reached a final state. */
  touch(taskIds: Iterable<string>): void {
    for (const id of taskIds) this.dirty.add(id);
    if (this.dirty.size > 0) this.timer ??= setTimeout(() => this.schedule(), REVIEW_DELAY_MS);
  }

  private schedule(): void {
    this.timer = undefined;
    const taskIds = [...this.dirty];
    this.dirty = new Set();
    this.reviewing = this.reviewing
      .then(() => this.review(taskIds))
      .catch((err: unknown) => {
        this.logger.warn({ err, taskIds }, 'task review failed; retrying');
        this.touch(taskIds);
      });
  }

  async review(taskIds: string[]): Promise<void> {
    for (const taskId of await tasksPastAbortThreshold(this.db, taskIds)) {
      const canceled = await abortTask(this.db, taskId);
      if (canceled) {
        this.logger.warn({ taskId, canceled: canceled.length }, 'task aborted: failure rate reached its threshold');
        await removeJobs(this.queue, canceled);
      }
    }
    const completed = await completeFinishedTasks(this.db, taskIds);
    for (const taskId of completed) this.logger.info({ taskId }, 'task completed');
  }

  async stop(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.schedule();
    }
    await this.reviewing;
  }
}
