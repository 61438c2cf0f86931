// Maintenance windows: local weekday + wall-clock start + real duration, checked against concrete
// UTC instants (DST gaps and overlaps in both hemispheres, half-hour zones), then a seeded
// property check that "open", "next start" and "end" agree with each other over 2026.
import { describe, expect, it } from 'vitest';
import {
  isValidTimeZone,
  nextWindowAt,
  windowEndsAt,
  windowOpenAt,
  type MaintenanceWindow,
  type Weekday,
} from '../../core/maintenance-windows.ts';

const WEEKDAYS: Weekday[] = ['mon', 'tue', 'wed', 'thu', 'fri'];

function at(iso: string): Date {
  return new Date(Date.parse(iso));
}

function win(timeZone: string, days: Weekday[], start: string, durationMinutes: number): MaintenanceWindow {
  return { days, start, durationMinutes, timeZone };
}

function open(windows: readonly MaintenanceWindow[], iso: string): boolean {
  return windowOpenAt(windows, at(iso));
}

function next(windows: readonly MaintenanceWindow[], iso: string): string | undefined {
  return nextWindowAt(windows, at(iso))?.toISOString();
}

function ends(windows: readonly MaintenanceWindow[], iso: string): string | undefined {
  return windowEndsAt(windows, at(iso))?.toISOString();
}

/** Asserts `windows` open exactly over [startIso, endIso). */
function expectSpan(windows: readonly MaintenanceWindow[], startIso: string, endIso: string): void {
  const start = Date.parse(startIso);
  const end = Date.parse(endIso);
  expect(windowOpenAt(windows, new Date(start - 1)), `just before ${startIso}`).toBe(false);
  expect(windowOpenAt(windows, new Date(start)), `at ${startIso}`).toBe(true);
  expect(windowOpenAt(windows, new Date(end - 1)), `just before ${endIso}`).toBe(true);
  expect(windowOpenAt(windows, new Date(end)), `at ${endIso}`).toBe(false);
  expect(nextWindowAt(windows, new Date(start - 60_000))?.toISOString()).toBe(new Date(start).toISOString());
  expect(windowEndsAt(windows, new Date(start))?.toISOString()).toBe(new Date(end).toISOString());
}

/** Seeded PRNG in [0, 1): the property check is the same every run. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** The zone's UTC offset at `iso` as Intl spells it ("GMT+10:30"). */
function intlOffset(timeZone: string, iso: string): string | undefined {
  return new Intl.DateTimeFormat('en-US', { timeZone, timeZoneName: 'longOffset' })
    .formatToParts(at(iso))
    .find((part) => part.type === 'timeZoneName')?.value;
}

describe('no windows', () => {
  it('is always open, with no next start and no end', () => {
    expect(open([], '2026-05-05T12:34:56.789Z')).toBe(true);
    expect(nextWindowAt([], at('2026-05-05T12:34:56.789Z'))).toBeNull();
    expect(windowEndsAt([], at('2026-05-05T12:34:56.789Z'))).toBeNull();
  });
});

describe('a weekday window in Europe/Berlin (02:00 for 180 minutes, mon-fri)', () => {
  const berlin = [win('Europe/Berlin', WEEKDAYS, '02:00', 180)];

  it('in winter (UTC+1) opens 01:00Z and closes 04:00Z', () => {
    // Friday 2026-01-16
    expectSpan(berlin, '2026-01-16T01:00:00.000Z', '2026-01-16T04:00:00.000Z');
    expect(open(berlin, '2026-01-16T02:30:00.000Z')).toBe(true);
    expect(next(berlin, '2026-01-16T02:30:00.000Z')).toBeUndefined();
  });

  it('in summer (UTC+2) opens 00:00Z and closes 03:00Z', () => {
    // Friday 2026-07-17
    expectSpan(berlin, '2026-07-17T00:00:00.000Z', '2026-07-17T03:00:00.000Z');
  });

  it('is closed over the weekend and next opens Monday 02:00 local', () => {
    expect(open(berlin, '2026-01-17T01:30:00.000Z')).toBe(false); // Saturday 02:30 local
    expect(open(berlin, '2026-01-18T01:30:00.000Z')).toBe(false); // Sunday 02:30 local
    expect(next(berlin, '2026-01-16T04:00:00.000Z')).toBe('2026-01-19T01:00:00.000Z');
    expect(next(berlin, '2026-01-16T22:00:00.000Z')).toBe('2026-01-19T01:00:00.000Z'); // Friday night
    expect(next(berlin, '2026-07-17T20:00:00.000Z')).toBe('2026-07-20T00:00:00.000Z'); // summer
    expect(windowEndsAt(berlin, at('2026-01-17T01:30:00.000Z'))).toBeNull();
  });
});

describe('a window crossing midnight in America/New_York (Saturday 22:00 for 240 minutes)', () => {
  const ny = [win('America/New_York', ['sat'], '22:00', 240)];

  it('runs Saturday 22:00 to Sunday 02:00 local and belongs to Saturday', () => {
    // Saturday 2026-01-17 22:00 EST = 2026-01-18T03:00Z
    expectSpan(ny, '2026-01-18T03:00:00.000Z', '2026-01-18T07:00:00.000Z');
    expect(open(ny, '2026-01-18T06:00:00.000Z')).toBe(true); // Sunday 01:00 local
    expect(open(ny, '2026-01-18T07:00:00.000Z')).toBe(false); // Sunday 02:00 local
    expect(open(ny, '2026-01-19T06:00:00.000Z')).toBe(false); // Monday 01:00 local
    expect(open(ny, '2026-01-17T04:00:00.000Z')).toBe(false); // Friday 23:00 local
    expect(open(ny, '2026-01-18T02:59:00.000Z')).toBe(false); // Saturday 21:59 local
    expect(next(ny, '2026-01-18T07:00:00.000Z')).toBe('2026-01-25T03:00:00.000Z');
  });
});

describe('DST spring forward', () => {
  it('Europe/Berlin 2026-03-29: a 02:30 start in the gap starts 03:30 local', () => {
    expectSpan([win('Europe/Berlin', ['sun'], '02:30', 60)], '2026-03-29T01:30:00.000Z', '2026-03-29T02:30:00.000Z');
  });

  it('Europe/Berlin 2026-03-29: a window over the change lasts its real minutes', () => {
    // 01:00 CET to 05:00 CEST local: 180 real minutes
    expectSpan([win('Europe/Berlin', ['sun'], '01:00', 180)], '2026-03-29T00:00:00.000Z', '2026-03-29T03:00:00.000Z');
    // Saturday 23:00 CET to Sunday 04:00 CEST local
    expectSpan([win('Europe/Berlin', ['sat'], '23:00', 240)], '2026-03-28T22:00:00.000Z', '2026-03-29T02:00:00.000Z');
  });

  it('America/New_York 2026-03-08: gap start and real duration', () => {
    // 02:30 does not exist: 03:30 EDT = 07:30Z
    expectSpan([win('America/New_York', ['sun'], '02:30', 60)], '2026-03-08T07:30:00.000Z', '2026-03-08T08:30:00.000Z');
    // 01:00 EST = 06:00Z, 180 minutes later is 05:00 EDT
    expectSpan([win('America/New_York', ['sun'], '01:00', 180)], '2026-03-08T06:00:00.000Z', '2026-03-08T09:00:00.000Z');
  });
});

describe('DST fall back', () => {
  it('Europe/Berlin 2026-10-25: an ambiguous 02:30 takes the earlier one', () => {
    const berlin = [win('Europe/Berlin', ['sun'], '02:30', 60)];
    // 02:30 CEST = 00:30Z; 60 real minutes end at the second 02:30 (CET)
    expectSpan(berlin, '2026-10-25T00:30:00.000Z', '2026-10-25T01:30:00.000Z');
    expect(open(berlin, '2026-10-25T01:45:00.000Z')).toBe(false); // 02:45 CET: no second start
    expect(next(berlin, '2026-10-24T12:00:00.000Z')).toBe('2026-10-25T00:30:00.000Z');
    expect(next(berlin, '2026-10-25T01:30:00.000Z')).toBe('2026-11-01T01:30:00.000Z'); // CET from then
  });

  it('Europe/Berlin 2026-10-25: durations are real minutes', () => {
    // 01:00 CEST = Saturday 23:00Z, 180 minutes later is 03:00 CET
    expectSpan([win('Europe/Berlin', ['sun'], '01:00', 180)], '2026-10-24T23:00:00.000Z', '2026-10-25T02:00:00.000Z');
  });

  it('America/New_York 2026-11-01: an ambiguous 01:30 takes 01:30 EDT', () => {
    expectSpan([win('America/New_York', ['sun'], '01:30', 60)], '2026-11-01T05:30:00.000Z', '2026-11-01T06:30:00.000Z');
  });
});

describe('time zones far from UTC', () => {
  it('Asia/Kolkata (+05:30), on the local weekday, not the UTC one', () => {
    // Wednesday 2026-01-14 09:00 IST
    expectSpan([win('Asia/Kolkata', ['wed'], '09:00', 30)], '2026-01-14T03:30:00.000Z', '2026-01-14T04:00:00.000Z');
    // Monday 02:00 IST is Sunday 20:30Z
    expectSpan([win('Asia/Kolkata', ['mon'], '02:00', 60)], '2026-01-18T20:30:00.000Z', '2026-01-18T21:30:00.000Z');
    expect(open([win('Asia/Kolkata', ['sun'], '02:00', 60)], '2026-01-18T20:30:00.000Z')).toBe(false);
  });

  it('Pacific/Auckland: summer time in January, standard time in July', () => {
    const auckland = [win('Pacific/Auckland', ['mon'], '10:00', 60)];
    expectSpan(auckland, '2026-01-18T21:00:00.000Z', '2026-01-18T22:00:00.000Z'); // NZDT +13
    expectSpan(auckland, '2026-07-19T22:00:00.000Z', '2026-07-19T23:00:00.000Z'); // NZST +12
  });

  it('Pacific/Auckland: spring gap in September, fall-back overlap in April', () => {
    // 2026-09-27 02:00 NZST -> 03:00 NZDT: 02:30 starts 03:30 NZDT
    expectSpan([win('Pacific/Auckland', ['sun'], '02:30', 60)], '2026-09-26T14:30:00.000Z', '2026-09-26T15:30:00.000Z');
    // 2026-04-05 03:00 NZDT -> 02:00 NZST: the earlier 02:30 is NZDT
    expectSpan([win('Pacific/Auckland', ['sun'], '02:30', 60)], '2026-04-04T13:30:00.000Z', '2026-04-04T14:30:00.000Z');
  });

  const lordHowe = intlOffset('Australia/Lord_Howe', '2026-07-15T00:00:00Z') === 'GMT+10:30';
  it.runIf(lordHowe)('Australia/Lord_Howe: a 30-minute DST shift', () => {
    expect(intlOffset('Australia/Lord_Howe', '2026-01-15T00:00:00Z')).toBe('GMT+11:00');
    // 2026-10-04 02:00 -> 02:30: 02:10 starts 02:40 (+11)
    expectSpan([win('Australia/Lord_Howe', ['sun'], '02:10', 30)], '2026-10-03T15:40:00.000Z', '2026-10-03T16:10:00.000Z');
    // 2026-04-05 02:00 -> 01:30: the earlier 01:45 is +11
    expectSpan([win('Australia/Lord_Howe', ['sun'], '01:45', 30)], '2026-04-04T14:45:00.000Z', '2026-04-04T15:15:00.000Z');
    // an ordinary winter day, +10:30
    expectSpan([win('Australia/Lord_Howe', ['wed'], '12:00', 15)], '2026-07-15T01:30:00.000Z', '2026-07-15T01:45:00.000Z');
  });
});

describe('several windows', () => {
  const berlinMonday = win('Europe/Berlin', ['mon'], '02:00', 60); // Mon 2026-01-19 01:00Z-02:00Z
  const kolkataSaturday = win('Asia/Kolkata', ['sat'], '09:00', 30); // Sat 2026-01-17 03:30Z-04:00Z
  const newYorkSunday = win('America/New_York', ['sun'], '22:00', 60); // Mon 2026-01-19 03:00Z-04:00Z
  const windows = [berlinMonday, newYorkSunday, kolkataSaturday];

  it('is open when any is, and the next start is the earliest', () => {
    expect(open(windows, '2026-01-17T03:45:00.000Z')).toBe(true);
    expect(open(windows, '2026-01-19T01:30:00.000Z')).toBe(true);
    expect(open(windows, '2026-01-19T03:30:00.000Z')).toBe(true);
    expect(open(windows, '2026-01-19T02:30:00.000Z')).toBe(false);
    expect(next(windows, '2026-01-16T12:00:00.000Z')).toBe('2026-01-17T03:30:00.000Z');
    expect(next(windows, '2026-01-17T04:00:00.000Z')).toBe('2026-01-19T01:00:00.000Z');
    expect(next(windows, '2026-01-19T02:00:00.000Z')).toBe('2026-01-19T03:00:00.000Z');
    expect(next(windows, '2026-01-19T01:30:00.000Z')).toBeUndefined();
  });

  it('ends at the end of overlapping and back-to-back windows', () => {
    const chain = [
      berlinMonday,
      win('Europe/Berlin', ['mon'], '02:30', 60), // 01:30Z-02:30Z, overlaps
      win('Europe/Berlin', ['mon'], '03:30', 30), // 02:30Z-03:00Z, back to back
    ];
    expect(ends(chain, '2026-01-19T01:15:00.000Z')).toBe('2026-01-19T03:00:00.000Z');
    expect(ends([berlinMonday], '2026-01-19T01:15:00.000Z')).toBe('2026-01-19T02:00:00.000Z');
  });

  it('handles windows of about a week across a DST change', () => {
    // Monday 2026-03-23 03:00 CET for 9,900 minutes: ends Monday 01:00 CEST, the next starts 03:00 CEST
    const long = [win('Europe/Berlin', ['mon'], '03:00', 9_900)];
    expectSpan(long, '2026-03-23T02:00:00.000Z', '2026-03-29T23:00:00.000Z');
    expect(next(long, '2026-03-30T00:30:00.000Z')).toBe('2026-03-30T01:00:00.000Z');
    // a full week every Monday overlaps the next one by the lost hour: never closed
    const week = [win('Europe/Berlin', ['mon'], '03:00', 10_080)];
    for (const iso of ['2026-03-23T01:59:59.999Z', '2026-03-29T23:59:00.000Z', '2026-03-30T01:59:59.999Z']) {
      expect(open(week, iso), iso).toBe(true);
      expect(Date.parse(ends(week, iso) ?? '')).toBeGreaterThan(Date.parse(iso));
    }
  });
});

describe('isValidTimeZone', () => {
  it('knows IANA names and refuses others', () => {
    expect(isValidTimeZone('Europe/Berlin')).toBe(true);
    expect(isValidTimeZone('Asia/Kolkata')).toBe(true);
    expect(isValidTimeZone('UTC')).toBe(true);
    expect(isValidTimeZone('Mars/Olympus')).toBe(false);
    expect(isValidTimeZone('')).toBe(false);
    expect(isValidTimeZone('+01:00')).toBe(false);
  });
});

describe('malformed windows', () => {
  it('throw a RangeError', () => {
    const good = win('Europe/Berlin', ['mon'], '02:00', 60);
    const now = at('2026-01-19T01:30:00.000Z');
    expect(() => windowOpenAt([{ ...good, start: '24:00' }], now)).toThrow(RangeError);
    expect(() => windowOpenAt([{ ...good, start: '2:00' }], now)).toThrow(RangeError);
    expect(() => windowOpenAt([{ ...good, durationMinutes: 0 }], now)).toThrow(RangeError);
    expect(() => windowOpenAt([{ ...good, durationMinutes: 10_081 }], now)).toThrow(RangeError);
    expect(() => windowOpenAt([{ ...good, days: [] }], now)).toThrow(RangeError);
    expect(() => windowOpenAt([{ ...good, days: ['monday' as Weekday] }], now)).toThrow(RangeError);
    expect(() => windowOpenAt([{ ...good, days: ['constructor' as Weekday] }], now)).toThrow(RangeError);
    expect(() => windowOpenAt([{ ...good, timeZone: 'Mars/Olympus' }], now)).toThrow(RangeError);
  });
});

describe('properties over 2026', () => {
  const sets: Record<string, MaintenanceWindow[]> = {
    'Berlin weekdays': [win('Europe/Berlin', WEEKDAYS, '02:00', 180)],
    'four zones': [
      win('America/New_York', ['sat'], '22:00', 240),
      win('Pacific/Auckland', ['sun'], '02:30', 60),
      win('Australia/Lord_Howe', ['sun'], '02:10', 30),
      win('Asia/Kolkata', ['wed', 'thu'], '23:45', 20),
    ],
    'DST edges and a long one': [
      win('Europe/Berlin', ['sun'], '02:30', 60),
      win('America/New_York', ['sun'], '01:30', 60),
      win('Australia/Lord_Howe', ['sat', 'sun'], '01:45', 45),
      win('Pacific/Auckland', ['tue'], '12:00', 4_000),
    ],
  };
  const yearStart = Date.UTC(2026, 0, 1);
  const yearMs = Date.UTC(2027, 0, 1) - yearStart;

  for (const [name, windows] of Object.entries(sets)) {
    it(`next start, end and open agree: ${name}`, () => {
      const random = mulberry32(0x5eed + name.length);
      let opened = 0;
      for (let i = 0; i < 2_000; i += 1) {
        let ms = yearStart + Math.floor(random() * yearMs);
        // every other one on a whole quarter hour: window edges sit there
        if (i % 2 === 0) ms -= ms % 900_000;
        const now = new Date(ms);
        if (windowOpenAt(windows, now)) {
          opened += 1;
          expect(nextWindowAt(windows, now)).toBeNull();
          const end = windowEndsAt(windows, now);
          expect(end, now.toISOString()).not.toBeNull();
          expect(end!.getTime()).toBeGreaterThan(ms);
          expect(windowOpenAt(windows, end!), now.toISOString()).toBe(false);
          expect(windowOpenAt(windows, new Date(end!.getTime() - 1)), now.toISOString()).toBe(true);
        } else {
          expect(windowEndsAt(windows, now)).toBeNull();
          const start = nextWindowAt(windows, now);
          expect(start, now.toISOString()).not.toBeNull();
          expect(start!.getTime()).toBeGreaterThan(ms);
          expect(start!.getTime() - ms).toBeLessThanOrEqual(8 * 86_400_000);
          expect(windowOpenAt(windows, start!), now.toISOString()).toBe(true);
          expect(windowOpenAt(windows, new Date(start!.getTime() - 1)), now.toISOString()).toBe(false);
        }
      }
      // both branches ran
      expect(opened).toBeGreaterThan(0);
      expect(opened).toBeLessThan(2_000);
    });
  }
});
