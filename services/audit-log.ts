// Collects audit entries in memory and writes them in batches, off the request's path: a request
// never waits for its audit row, and a failed write is logged, never thrown. Each batch also
// deletes, at most once an hour, the entries older than the retention.
import type { Db } from '../db/connection.ts';
import type { NewAuditLogRow } from '../db/database.ts';
import { deleteAuditEntriesBefore, insertAuditEntries } from '../db/queries/audit.ts';
import type { Logger } from 'pino';

export interface AuditLogOptions {
  retentionDays: number;
  /** Longest an entry waits before it is written. */
  flushIntervalMs?: number;
  /** Entries that trigger a write at once. */
  maxBatch?: number;
  /** Entries held at most while the database is failing; the oldest beyond it are dropped (and counted in the log). */
  maxPending?: number;
}

const HOUR_MS = 3_600_000;

export class AuditLog {
  private pending: NewAuditLogRow[] = [];
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private lastPrune = 0;
  private readonly flushIntervalMs: number;
  private readonly maxBatch: number;
  private readonly maxPending: number;

  constructor(
    private readonly db: Db,
    private readonly logger: Logger,
    private readonly options: AuditLogOptions,
  ) {
    this.flushIntervalMs = options.flushIntervalMs ?? 1_000;
    this.maxBatch = options.maxBatch ?? 500;
    this.maxPending = options.maxPending ?? 100_000;
  }

  record(entry: NewAuditLogRow): void {
    this.pending.push(entry);
    if (this.pending.length > this.maxPending) {
      const dropped = this.pending.splice(0, this.pending.length - this.maxPending);
      this.logger.error({ dropped: dropped.length }, 'audit entries dropped: the database has not taken them for too long');
    }
    if (this.pending.length >= this.maxBatch) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), this.flushIntervalMs).unref();
  }

  /** Writes what is pending (and prunes if due); resolves once written or logged as failed. */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    // one write at a time, in order
    this.writing = this.writing.then(() => this.writeBatch());
    return this.writing;
  }

  /** Deletes the entries older than the retention; answers how many went. */
  async prune(now = new Date()): Promise<number> {
    this.lastPrune = now.getTime();
    const before = new Date(now.getTime() - this.options.retentionDays * 24 * HOUR_MS);
    const deleted = await deleteAuditEntriesBefore(this.db, before);
    if (deleted > 0) this.logger.info({ deleted, before }, 'old audit entries deleted');
    return deleted;
  }

  private async writeBatch(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending.slice(0, this.maxBatch);
      try {
        await insertAuditEntries(this.db, batch);
        this.pending.splice(0, batch.length);
      } catch (error) {
        // kept for the next flush; the request it describes was answered long ago
        this.logger.error({ err: error, entries: batch.length }, 'audit entries not written; retrying with the next batch');
        this.timer ??= setTimeout(() => void this.flush(), this.flushIntervalMs * 5).unref();
        return;
      }
    }
    if (Date.now() - this.lastPrune >= HOUR_MS) {
      await this.prune().catch((error: unknown) => this.logger.error({ err: error }, 'old audit entries not deleted'));
    }
  }
}
