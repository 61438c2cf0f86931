// Waves, gates and ramps (docs/strategies.md): the rules alone, no I/O. The rollout scheduler
// (workers/rollout-scheduler.ts) reads each wave's counters and applies what these functions say.
import type { Ramp, RecordCounts, RolloutLimits, WaveGate, WaveSize } from './tasks.ts';

export type WaveState = 'pending' | 'running' | 'soaking' | 'awaiting_approval' | 'passed' | 'failed';

/** A gate's settings with the defaults filled in (docs/strategies.md#gates). */
export type GateSettings = Required<WaveGate>;

export const DEFAULT_GATE: GateSettings = { minSuccessRate: 0.9, minFinished: 1, soakSeconds: 0, approval: false };

export function gateSettings(gate: WaveGate | undefined): GateSettings {
  const set = Object.fromEntries(Object.entries(gate ?? {}).filter(([, value]) => value !== undefined));
  return { ...DEFAULT_GATE, ...set };
}

export type WaveCounters = RecordCounts;

export interface WaveStatus extends WaveCounters {
  index: number;
  state: WaveState;
  gateMetAt: number | null;
  approved: boolean;
}

/** What the scheduler does with a wave: write its new state, and open the next wave or pause the task. */
export interface GateDecision {
  state: WaveState;
  gateMetAt: number | null;
  action: 'none' | 'open_next' | 'pause';
}

/**
 * The success rate among a wave's decided records (succeeded or failed; an operator's cancel is
 * neither), 1 while none is decided.
 */
export function successRate(wave: WaveCounters): number {
  const decided = wave.success + wave.failed;
  return decided === 0 ? 1 : wave.success / decided;
}

/**
 * Where the gate of the open wave stands. It passes once at least `minFinished` of its records are
 * final, the success rate among them is at least `minSuccessRate`, `soakSeconds` have passed since
 * both held, and (with `approval`) an operator approved. It fails once the rate can no longer reach
 * `minSuccessRate` even if every record still open succeeds — at the latest when all are final.
 */
export function evaluateGate(wave: WaveStatus, gate: GateSettings, now: number): GateDecision {
  if (wave.state === 'passed' || wave.state === 'failed') return { state: wave.state, gateMetAt: wave.gateMetAt, action: 'none' };
  const open = wave.waiting + wave.processing;
  const best = successRate({ ...wave, success: wave.success + open });
  if (best < gate.minSuccessRate) return { state: 'failed', gateMetAt: null, action: 'pause' };
  const final = wave.total - open;
  const finishedShare = wave.total === 0 ? 1 : final / wave.total;
  const met = finishedShare >= gate.minFinished && successRate(wave) >= gate.minSuccessRate;
  if (!met) return { state: 'running', gateMetAt: null, action: 'none' };
  const gateMetAt = wave.gateMetAt ?? now;
  if (now < gateMetAt + gate.soakSeconds * 1_000) return { state: 'soaking', gateMetAt, action: 'none' };
  if (gate.approval && !wave.approved) return { state: 'awaiting_approval', gateMetAt, action: 'none' };
  return { state: 'passed', gateMetAt, action: 'open_next' };
}

/**
 * What is wrong with a list of waves, as JSON Pointers below it: each must be larger than the one
 * before (sizes are cumulative), all of one kind. (The schema bounds each size.)
 */
export function waveProblems(waves: readonly WaveSize[]): Array<{ path: string; message: string }> {
  const problems: Array<{ path: string; message: string }> = [];
  for (let i = 1; i < waves.length; i += 1) {
    const [before, wave] = [waves[i - 1]!, waves[i]!];
    const kind = 'percent' in wave ? 'percent' : 'devices';
    const previous = 'percent' in before ? ('percent' in wave ? before.percent : undefined) : 'devices' in wave ? before.devices : undefined;
    if (previous === undefined) problems.push({ path: `/waves/${i}`, message: 'waves are all percentages or all device counts' });
    else if ((wave as Record<string, number>)[kind]! <= previous) problems.push({ path: `/waves/${i}/${kind}`, message: `waves are cumulative: must be more than wave ${i}'s ${previous}` });
  }
  return problems;
}

/**
 * The ramp's send rate once `succeeded` records succeeded: `startPerMinute` × `factor` for every
 * `everySucceeded` more successes, never above `maxPerMinute`.
 */
export function rampRate(ramp: Ramp, succeeded: number, maxPerMinute?: number): number {
  const steps = Math.floor(succeeded / ramp.everySucceeded);
  // a rate past every cap may be Infinity here; the cap (or the largest safe integer) bounds it
  const rate = ramp.startPerMinute * ramp.factor ** steps;
  return Math.floor(Math.min(Number.isNaN(rate) ? ramp.startPerMinute : rate, maxPerMinute ?? Number.MAX_SAFE_INTEGER));
}

/** The task's send rate now: its ramp's, else its fixed maxPerMinute, else none. */
export function currentRate(rollout: RolloutLimits, succeeded: number): number | undefined {
  if (rollout.ramp) return rampRate(rollout.ramp, succeeded, rollout.maxPerMinute);
  return rollout.maxPerMinute;
}
