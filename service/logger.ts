// The one pino logger of a process: JSON lines on stdout, level from LOG_LEVEL.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { service: 'otter', pid: process.pid, ...bindings } });
}
