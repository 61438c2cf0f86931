// The upgrade jobs an operator's action leaves without a record to follow: removed from the queue
// (by the API's cancel and by the task supervisor's abort alike).
import type { UpgradeQueues } from './upgrade-queues.ts';
import { upgradeJobId } from '../core/jobs.ts';
import type { CanceledRecord } from '../db/queries/task-lifecycle.ts';

/** Jobs removed per round trip to Redis. */
const REMOVE_CHUNK = 500;

/** Removes the queued or parked jobs of canceled records; a job running right now drops itself. */
export async function removeJobs(queue: UpgradeQueues, records: readonly CanceledRecord[]): Promise<void> {
  const withJobs = records.filter((record) => record.hadJob);
  for (let i = 0; i < withJobs.length; i += REMOVE_CHUNK) {
    await Promise.all(
      withJobs.slice(i, i + REMOVE_CHUNK).map((record) => queue.remove(upgradeJobId(record.id, record.dispatches)).catch(() => 0)),
    );
  }
}
