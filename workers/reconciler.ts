// The reconciler keeps Redis honest to Postgres (the truth): at start and then periodically it
// rebuilds the job of every in-flight record whose job is missing (Redis lost its data, a process
// died between a commit and its addBulk), runs jobs whose record is long past due, and wakes parked
// jobs whose record already ended (a wake-up that was lost). Every step is idempotent, so two
// processes reconciling at once do no harm.
import type { UpgradeQueues } from '../services/upgrade-queues.ts';
import type { Logger } from 'pino';
import { parseUpgradeJobId, upgradeJob, upgradeJobId } from '../core/jobs.ts';
import type { Db } from '../db/connection.ts';
import { finishedRecordIds, inFlightRecords, tasksWithRecordsInFlight, type InFlightRecord } from '../db/queries/reconcile.ts';

const PAGE = 1_000;
/** A job this late for its record is considered stuck and run now. */
const OVERDUE_MS = 30_000;

export interface ReconcileReport {
  checked: number;
  rebuilt: number;
  overdue: number;
  woken: number;
}

export class Reconciler {
  private readonly db: Db;
  private readonly queue: UpgradeQueues;
  private readonly logger: Logger;
  private readonly intervalMs: number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;

  constructor(db: Db, queue: UpgradeQueues, logger: Logger, intervalMs = 30_000) {
    this.db = db;
    this.queue = queue;
    this.logger = logger;
    this.intervalMs = intervalMs;
  }

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    // a little jitter, so that several workers do not all reconcile at the same moment
    this.timer = setTimeout(() => {
      this.running = this.runOnce()
        .then((report) => {
          if (report.rebuilt + report.overdue + report.woken > 0) this.logger.warn(report, 'reconciled Redis with Postgres');
        })
        .catch((err: unknown) => this.logger.warn({ err: (err as Error).message }, 'reconcile failed; trying again later'))
        .finally(() => this.schedule(this.intervalMs * (0.8 + Math.random() * 0.4)));
    }, delayMs);
  }

  async runOnce(now = Date.now()): Promise<ReconcileReport> {
    const report: ReconcileReport = { checked: 0, rebuilt: 0, overdue: 0, woken: 0 };
    for (const taskId of await tasksWithRecordsInFlight(this.db)) {
      for (let after = 0; ; ) {
        const page = await inFlightRecords(this.db, taskId, after, PAGE);
        if (page.length === 0) break;
        await this.reconcilePage(page, now, report);
        after = page[page.length - 1]!.id;
        if (this.stopped) return report;
      }
    }
    report.woken = await this.wakeJobsOfFinishedRecords();
    return report;
  }

  private async reconcilePage(records: InFlightRecord[], now: number, report: ReconcileReport): Promise<void> {
    report.checked += records.length;
    const exists = await this.queue.exist(records.map((record) => upgradeJobId(record.id, record.dispatches)));
    const missing = records.filter((_, i) => !exists[i]);
    if (missing.length > 0) {
      await this.queue.addBulk(missing.map((record) => upgradeJob(record, record.dueAt, now)));
      report.rebuilt += missing.length;
    }
    const overdue = records.filter((record, i) => exists[i] && record.state === 'processing' && record.dueAt + OVERDUE_MS < now);
    for (const record of overdue) {
      const jobId = upgradeJobId(record.id, record.dispatches);
      // promote fails for a job that is running or waiting already: then it is not stuck
      if (await this.queue.promote(jobId).then(() => true, () => false)) {
        report.overdue += 1;
        continue;
      }
      // a job that ended (failed on an unexpected error) while its record is still in flight is
      // replaced, so the record is followed again
      const state = await this.queue.getJobState(jobId).catch(() => 'unknown');
      if (state === 'failed' || state === 'completed') {
        await this.queue.remove(jobId).catch(() => 0);
        await this.queue.add(upgradeJob(record));
        report.rebuilt += 1;
      }
    }
  }

  /** Parked jobs whose record already ended: their wake-up was lost; run them so they finish. */
  private async wakeJobsOfFinishedRecords(): Promise<number> {
    let woken = 0;
    for (const shard of this.queue.shards) woken += await this.wakeFinishedIn(await shard.backend.client, shard.keys.delayed!);
    return woken;
  }

  private async wakeFinishedIn(client: { zrange(key: string, start: number, stop: number): Promise<string[]> }, delayedKey: string): Promise<number> {
    let woken = 0;
    for (let start = 0; ; start += PAGE) {
      const jobIds = await client.zrange(delayedKey, start, start + PAGE - 1);
      if (jobIds.length === 0) break;
      const byRecord = new Map<number, string>();
      for (const jobId of jobIds) {
        const parsed = parseUpgradeJobId(jobId);
        if (parsed) byRecord.set(parsed.recordId, jobId);
      }
      const finished = await finishedRecordIds(this.db, [...byRecord.keys()]);
      let promotedHere = 0;
      for (const recordId of finished) {
        const promoted = await this.queue.promote(byRecord.get(recordId)!).then(() => true, () => false);
        if (promoted) promotedHere += 1;
      }
      woken += promotedHere;
      // promoted jobs left the delayed set: the next page starts that much earlier
      start -= promotedHere;
      if (jobIds.length < PAGE) break;
    }
    return woken;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }
}
