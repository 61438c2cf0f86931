// An upgrade task's states and settings (docs/states-and-rules.md#tasks): the one home of these
// types, read by the database layer, the API schemas and the workers alike.

export type TaskState = 'created' | 'running' | 'paused' | 'completed' | 'canceled' | 'aborted';
export type TaskMode = 'push' | 'pull';

/** How many of a task's (or a wave's) records are in each state, and in all. */
export interface RecordCounts {
  total: number;
  waiting: number;
  processing: number;
  success: number;
  failed: number;
  canceled: number;
}

/** How fast a task may send (docs/states-and-rules.md#rollout-limits), and its strategy (docs/strategies.md). */
export interface RolloutLimits {
  maxPerMinute?: number;
  maxInFlight?: number;
  waves?: WaveSize[];
  gate?: WaveGate;
  ramp?: Ramp;
  /** Devices placed in the first wave (docs/strategies.md#waves). */
  firstDeviceIds?: string[];
}

/** A wave's cumulative size: a percentage of the task's records, or a count of them. */
export type WaveSize = { percent: number } | { devices: number };

/** What a wave must show before the next one is sent to (docs/strategies.md#waves). */
export interface WaveGate {
  minSuccessRate?: number;
  minFinished?: number;
  soakSeconds?: number;
  approval?: boolean;
}

/** A send rate that grows with successes, as AWS IoT Jobs' exponential rollout (docs/strategies.md#ramp). */
export interface Ramp {
  startPerMinute: number;
  factor: number;
  everySucceeded: number;
}

/** Why a paused task is paused. */
export type PausedReason = 'manual' | 'gate_failed';

/** When a task stops by itself (docs/states-and-rules.md#abort); the rule is otter_past_abort_threshold (migration 0010). */
export interface AbortPolicy {
  failureRate: number;
  minFinished: number;
}
