// Maintenance windows: when a task may send. A window starts at a local wall-clock time on the
// local weekdays listed and lasts `durationMinutes` real minutes (so across a DST change it still
// lasts that long, and its local end moves by the shift); one that crosses midnight belongs to the
// day it starts. An instant is inside a window from its start (inclusive) to its end (exclusive);
// no windows at all means always open.
//
// Local time to instant, as Temporal's 'compatible' disambiguation does:
// - a local start that does not exist (the spring-forward gap) is shifted forward by the gap:
//   02:30 on the night Europe/Berlin goes 02:00 -> 03:00 starts at 03:30 local (01:30Z);
// - an ambiguous local start (the fall-back hour happens twice) takes the earlier instant:
//   02:30 on the night Europe/Berlin goes 03:00 -> 02:00 starts at 02:30 summer time (00:30Z).
//
// Offsets come from Intl (no time zone data of our own). This runs in the dispatcher's hot loop:
// formatters are cached per zone and window starts per zone and local time, so a check is a few
// map look-ups once warm.

export type Weekday = 'mon' | 'tue' | 'wed' | 'thu' | 'fri' | 'sat' | 'sun';

export interface MaintenanceWindow {
  /** Local weekdays on which the window starts: non-empty, unique. */
  days: Weekday[];
  /** Local wall-clock start, "HH:MM" (24 h). */
  start: string;
  /** Real elapsed minutes, 1..10080. */
  durationMinutes: number;
  /** IANA time zone name. */
  timeZone: string;
}

const MINUTE_MS = 60_000;
const DAY_MS = 86_400_000;
const MAX_DURATION_MINUTES = 10_080;
/** Days searched ahead of the local day for the next start: a week always holds one. */
const SEARCH_AHEAD_DAYS = 8;
/** Hops followed through back-to-back windows by windowEndsAt: windows covering the whole week never end. */
const MAX_CHAIN_HOPS = 32;
/** Cached starts per zone before that zone's cache is dropped: bounds memory. */
const MAX_STARTS_PER_ZONE = 4_096;

/** Date.getUTCDay() numbering. */
const WEEKDAY_INDEX: Readonly<Record<Weekday, number>> = { sun: 0, mon: 1, tue: 2, wed: 3, thu: 4, fri: 5, sat: 6 };
const START_PATTERN = /^([01]\d|2[0-3]):([0-5]\d)$/;

/** A window checked and reduced to numbers. */
interface Compiled {
  /** Bit n set: starts on getUTCDay() n of the local date. */
  dayMask: number;
  startMs: number;
  durationMs: number;
  timeZone: string;
}

const formatters = new Map<string, Intl.DateTimeFormat>();
/** Per zone: local wall time (as if UTC, ms) of a start -> its instant. */
const startCache = new Map<string, Map<number, number>>();

/** Throws RangeError on a bad time zone (Intl's own error). */
function formatterFor(timeZone: string): Intl.DateTimeFormat {
  let formatter = formatters.get(timeZone);
  if (!formatter) {
    formatter = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(timeZone, formatter);
  }
  return formatter;
}

/** True when Intl knows `name` as a time zone. Offset forms ("+01:00") are not IANA names. */
export function isValidTimeZone(name: string): boolean {
  if (name === '' || name.startsWith('+') || name.startsWith('-')) return false;
  try {
    formatterFor(name);
    return true;
  } catch {
    return false;
  }
}

/** The zone's offset from UTC at `instant`, in ms (local = instant + offset). */
function offsetAt(timeZone: string, instant: number): number {
  // Intl shows whole seconds: compare against the instant cut to its second
  const seconds = instant - (((instant % 1000) + 1000) % 1000);
  let year = 0;
  let month = 1;
  let day = 1;
  let hour = 0;
  let minute = 0;
  let second = 0;
  for (const part of formatterFor(timeZone).formatToParts(seconds)) {
    switch (part.type) {
      case 'year': year = Number(part.value); break;
      case 'month': month = Number(part.value); break;
      case 'day': day = Number(part.value); break;
      case 'hour': hour = Number(part.value); break;
      case 'minute': minute = Number(part.value); break;
      case 'second': second = Number(part.value); break;
      default: break;
    }
  }
  return Date.UTC(year, month - 1, day, hour, minute, second) - seconds;
}

/** The instant of local wall time `wall` (ms, as if UTC) in `timeZone`, per the module's gap/overlap rules. */
function localToInstant(timeZone: string, wall: number): number {
  // the offsets a day either side bracket any transition near `wall` (as Temporal's polyfill does)
  const before = offsetAt(timeZone, wall - DAY_MS);
  const after = offsetAt(timeZone, wall + DAY_MS);
  let found: number | undefined;
  for (const offset of before === after ? [before] : [before, after]) {
    const instant = wall - offset;
    if (offsetAt(timeZone, instant) === offset && (found === undefined || instant < found)) found = instant;
  }
  // no offset fits: `wall` is in a gap, and the offset before it moves it forward by the gap
  return found ?? wall - before;
}

function startInstant(timeZone: string, wall: number): number {
  let zone = startCache.get(timeZone);
  if (!zone) {
    zone = new Map();
    startCache.set(timeZone, zone);
  }
  let instant = zone.get(wall);
  if (instant === undefined) {
    if (zone.size >= MAX_STARTS_PER_ZONE) zone.clear();
    instant = localToInstant(timeZone, wall);
    zone.set(wall, instant);
  }
  return instant;
}

/** Checks a window; throws RangeError on one that is malformed (they should be validated on the way in). */
function compile(window: MaintenanceWindow): Compiled {
  const match = START_PATTERN.exec(window.start);
  if (!match) throw new RangeError(`maintenance window start "${window.start}" is not HH:MM`);
  const { durationMinutes } = window;
  if (!Number.isInteger(durationMinutes) || durationMinutes < 1 || durationMinutes > MAX_DURATION_MINUTES) {
    throw new RangeError(`maintenance window duration ${durationMinutes} is not 1..${MAX_DURATION_MINUTES} minutes`);
  }
  let dayMask = 0;
  for (const day of window.days) {
    // own keys only: "constructor" is not a weekday
    const index = Object.hasOwn(WEEKDAY_INDEX, day) ? WEEKDAY_INDEX[day] : undefined;
    if (index === undefined) throw new RangeError(`maintenance window day "${String(day)}" is not mon..sun`);
    dayMask |= 1 << index;
  }
  if (dayMask === 0) throw new RangeError('maintenance window has no days');
  formatterFor(window.timeZone);
  return {
    dayMask,
    startMs: (Number(match[1]) * 60 + Number(match[2])) * MINUTE_MS,
    durationMs: durationMinutes * MINUTE_MS,
    timeZone: window.timeZone,
  };
}

/** The start instant of `window` on local date `date` (UTC-midnight ms), or undefined when it does not start that day. */
function startOn(window: Compiled, date: number): number | undefined {
  if ((window.dayMask & (1 << new Date(date).getUTCDay())) === 0) return undefined;
  return startInstant(window.timeZone, date + window.startMs);
}

/** The latest end among `windows` open at `at` (the first found when `anyWillDo`), or undefined when none is. */
function latestEnd(windows: readonly Compiled[], at: number, anyWillDo: boolean): number | undefined {
  // the local date is the UTC date +-1; a window's local span exceeds its real one by at most a
  // day of offset change, so starts further back than this have ended
  const utcDate = Math.floor(at / DAY_MS) * DAY_MS;
  let end: number | undefined;
  for (const window of windows) {
    const back = Math.ceil(window.durationMs / DAY_MS) + 2;
    for (let date = utcDate - back * DAY_MS; date <= utcDate + DAY_MS; date += DAY_MS) {
      const start = startOn(window, date);
      if (start === undefined || start > at) continue;
      const windowEnd = start + window.durationMs;
      if (at >= windowEnd) continue;
      if (anyWillDo) return windowEnd;
      if (end === undefined || windowEnd > end) end = windowEnd;
    }
  }
  return end;
}

/** True when `at` is inside one of `windows`, or there are none. */
export function windowOpenAt(windows: readonly MaintenanceWindow[], at: Date): boolean {
  if (windows.length === 0) return true;
  return latestEnd(windows.map(compile), at.getTime(), true) !== undefined;
}

/**
 * The next window start strictly after `at`; null when there are no windows or one is open at
 * `at` (sends are allowed now).
 */
export function nextWindowAt(windows: readonly MaintenanceWindow[], at: Date): Date | null {
  if (windows.length === 0) return null;
  const compiled = windows.map(compile);
  const now = at.getTime();
  if (latestEnd(compiled, now, true) !== undefined) return null;
  const utcDate = Math.floor(now / DAY_MS) * DAY_MS;
  let next: number | undefined;
  for (const window of compiled) {
    for (let date = utcDate - DAY_MS; date <= utcDate + (SEARCH_AHEAD_DAYS + 1) * DAY_MS; date += DAY_MS) {
      const start = startOn(window, date);
      if (start !== undefined && start > now && (next === undefined || start < next)) next = start;
    }
  }
  return next === undefined ? null : new Date(next);
}

/**
 * When the window(s) open at `at` close: through back-to-back or overlapping windows to the end
 * of the chain (at most MAX_CHAIN_HOPS of them). Null when closed at `at` or there are no windows.
 */
export function windowEndsAt(windows: readonly MaintenanceWindow[], at: Date): Date | null {
  if (windows.length === 0) return null;
  const compiled = windows.map(compile);
  let end = latestEnd(compiled, at.getTime(), false);
  if (end === undefined) return null;
  for (let hop = 0; hop < MAX_CHAIN_HOPS; hop += 1) {
    const further = latestEnd(compiled, end, false);
    if (further === undefined) break;
    end = further;
  }
  return new Date(end);
}
