// Recent reads of tasks, for an API process that runs no workers (ROLE=api). During a rollout
// every dashboard polls its task; answering each poll from Postgres puts the hottest row of the
// database, and a trip through a busy machine's scheduler, on every request. Here a poll gets the
// task as read at most `maxAgeMs` ago and, if that read is older than `refreshAfterMs`, a new one
// starts in the background (one at a time per task). Any write through this process clears the
// snapshots, so its own changes are seen at once; the workers' changes show within `maxAgeMs`.
import type { TaskRow } from '../db/database.ts';

export interface TaskSnapshotOptions {
  refreshAfterMs: number;
  maxAgeMs: number;
  /** Tasks kept, at most; the least recently read go first. */
  maxEntries: number;
}

interface Snapshot {
  task: TaskRow | undefined;
  readAt: number;
  refreshing?: Promise<TaskRow | undefined>;
}

export class TaskSnapshots {
  private readonly load: (taskId: string) => Promise<TaskRow | undefined>;
  private readonly options: TaskSnapshotOptions;
  private readonly snapshots = new Map<string, Snapshot>();
  private generation = 0;

  constructor(load: (taskId: string) => Promise<TaskRow | undefined>, options: Partial<TaskSnapshotOptions> = {}) {
    this.load = load;
    this.options = { refreshAfterMs: 50, maxAgeMs: 250, maxEntries: 1_000, ...options };
  }

  async get(taskId: string): Promise<TaskRow | undefined> {
    const snapshot = this.snapshots.get(taskId);
    const age = snapshot ? Date.now() - snapshot.readAt : Infinity;
    if (!snapshot || age >= this.options.maxAgeMs) return this.read(taskId);
    if (age >= this.options.refreshAfterMs) void this.read(taskId).catch(() => {});
    // most recently read last, so the oldest entry is the first to go
    this.snapshots.delete(taskId);
    this.snapshots.set(taskId, snapshot);
    return snapshot.task;
  }

  /** Forgets every snapshot: this process changed something. */
  clear(): void {
    this.generation += 1;
    this.snapshots.clear();
  }

  private read(taskId: string): Promise<TaskRow | undefined> {
    const current = this.snapshots.get(taskId);
    if (current?.refreshing) return current.refreshing;
    const generation = this.generation;
    const refreshing = this.load(taskId).then(
      (task) => {
        // a read that started before a write of this process must not bring the old task back
        if (generation === this.generation) this.remember(taskId, { task, readAt: Date.now() });
        return task;
      },
      (error: unknown) => {
        const entry = this.snapshots.get(taskId);
        if (entry) delete entry.refreshing;
        throw error;
      },
    );
    if (current) current.refreshing = refreshing;
    else this.remember(taskId, { task: undefined, readAt: -Infinity, refreshing });
    return refreshing;
  }

  private remember(taskId: string, snapshot: Snapshot): void {
    this.snapshots.delete(taskId);
    this.snapshots.set(taskId, snapshot);
    if (this.snapshots.size > this.options.maxEntries) {
      const oldest = this.snapshots.keys().next().value;
      if (oldest !== undefined) this.snapshots.delete(oldest);
    }
  }
}
