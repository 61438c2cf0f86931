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
