// Otter as separate OS processes (`node --import tsx service/main.ts`), for tests that need
// several workers, or that stop or kill one. Each serves /health on its own port.
import { spawn, type ChildProcess } from 'node:child_process';
import type { Config } from '../../core/config.ts';
import { TEST_API_KEY } from './env.ts';
import { freePort } from '../../tools/ports.ts';

export { freePort };

export interface OtterProcess {
  child: ChildProcess;
  port: number;
  baseUrl: string;
  output(): string;
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>;
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

function definedOnly(values: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(Object.entries(values).filter((entry): entry is [string, string] => entry[1] !== undefined));
}

/** The environment of a process sharing `config`'s database, Redis, broker and queue prefix. */
export function envFor(config: Config, extra: Record<string, string>): Record<string, string> {
  return {
    DATABASE_URL: config.databaseUrl,
    REDIS_URL: config.redisUrl,
    MQTT_URL: config.mqttUrl,
    // the broker account and TLS files, where the test's broker has them
    ...definedOnly({
      MQTT_USERNAME: config.mqttUsername,
      MQTT_PASSWORD: config.mqttPassword,
      MQTT_CA_FILE: config.mqttCaFile,
      MQTT_CERT_FILE: config.mqttCertFile,
      MQTT_KEY_FILE: config.mqttKeyFile,
    }),
    QUEUE_PREFIX: config.queuePrefix,
    API_KEYS: TEST_API_KEY,
    URL_SIGNING_SECRET: config.urlSigningSecret,
    STORAGE_DIR: config.storageDir,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'warn',
    ...extra,
  };
}

export async function spawnOtter(env: Record<string, string>): Promise<OtterProcess> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'service/main.ts'], {
    env: { ...process.env, ...env, PORT: String(port), HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  const baseUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`otter exited with ${child.exitCode}: ${output}`);
    try {
      if ((await fetch(`${baseUrl}/health/ready`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`otter was not ready within 30 s: ${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    child,
    port,
    baseUrl,
    output: () => output,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/**
 * `count` ROLE=worker processes sharing `config`'s database, Redis, broker and queue prefix, all
 * ready; if one fails to start, the others are stopped and the error thrown.
 */
export async function spawnWorkers(config: Config, count: number, extra: Record<string, string> = {}): Promise<OtterProcess[]> {
  const started = await Promise.allSettled(Array.from({ length: count }, () => spawnOtter(envFor(config, { ROLE: 'worker', ...extra }))));
  const workers = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const failed = started.find((result) => result.status === 'rejected');
  if (failed) {
    await Promise.all(workers.map((worker) => worker.stop()));
    throw failed.reason;
  }
  return workers;
}
