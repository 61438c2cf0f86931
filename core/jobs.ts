// How an upgrade record maps to its BullMQ job. The id is derived from the record (and how many
// times it was handed to the queue), so adding a job twice is harmless and any lost job can be
// rebuilt from Postgres. BullMQ ids may not contain ':' nor be all digits.

export const UPGRADE_QUEUE = 'upgrades';

export interface UpgradeJobData {
  recordId: number;
  taskId: string;
  deviceId: string;
}

export function upgradeJobId(recordId: number, dispatches: number): string {
  return `rec-${recordId}-${dispatches}`;
}

export function parseUpgradeJobId(jobId: string): { recordId: number; dispatches: number } | undefined {
  const match = /^rec-(\d+)-(\d+)$/.exec(jobId);
  if (!match) return undefined;
  return { recordId: Number(match[1]), dispatches: Number(match[2]) };
}

/** What a job is built from: the record it follows, and how many jobs that record has had. */
export interface JobbedRecord {
  id: number;
  taskId: string;
  deviceId: string;
  dispatches: number;
}

/** A job as BullMQ's add/addBulk takes it. */
export interface UpgradeJob {
  name: string;
  data: UpgradeJobData;
  opts: { jobId: string; delay?: number };
}

/**
 * The job that follows `record` (named by its device, so bull-board lists devices), to run now or,
 * given `dueAt` (epoch ms), parked until then — the one place a job is built.
 */
export function upgradeJob(record: JobbedRecord, dueAt?: number, now = Date.now()): UpgradeJob {
  return {
    name: record.deviceId,
    data: { recordId: record.id, taskId: record.taskId, deviceId: record.deviceId },
    opts: dueAt === undefined ? { jobId: upgradeJobId(record.id, record.dispatches) } : { jobId: upgradeJobId(record.id, record.dispatches), delay: Math.max(0, dueAt - now) },
  };
}
