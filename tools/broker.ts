// A private Mosquitto: the repository's mosquitto.conf on a free local port (or a given one), so tests
// and tools share nothing with the machine's broker and never meet its untuned defaults.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, portAccepts } from './ports.ts';

export interface Broker {
  url: string;
  port: number;
  stop(): Promise<void>;
}

const CONF = fileURLToPath(new URL('../mosquitto.conf', import.meta.url));
const START_TIMEOUT_MS = 10_000;

// /usr/sbin is not on every user's PATH
const MOSQUITTO = process.env.MOSQUITTO_BIN ?? (existsSync('/usr/sbin/mosquitto') ? '/usr/sbin/mosquitto' : 'mosquitto');

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function waitUntilListening(child: ChildProcess, port: number, stderr: () => string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`mosquitto exited (${child.exitCode ?? child.signalCode}) before listening on ${port}: ${stderr().trim()}`);
    }
    if (await portAccepts(port)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`mosquitto did not listen on ${port} within ${START_TIMEOUT_MS} ms: ${stderr().trim()}`);
}

async function startOnce(base: string, dir: string, fixedPort?: number, ownSession = false): Promise<Broker> {
  const port = fixedPort ?? (await freePort());
  const conf = base.replace(/^listener\s+\d+.*$/m, `listener ${port} 127.0.0.1`);
  if (!conf.includes(`listener ${port} 127.0.0.1`)) throw new Error(`${CONF} has no listener line to replace`);
  const confPath = path.join(dir, `mosquitto-${port}.conf`);
  await writeFile(confPath, conf);

  const child = spawn(MOSQUITTO, ['-c', confPath], { stdio: ['ignore', 'ignore', 'pipe'], detached: ownSession });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4_000);
  });
  const spawnError = new Promise<never>((_resolve, reject) => child.once('error', reject));
  try {
    await Promise.race([waitUntilListening(child, port, () => stderr), spawnError]);
  } catch (error) {
    child.kill('SIGKILL');
    await exited(child);
    throw error;
  }

  return {
    url: `mqtt://127.0.0.1:${port}`,
    port,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited(child);
        clearTimeout(timer);
      }
    },
  };
}

/**
 * Starts mosquitto with the repository's tuned configuration; `port` to reuse one (a restart);
 * `ownSession` to run it as a separate service would (its own session, so its own scheduling group).
 */
export async function startBroker(options: { port?: number; ownSession?: boolean } = {}): Promise<Broker> {
  const base = await readFile(CONF, 'utf8');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'otter-mosquitto-'));
  let lastError: unknown;
  // the free port may be taken between probing and binding: try a few
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const broker = await startOnce(base, dir, options.port, options.ownSession);
      return {
        ...broker,
        async stop() {
          await broker.stop();
          await rm(dir, { recursive: true, force: true });
        },
      };
    } catch (error) {
      lastError = error;
    }
  }
  await rm(dir, { recursive: true, force: true });
  throw lastError;
}
