// The container stops Otter gracefully (docs/operations.md#start-up-and-shutdown). No Docker engine
// here: the Dockerfile and docker-compose.yml are read and checked (node itself as CMD, Node 22, an
// init, a grace period longer than the shutdown's own deadline), then the image's exact CMD argv
// runs as a child process, gets SIGTERM once ready, and must exit 0 after its shutdown log line
// within the grace period. The same with `npm start` is measured and logged: it shows why the image
// does not use it.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { parse as parseYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { uniqueName } from '../helpers/database.ts';
import { TEST_API_KEY, TEST_DATABASE_URL, TEST_REDIS_URL } from '../helpers/env.ts';
import { deleteQueueKeys } from '../helpers/queue-keys.ts';
import { freePort } from '../../tools/ports.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');

// ---- the files -------------------------------------------------------------------------------

interface Dockerfile {
  from: string;
  cmd: unknown;
  env: Record<string, string>;
}

/** The final stage's FROM, its CMD (parsed when in exec form) and its ENV. */
function readDockerfile(): Dockerfile {
  const lines = read('Dockerfile')
    .replace(/\\\r?\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  let from = '';
  let cmd: unknown;
  let env: Record<string, string> = {};
  for (const line of lines) {
    const [instruction = '', ...rest] = line.split(/\s+/);
    const argument = line.slice(instruction.length).trim();
    switch (instruction.toUpperCase()) {
      case 'FROM':
        from = rest[0] ?? '';
        cmd = undefined;
        env = {};
        break;
      case 'ENV':
        for (const pair of rest) {
          const at = pair.indexOf('=');
          if (at > 0) env[pair.slice(0, at)] = pair.slice(at + 1);
        }
        break;
      case 'CMD':
        try {
          cmd = JSON.parse(argument);
        } catch {
          cmd = argument; // shell form
        }
        break;
    }
  }
  return { from, cmd, env };
}

interface ComposeService {
  build?: unknown;
  image?: string;
  command?: unknown;
  init?: boolean;
  stop_grace_period?: string;
  restart?: string;
}

function readCompose(): Record<string, ComposeService> {
  const document = parseYaml(read('docker-compose.yml'), { merge: true }) as { services: Record<string, ComposeService> };
  return document.services;
}

/** Compose's duration format (`20s`, `1m30s`, `500ms`) in milliseconds. */
function durationMs(value: string): number {
  const units: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1_000, ms: 1, us: 0.001 };
  const parts = [...value.matchAll(/(\d+(?:\.\d+)?)(h|ms|us|m|s)/g)];
  expect(parts.map((part) => part[0]).join(''), `duration ${value}`).toBe(value);
  return parts.reduce((total, [, amount, unit]) => total + Number(amount) * units[unit!]!, 0);
}

/** The deadline service/main.ts gives its graceful shutdown (close-with-grace's `delay`). */
function shutdownDelayMs(): number {
  const match = read('service/main.ts').match(/closeWithGrace\(\s*\{[^}]*\bdelay:\s*([\d_]+)/);
  expect(match, 'closeWithGrace({ delay: … }) in service/main.ts').not.toBeNull();
  return Number(match![1]!.replaceAll('_', ''));
}

const dockerfile = readDockerfile();
const services = readCompose();
/** The services that run the image's CMD: Otter's roles (api, worker; all when ROLE is unset). */
const otterServices = Object.entries(services).filter(([, service]) => service.build !== undefined && service.command === undefined);
/** Every other long-running process from the image (the simulator): not the run-once device-crl. */
const otherImageServices = Object.entries(services).filter(
  ([, service]) => service.build !== undefined && service.command !== undefined && service.restart !== 'no',
);

describe('Dockerfile and docker-compose.yml', () => {
  it('builds on Node 22', () => {
    expect(dockerfile.from).toMatch(/^node:22(?:[.-]|$)/);
  });

  it('runs node itself in exec form, with the start script`s flags', () => {
    expect(Array.isArray(dockerfile.cmd), `CMD ${String(dockerfile.cmd)} is not in exec form`).toBe(true);
    const cmd = dockerfile.cmd as string[];
    expect(cmd[0]).toBe('node');
    expect(cmd).toContain('service/main.ts');
    const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string> };
    expect(cmd.join(' ')).toBe(pkg.scripts.start);
  });

  it('gives every Otter process an init and more time than its graceful shutdown may take', () => {
    const delay = shutdownDelayMs();
    expect(otterServices.map(([name]) => name).sort()).toEqual(['api', 'worker']);
    for (const [name, service] of [...otterServices, ...otherImageServices]) {
      expect(service.init, `${name}: init`).toBe(true);
      expect(service.stop_grace_period, `${name}: stop_grace_period`).toBeDefined();
      // Docker's default (10 s) equals the delay: SIGKILL would race the shutdown's own deadline
      expect(durationMs(service.stop_grace_period!), `${name}: stop_grace_period`).toBeGreaterThan(delay);
    }
    for (const [name, service] of otherImageServices) {
      expect(Array.isArray(service.command) && (service.command as string[])[0], `${name}: command`).toBe('node');
    }
  });
});

// ---- the processes ---------------------------------------------------------------------------

interface Run {
  child: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
}

function run(argv: string[], env: Record<string, string>, detached = false): Run {
  const [command, ...args] = argv;
  const child = spawn(command!, args, {
    cwd: ROOT, // the image's WORKDIR holds the repository's files
    // only what the test sets, plus PATH and HOME (npm and node are found on PATH, as in the image)
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? os.tmpdir(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    // its own process group, so that what it started can be ended with it
    detached,
  });
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-50_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })),
  );
  return { child, output: () => output, exited };
}

async function waitReady(otter: Run, port: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (otter.child.exitCode !== null || otter.child.signalCode !== null) throw new Error(`otter exited before it was ready: ${otter.output()}`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/health/ready`)).ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`otter was not ready within 60 s: ${otter.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** The pino lines of the output, parsed (other lines left out). */
function logLines(output: string): Array<Record<string, unknown>> {
  return output.split('\n').flatMap((line) => {
    try {
      const value: unknown = JSON.parse(line);
      return value !== null && typeof value === 'object' ? [value as Record<string, unknown>] : [];
    } catch {
      return [];
    }
  });
}

/** Every process under `pid` (Linux /proc), with its command line. */
function descendants(pid: number): Array<{ pid: number; cmdline: string }> {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parents.set(Number(entry), ppid);
    } catch {
      // gone meanwhile
    }
  }
  const found: Array<{ pid: number; cmdline: string }> = [];
  const walk = (parent: number) => {
    for (const [child, ppid] of parents) {
      if (ppid !== parent) continue;
      let cmdline = '';
      try {
        cmdline = readFileSync(`/proc/${child}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
      } catch {
        // gone meanwhile
      }
      found.push({ pid: child, cmdline });
      walk(child);
    }
  };
  walk(pid);
  return found;
}

/** Whether `pid` is still an Otter service process (and not a new process that got its number). */
function serviceRunning(pid: number): boolean {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.charAt(stat.lastIndexOf(')') + 2); // Z: exited, not yet reaped
    return cmdline.includes('service/main.ts') && state !== 'Z';
  } catch {
    return false;
  }
}

describe('SIGTERM to the container`s process', () => {
  let broker: TestBroker;
  let storageDir: string;
  const database = uniqueName('otter_signals');
  const queuePrefix = uniqueName('otter-signals');
  const databaseUrl = (() => {
    const url = new URL(TEST_DATABASE_URL);
    url.pathname = `/${database}`;
    return url.toString();
  })();
  const graceMs = Math.min(...otterServices.map(([, service]) => durationMs(service.stop_grace_period ?? '10s')));
  /** Kills what a failed test left running: only this test's processes, checked before the signal. */
  const leftovers = new Set<() => void>();

  beforeAll(async () => {
    broker = await startBroker();
    storageDir = await mkdtemp(path.join(os.tmpdir(), 'otter-signals-'));
  });

  afterAll(async () => {
    for (const kill of leftovers) kill();
    await broker?.stop();
    if (storageDir) await rm(storageDir, { recursive: true, force: true });
    await deleteQueueKeys(TEST_REDIS_URL, queuePrefix);
    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    try {
      await admin.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
    } finally {
      await admin.end();
    }
  });

  /** The container's environment (the Dockerfile's ENV and compose's), pointed at this test's services. */
  function containerEnv(port: number, role: string | undefined): Record<string, string> {
    return {
      ...dockerfile.env,
      ...(role ? { ROLE: role } : {}),
      PORT: String(port),
      HOST: '127.0.0.1',
      STORAGE_DIR: storageDir,
      DATABASE_URL: databaseUrl,
      REDIS_URL: TEST_REDIS_URL,
      MQTT_URL: broker.url,
      ...broker.serviceEnv,
      QUEUE_PREFIX: queuePrefix,
      API_KEYS: TEST_API_KEY,
      URL_SIGNING_SECRET: 'container-signals-test-secret',
      LOG_LEVEL: 'info',
    };
  }

  // ROLE unset is `all`, what `docker run` of the image gives
  it.each([['api'], ['worker'], ['all (ROLE unset)']])(
    'the image`s CMD as %s: exits 0 with its shutdown line within the grace period',
    async (label) => {
      const role = label.startsWith('all') ? undefined : label;
      const port = await freePort();
      const otter = run(dockerfile.cmd as string[], containerEnv(port, role));
      const cleanup = () => otter.child.kill('SIGKILL');
      leftovers.add(cleanup);
      await waitReady(otter, port);

      const sentAt = Date.now();
      process.kill(otter.child.pid!, 'SIGTERM');
      const timer = setTimeout(() => otter.child.kill('SIGKILL'), graceMs + 5_000);
      const exit = await otter.exited;
      clearTimeout(timer);
      leftovers.delete(cleanup);
      const tookMs = exit.at - sentAt;

      expect(exit.signal, otter.output()).toBeNull();
      expect(exit.code, otter.output()).toBe(0);
      expect(tookMs).toBeLessThan(graceMs);
      const shutdown = logLines(otter.output()).find((line) => line.msg === 'shutting down');
      expect(shutdown, otter.output()).toMatchObject({ signal: 'SIGTERM', level: 30 });
      console.info(`container-signals: CMD (${label}) exited 0 ${tookMs} ms after SIGTERM (grace period ${graceMs} ms)`);
    },
    120_000,
  );

  it('`npm start` (the old CMD), measured: when npm and the service exit after SIGTERM to npm', async () => {
    const port = await freePort();
    const npm = run(['npm', 'start'], containerEnv(port, undefined), true);
    // npm, its sh and the service: what a container's end would SIGKILL
    const killGroup = () => {
      try {
        process.kill(-npm.child.pid!, 'SIGKILL');
      } catch {
        // every one of them has exited
      }
    };
    leftovers.add(killGroup);
    await waitReady(npm, port);
    // npm runs the script through `sh -c`: the service is the deepest process running service/main.ts
    const tree = descendants(npm.child.pid!);
    const service = tree.filter((p) => p.cmdline.includes('service/main.ts') && !/^(\S*\/)?sh -c/.test(p.cmdline)).at(-1);
    expect(service, JSON.stringify(tree)).toBeDefined();
    console.info(`container-signals: npm start's processes: ${tree.map((p) => `${p.pid} ${p.cmdline}`).join(' | ')}`);

    const sentAt = Date.now();
    process.kill(npm.child.pid!, 'SIGTERM');
    const npmExit = await npm.exited;
    const serviceAliveAtNpmExit = serviceRunning(service!.pid);
    // in a container, npm's exit ends it and whatever still runs there gets SIGKILL; here the service
    // is orphaned and goes on: watch it for the grace period, then kill it
    let serviceGoneAt: number | undefined;
    while (Date.now() - sentAt < graceMs) {
      if (!serviceRunning(service!.pid)) {
        serviceGoneAt = Date.now();
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    killGroup();
    leftovers.delete(killGroup);
    const shutdownLogged = logLines(npm.output()).some((line) => line.msg === 'shutting down');

    console.info(
      `container-signals: npm start, SIGTERM to npm (pid ${npm.child.pid}): npm exited ${npmExit.at - sentAt} ms later ` +
        `(code ${npmExit.code}, signal ${npmExit.signal}); the service (pid ${service!.pid}) was ${serviceAliveAtNpmExit ? 'still running' : 'already gone'} then, ` +
        `${serviceGoneAt === undefined ? `and still running ${graceMs} ms after SIGTERM (the grace period; then killed)` : `gone ${serviceGoneAt - sentAt} ms after SIGTERM`}; ` +
        `its shutdown line ${shutdownLogged ? 'was' : 'was not'} written`,
    );
    // a measurement, not a requirement: only that it ran to the end
    expect(npmExit.at).toBeGreaterThanOrEqual(sentAt);
  }, 120_000);
});
