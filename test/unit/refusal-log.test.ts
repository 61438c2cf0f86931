// Refusal logging under a flood: one line per reason per 10 s window, with the count and one
// (truncated) example; a fake clock makes the windows exact.
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RefusalLog, truncateExample } from '../../services/refusal-log.ts';

interface Line {
  level: number;
  msg: string;
  reason: string;
  count: number;
  windowSeconds: number;
  example?: Record<string, unknown>;
}

function capture() {
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      raw.push(chunk.toString());
      callback();
    },
  });
  const logger = pino({ level: 'info' }, stream);
  return { logger, raw, lines: () => raw.map((line) => JSON.parse(line) as Line) };
}

describe('RefusalLog', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('a flood of 5,000 refusals in a few seconds writes one line now and one with the count after 10 s', () => {
    const { logger, lines } = capture();
    const log = new RefusalLog(logger);
    for (let i = 0; i < 5_000; i += 1) {
      log.note('rate_limited', { deviceId: 'flooder', messageType: 'UPGRADE_FIRMWARE_PROGRESS', detail: `message ${i}` });
      if (i % 1_000 === 999) vi.advanceTimersByTime(1_000);
    }
    expect(lines()).toHaveLength(1);
    expect(lines()[0]).toMatchObject({ level: 40, msg: 'device messages refused', reason: 'rate_limited', count: 1, example: { deviceId: 'flooder', detail: 'message 0' } });
    vi.advanceTimersByTime(5_000);
    expect(lines()).toHaveLength(2);
    expect(lines()[1]).toMatchObject({ reason: 'rate_limited', count: 4_999, windowSeconds: 10, example: { detail: 'message 1' } });
    // quiet afterwards: nothing more, and the next refusal is written at once again
    vi.advanceTimersByTime(60_000);
    expect(lines()).toHaveLength(2);
    log.note('rate_limited', { deviceId: 'flooder' });
    expect(lines()).toHaveLength(3);
  });

  it('a steady stream is one line per 10 s, every refusal counted once', () => {
    const { logger, lines } = capture();
    const log = new RefusalLog(logger);
    // 100 refusals a second for a minute
    for (let ms = 0; ms < 60_000; ms += 10) {
      log.note('product_mismatch', { deviceId: 'd' });
      vi.advanceTimersByTime(10);
    }
    log.flush();
    const written = lines();
    expect(written.length).toBeLessThanOrEqual(8);
    expect(written.reduce((sum, line) => sum + line.count, 0)).toBe(6_000);
  });

  it('reasons are counted apart', () => {
    const { logger, lines } = capture();
    const log = new RefusalLog(logger);
    for (let i = 0; i < 10; i += 1) {
      log.note('too_large', { deviceId: 'a' });
      log.note('bad_json', { deviceId: 'b' });
    }
    vi.advanceTimersByTime(10_000);
    expect(lines().map((line) => [line.reason, line.count])).toEqual([
      ['too_large', 1],
      ['bad_json', 1],
      ['too_large', 9],
      ['bad_json', 9],
    ]);
  });

  it('a 64 KB topic never reaches a log line whole', () => {
    const { logger, raw } = capture();
    const log = new RefusalLog(logger);
    const topic = `/p/${'x'.repeat(65_000)}/firmware/progress`;
    log.note('unknown_topic', { source: topic, detail: `unknown topic ${topic}` });
    log.note('unknown_topic', { source: topic, detail: `unknown topic ${topic}` });
    vi.advanceTimersByTime(10_000);
    expect(raw).toHaveLength(2);
    for (const line of raw) expect(line.length).toBeLessThan(1_000);
    expect(truncateExample({ source: topic }).source).toBe(`${topic.slice(0, 200)}… (${topic.length} characters)`);
  });

  it('flush writes what was counted and stops the windows', () => {
    const { logger, lines } = capture();
    const log = new RefusalLog(logger, { level: 'error', message: 'device messages not applied' });
    log.note('internal_error', { err: 'boom' });
    log.note('internal_error', { err: 'boom again' });
    log.flush();
    expect(lines().map((line) => [line.level, line.msg, line.count])).toEqual([
      [50, 'device messages not applied', 1],
      [50, 'device messages not applied', 1],
    ]);
    vi.advanceTimersByTime(20_000);
    expect(lines()).toHaveLength(2);
  });
});
