// Waves, gates and ramps (core/waves.ts): gate defaults, the success rate, every gate state and its
// boundaries (soak, approval, early failure, a gate lost again), wave-list validation and the ramp.
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_GATE,
  currentRate,
  evaluateGate,
  gateSettings,
  rampRate,
  successRate,
  waveProblems,
  type GateSettings,
  type WaveStatus,
} from '../../core/waves.ts';

const NOW = 1_700_000_000_000;

/** A wave's status; `total` is the sum of the counters unless given. */
function wave(fields: Partial<WaveStatus> = {}): WaveStatus {
  const counters = { waiting: 0, processing: 0, success: 0, failed: 0, canceled: 0, ...fields };
  const total = counters.waiting + counters.processing + counters.success + counters.failed + counters.canceled;
  return { index: 1, state: 'running', gateMetAt: null, approved: false, total, ...counters };
}

function gate(overrides: Partial<GateSettings> = {}): GateSettings {
  return gateSettings(overrides);
}

describe('gateSettings', () => {
  it('fills in the defaults without a gate', () => {
    expect(gateSettings(undefined)).toEqual({ minSuccessRate: 0.9, minFinished: 1, soakSeconds: 0, approval: false });
    expect(gateSettings({})).toEqual({ minSuccessRate: 0.9, minFinished: 1, soakSeconds: 0, approval: false });
  });

  it('keeps each given setting and defaults the rest', () => {
    expect(gateSettings({ minSuccessRate: 0.95 })).toEqual({ minSuccessRate: 0.95, minFinished: 1, soakSeconds: 0, approval: false });
    expect(gateSettings({ soakSeconds: 600, approval: true })).toEqual({ minSuccessRate: 0.9, minFinished: 1, soakSeconds: 600, approval: true });
    expect(gateSettings({ minSuccessRate: 0, minFinished: 0.5, soakSeconds: 0, approval: false })).toEqual({
      minSuccessRate: 0,
      minFinished: 0.5,
      soakSeconds: 0,
      approval: false,
    });
  });

  it('does not share or alter the default object', () => {
    const settings = gateSettings(undefined);
    settings.minSuccessRate = 0.1;
    expect(DEFAULT_GATE.minSuccessRate).toBe(0.9);
    expect(gateSettings(undefined).minSuccessRate).toBe(0.9);
  });
});

describe('successRate', () => {
  it('is 1 while no record is decided', () => {
    expect(successRate(wave())).toBe(1);
    expect(successRate(wave({ waiting: 5, processing: 3 }))).toBe(1);
    expect(successRate(wave({ canceled: 4 }))).toBe(1);
  });

  it('is success over succeeded + failed', () => {
    expect(successRate(wave({ success: 3, failed: 1 }))).toBe(0.75);
    expect(successRate(wave({ success: 0, failed: 2 }))).toBe(0);
    expect(successRate(wave({ success: 19, failed: 1 }))).toBe(0.95);
  });

  it('counts canceled records neither as success nor as failure', () => {
    expect(successRate(wave({ success: 3, failed: 1, canceled: 100 }))).toBe(0.75);
    expect(successRate(wave({ success: 0, failed: 1, canceled: 9 }))).toBe(0);
  });
});

describe('evaluateGate', () => {
  describe('running', () => {
    it('stays running while too few records are final', () => {
      expect(evaluateGate(wave({ success: 9, waiting: 1 }), gate(), NOW)).toEqual({ state: 'running', gateMetAt: null, action: 'none' });
      expect(evaluateGate(wave({ processing: 10 }), gate(), NOW)).toEqual({ state: 'running', gateMetAt: null, action: 'none' });
    });

    it('moves a pending wave to running', () => {
      expect(evaluateGate(wave({ state: 'pending', waiting: 10 }), gate(), NOW)).toEqual({ state: 'running', gateMetAt: null, action: 'none' });
    });

    it('counts canceled records as final', () => {
      expect(evaluateGate(wave({ success: 9, canceled: 1 }), gate(), NOW)).toEqual({ state: 'passed', gateMetAt: NOW, action: 'open_next' });
      expect(evaluateGate(wave({ canceled: 5 }), gate(), NOW)).toEqual({ state: 'passed', gateMetAt: NOW, action: 'open_next' });
    });
  });

  describe('met, soak', () => {
    it('passes at once without soak or approval, setting gateMetAt to now', () => {
      expect(evaluateGate(wave({ success: 10 }), gate(), NOW)).toEqual({ state: 'passed', gateMetAt: NOW, action: 'open_next' });
    });

    it('passes at exactly minSuccessRate', () => {
      expect(evaluateGate(wave({ success: 9, failed: 1 }), gate(), NOW)).toEqual({ state: 'passed', gateMetAt: NOW, action: 'open_next' });
    });

    it('soaks from the moment the gate is first met', () => {
      expect(evaluateGate(wave({ success: 10 }), gate({ soakSeconds: 60 }), NOW)).toEqual({ state: 'soaking', gateMetAt: NOW, action: 'none' });
    });

    it('keeps the wave\'s gateMetAt and soaks until soakSeconds after it', () => {
      const met = NOW - 120_000;
      const soaking = wave({ success: 10, state: 'soaking', gateMetAt: met });
      const settings = gate({ soakSeconds: 300 });
      expect(evaluateGate(soaking, settings, NOW)).toEqual({ state: 'soaking', gateMetAt: met, action: 'none' });
      expect(evaluateGate(soaking, settings, met + 300_000 - 1)).toEqual({ state: 'soaking', gateMetAt: met, action: 'none' });
    });

    it('passes exactly at gateMetAt + soakSeconds', () => {
      const met = NOW - 300_000;
      const soaking = wave({ success: 10, state: 'soaking', gateMetAt: met });
      expect(evaluateGate(soaking, gate({ soakSeconds: 300 }), NOW)).toEqual({ state: 'passed', gateMetAt: met, action: 'open_next' });
      expect(evaluateGate(soaking, gate({ soakSeconds: 300 }), NOW + 1)).toEqual({ state: 'passed', gateMetAt: met, action: 'open_next' });
    });
  });

  describe('approval', () => {
    it('awaits approval once met (and soaked)', () => {
      expect(evaluateGate(wave({ success: 10 }), gate({ approval: true }), NOW)).toEqual({ state: 'awaiting_approval', gateMetAt: NOW, action: 'none' });
      const met = NOW - 60_000;
      const soaked = wave({ success: 10, state: 'soaking', gateMetAt: met });
      expect(evaluateGate(soaked, gate({ approval: true, soakSeconds: 60 }), NOW)).toEqual({ state: 'awaiting_approval', gateMetAt: met, action: 'none' });
    });

    it('soaks before asking for approval, even when already approved', () => {
      const approvedEarly = wave({ success: 10, approved: true });
      expect(evaluateGate(approvedEarly, gate({ approval: true, soakSeconds: 60 }), NOW)).toEqual({ state: 'soaking', gateMetAt: NOW, action: 'none' });
    });

    it('passes once approved', () => {
      const met = NOW - 5_000;
      const awaiting = wave({ success: 10, state: 'awaiting_approval', gateMetAt: met });
      expect(evaluateGate(awaiting, gate({ approval: true }), NOW)).toEqual({ state: 'awaiting_approval', gateMetAt: met, action: 'none' });
      expect(evaluateGate({ ...awaiting, approved: true }, gate({ approval: true }), NOW)).toEqual({ state: 'passed', gateMetAt: met, action: 'open_next' });
    });

    it('does not pass on approval alone while the gate is not met', () => {
      expect(evaluateGate(wave({ success: 5, waiting: 5, approved: true }), gate({ approval: true }), NOW)).toEqual({
        state: 'running',
        gateMetAt: null,
        action: 'none',
      });
    });
  });

  describe('early failure', () => {
    const strict = gate({ minSuccessRate: 0.95 });

    it('fails with 2 failures of 20 at 0.95 while others are still waiting or processing', () => {
      const decision = evaluateGate(wave({ failed: 2, success: 3, waiting: 10, processing: 5 }), strict, NOW);
      expect(decision).toEqual({ state: 'failed', gateMetAt: null, action: 'pause' });
    });

    it('fails with 2 failures of 20 before any success', () => {
      expect(evaluateGate(wave({ failed: 2, waiting: 18 }), strict, NOW)).toEqual({ state: 'failed', gateMetAt: null, action: 'pause' });
    });

    it('keeps going with 1 failure of 20 (19/20 = 0.95 still reachable)', () => {
      expect(evaluateGate(wave({ failed: 1, success: 3, waiting: 10, processing: 6 }), strict, NOW)).toEqual({
        state: 'running',
        gateMetAt: null,
        action: 'none',
      });
      expect(evaluateGate(wave({ failed: 1, success: 19 }), strict, NOW)).toEqual({ state: 'passed', gateMetAt: NOW, action: 'open_next' });
    });

    it('fails when all records are final and the rate is too low', () => {
      expect(evaluateGate(wave({ failed: 2, success: 8 }), gate(), NOW)).toEqual({ state: 'failed', gateMetAt: null, action: 'pause' });
    });

    it('leaves canceled records out of the reachable rate', () => {
      // 18 could still succeed, 1 failed: 18/19 < 0.95 although 19 of 20 records are not failures
      expect(evaluateGate(wave({ failed: 1, canceled: 1, waiting: 18 }), strict, NOW)).toEqual({ state: 'failed', gateMetAt: null, action: 'pause' });
    });

    it('fails a soaking wave whose rate became unreachable, clearing gateMetAt', () => {
      const soaking = wave({ success: 10, failed: 2, waiting: 0, state: 'soaking', gateMetAt: NOW - 1_000 });
      expect(evaluateGate(soaking, gate({ soakSeconds: 60 }), NOW)).toEqual({ state: 'failed', gateMetAt: null, action: 'pause' });
    });
  });

  describe('a met gate no longer met', () => {
    it('goes back to running with gateMetAt null when failures arrive during soak', () => {
      const settings = gate({ minFinished: 0.5, soakSeconds: 600 });
      const met = NOW - 60_000;
      expect(evaluateGate(wave({ success: 10, waiting: 10 }), settings, met)).toEqual({ state: 'soaking', gateMetAt: met, action: 'none' });
      // 10/12 < 0.9 now, but 18/20 = 0.9 is still reachable
      const later = wave({ success: 10, failed: 2, waiting: 8, state: 'soaking', gateMetAt: met });
      expect(evaluateGate(later, settings, NOW)).toEqual({ state: 'running', gateMetAt: null, action: 'none' });
    });

    it('goes back to running from awaiting_approval as well', () => {
      const settings = gate({ minFinished: 0.5, approval: true });
      const later = wave({ success: 10, failed: 2, waiting: 8, state: 'awaiting_approval', gateMetAt: NOW - 1_000, approved: true });
      expect(evaluateGate(later, settings, NOW)).toEqual({ state: 'running', gateMetAt: null, action: 'none' });
    });
  });

  describe('final states', () => {
    it('leaves a passed wave as it is', () => {
      const passed = wave({ success: 0, failed: 10, state: 'passed', gateMetAt: NOW - 10 });
      expect(evaluateGate(passed, gate(), NOW)).toEqual({ state: 'passed', gateMetAt: NOW - 10, action: 'none' });
    });

    it('leaves a failed wave as it is', () => {
      const failed = wave({ success: 10, state: 'failed', gateMetAt: null });
      expect(evaluateGate(failed, gate(), NOW)).toEqual({ state: 'failed', gateMetAt: null, action: 'none' });
    });
  });

  describe('sizes and minFinished', () => {
    it('passes an empty wave at once', () => {
      const empty = wave();
      expect(empty.total).toBe(0);
      expect(evaluateGate(empty, gate(), NOW)).toEqual({ state: 'passed', gateMetAt: NOW, action: 'open_next' });
      expect(evaluateGate(empty, gate({ minSuccessRate: 1 }), NOW)).toEqual({ state: 'passed', gateMetAt: NOW, action: 'open_next' });
    });

    it('passes with minFinished 0.5 once half the records are final at a good rate', () => {
      const settings = gate({ minFinished: 0.5 });
      expect(evaluateGate(wave({ success: 10, waiting: 6, processing: 4 }), settings, NOW)).toEqual({ state: 'passed', gateMetAt: NOW, action: 'open_next' });
      expect(evaluateGate(wave({ success: 9, failed: 1, waiting: 10 }), settings, NOW)).toEqual({ state: 'passed', gateMetAt: NOW, action: 'open_next' });
    });

    it('keeps running with minFinished 0.5 just below half final', () => {
      const settings = gate({ minFinished: 0.5 });
      expect(evaluateGate(wave({ success: 9, waiting: 11 }), settings, NOW)).toEqual({ state: 'running', gateMetAt: null, action: 'none' });
    });

    it('keeps running with minFinished 0.5 when half are final but their rate is too low', () => {
      const settings = gate({ minFinished: 0.5 });
      // 8/10 now, 18/20 still reachable
      expect(evaluateGate(wave({ success: 8, failed: 2, waiting: 10 }), settings, NOW)).toEqual({ state: 'running', gateMetAt: null, action: 'none' });
    });
  });
});

describe('waveProblems', () => {
  it('accepts increasing percentages and device counts', () => {
    expect(waveProblems([{ percent: 1 }, { percent: 10 }, { percent: 50 }, { percent: 100 }])).toEqual([]);
    expect(waveProblems([{ devices: 5 }, { devices: 50 }, { devices: 500 }])).toEqual([]);
    expect(waveProblems([{ percent: 100 }])).toEqual([]);
    expect(waveProblems([])).toEqual([]);
  });

  it('flags an equal percentage', () => {
    expect(waveProblems([{ percent: 10 }, { percent: 10 }])).toEqual([
      { path: '/waves/1/percent', message: "waves are cumulative: must be more than wave 1's 10" },
    ]);
  });

  it('flags a decreasing percentage at its index', () => {
    expect(waveProblems([{ percent: 10 }, { percent: 50 }, { percent: 20 }, { percent: 100 }])).toEqual([
      { path: '/waves/2/percent', message: "waves are cumulative: must be more than wave 2's 50" },
    ]);
  });

  it('flags equal and decreasing device counts', () => {
    expect(waveProblems([{ devices: 50 }, { devices: 50 }, { devices: 10 }])).toEqual([
      { path: '/waves/1/devices', message: "waves are cumulative: must be more than wave 1's 50" },
      { path: '/waves/2/devices', message: "waves are cumulative: must be more than wave 2's 50" },
    ]);
  });

  it('flags a wave mixing percentages and device counts', () => {
    expect(waveProblems([{ percent: 10 }, { devices: 100 }])).toEqual([{ path: '/waves/1', message: 'waves are all percentages or all device counts' }]);
    expect(waveProblems([{ devices: 10 }, { devices: 20 }, { percent: 50 }])).toEqual([
      { path: '/waves/2', message: 'waves are all percentages or all device counts' },
    ]);
  });
});

describe('rampRate', () => {
  const ramp = { startPerMinute: 60, factor: 2, everySucceeded: 20 };

  it('multiplies the start rate by factor for every everySucceeded successes', () => {
    const rates = [0, 19, 20, 39, 40, 59, 60].map((succeeded) => rampRate(ramp, succeeded));
    expect(rates).toEqual([60, 60, 120, 120, 240, 240, 480]);
  });

  it('rounds a fractional rate down', () => {
    const rates = [0, 20, 40, 60].map((succeeded) => rampRate({ startPerMinute: 60, factor: 1.5, everySucceeded: 20 }, succeeded));
    expect(rates).toEqual([60, 90, 135, 202]);
  });

  it('never goes above maxPerMinute', () => {
    expect(rampRate(ramp, 40, 300)).toBe(240);
    expect(rampRate(ramp, 60, 300)).toBe(300);
    expect(rampRate(ramp, 10_000, 300)).toBe(300);
    expect(rampRate({ startPerMinute: 500, factor: 2, everySucceeded: 20 }, 0, 300)).toBe(300);
  });

  it('keeps the start rate with a factor of 1', () => {
    const flat = { startPerMinute: 60, factor: 1, everySucceeded: 20 };
    expect([0, 20, 1_000, 10_000_000, Number.MAX_SAFE_INTEGER].map((succeeded) => rampRate(flat, succeeded))).toEqual([60, 60, 60, 60, 60]);
  });

  it('never gives Infinity or NaN for huge success counts', () => {
    const steep = { startPerMinute: 10_000_000, factor: 100, everySucceeded: 1 };
    for (const succeeded of [10_000, Number.MAX_SAFE_INTEGER, Number.MAX_VALUE, Number.POSITIVE_INFINITY]) {
      expect(rampRate(steep, succeeded)).toBe(Number.MAX_SAFE_INTEGER);
      expect(rampRate(ramp, succeeded)).toBe(Number.MAX_SAFE_INTEGER);
      expect(rampRate(steep, succeeded, 1_000)).toBe(1_000);
    }
  });
});

describe('currentRate', () => {
  it('follows the ramp, capped by maxPerMinute', () => {
    const ramp = { startPerMinute: 60, factor: 2, everySucceeded: 20 };
    expect(currentRate({ ramp }, 40)).toBe(240);
    expect(currentRate({ ramp, maxPerMinute: 100 }, 0)).toBe(60);
    expect(currentRate({ ramp, maxPerMinute: 100 }, 40)).toBe(100);
  });

  it('is maxPerMinute without a ramp, whatever succeeded', () => {
    expect(currentRate({ maxPerMinute: 500 }, 0)).toBe(500);
    expect(currentRate({ maxPerMinute: 500 }, 1_000_000)).toBe(500);
  });

  it('is undefined with neither ramp nor maxPerMinute', () => {
    expect(currentRate({}, 0)).toBeUndefined();
    expect(currentRate({ maxInFlight: 10 }, 100)).toBeUndefined();
  });
});

describe('rampRate with a small factor', () => {
  it('keeps growing until the cap, however many steps it takes', () => {
    expect(rampRate({ startPerMinute: 1, factor: 1.1, everySucceeded: 1 }, 100, 1_000_000)).toBe(13_780);
    expect(rampRate({ startPerMinute: 1, factor: 1.01, everySucceeded: 1 }, 10_000, 500)).toBe(500);
  });
});
