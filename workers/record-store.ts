// The records as the upgrade jobs see them: reads and writes from many concurrent jobs are
// coalesced into one query each, so a worker running hundreds of jobs at once makes a handful of
// round trips to Postgres instead of hundreds.
import type { Db } from '../db/connection.ts';
import { loadUpgradeStatesByIds, type UpgradeState } from '../db/queries/upgrade-state.ts';
import { applyRecordChanges, type RecordChange } from '../db/queries/record-changes.ts';
import { Batcher } from '../core/batcher.ts';
import { retryTransient } from '../db/transient-errors.ts';

export type ApplyResult = 'applied' | 'stale';

// a job that cannot reach the database for longer parks itself and tries again later
const SHORT_RETRY = { maxRetryTime: 5_000 };

export class RecordStore {
  private readonly loads: Batcher<number, UpgradeState | undefined>;
  private readonly changes: Batcher<RecordChange, ApplyResult>;
  private readonly db: Db;
  /** Called with the changes that were written, after they committed. */
  onApplied: (changes: RecordChange[]) => void = () => {};

  constructor(db: Db) {
    this.db = db;
    this.loads = new Batcher(
      async (ids) => {
        const states = await retryTransient(() => loadUpgradeStatesByIds(db, ids), SHORT_RETRY);
        return ids.map((id) => states.get(id));
      },
      { maxItems: 500, maxWaitMs: 2, concurrency: 2 },
    );
    this.changes = new Batcher(
      async (batch) => {
        // a record appears once per batch: the guard would refuse a second change anyway
        const first = new Map<number, RecordChange>();
        for (const change of batch) if (!first.has(change.id)) first.set(change.id, change);
        const { applied } = await retryTransient(() => applyRecordChanges(db, [...first.values()]), SHORT_RETRY);
        const appliedSet = new Set(applied);
        if (applied.length > 0) this.onApplied(applied);
        return batch.map((change) => (appliedSet.has(change) ? 'applied' : 'stale'));
      },
      { maxItems: 500, maxWaitMs: 2, concurrency: 2 },
    );
  }

  load(recordId: number): Promise<UpgradeState | undefined> {
    return this.loads.add(recordId);
  }

  apply(change: RecordChange): Promise<ApplyResult> {
    return this.changes.add(change);
  }

}
