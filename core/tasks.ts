// An upgrade task's states and settings (docs/states-and-rules.md#tasks): the one home of these
// types, read by the database layer, the API schemas and the workers alike.

export type TaskState = 'created' | 'running' | 'paused' | 'completed' | 'canceled' | 'aborted';
export type TaskMode = 'push' | 'pull';

/** How fast a task may send (docs/states-and-rules.md#rollout-limits). */
export interface RolloutLimits {
  maxPerMinute?: number;
  maxInFlight?: number;
}

/** When a task stops by itself (docs/states-and-rules.md#abort); the rule is otter_past_abort_threshold (migration 0010). */
export interface AbortPolicy {
  failureRate: number;
  minFinished: number;
}
