// A private PostgreSQL cluster on a free port (initdb in a temporary directory), for fault tests
// that stop the database for a while without touching the one every other test uses. Run as root,
// the server runs as the `postgres` user (PostgreSQL refuses to run as root).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from '../../tools/ports.ts';

export interface PrivatePostgres {
  port: number;
  /** A URL of database `name` on this server. */
  url(name?: string): string;
  /** Starts the server (again); resolves once it takes connections. */
  start(): Promise<void>;
  /** Stops it (fast shutdown: connections are cut, as in an outage). */
  stop(): Promise<void>;
  /** Stops it and removes its files. */
  destroy(): Promise<void>;
}

function binDir(): string {
  try {
    return execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim();
  } catch {
    const versions = existsSync('/usr/lib/postgresql') ? execFileSync('ls', ['/usr/lib/postgresql'], { encoding: 'utf8' }).split('\n').filter(Boolean) : [];
    return `/usr/lib/postgresql/${versions.sort().at(-1)}/bin`;
  }
}

/** The uid and gid to run PostgreSQL as: the `postgres` user when we are root, else ourselves. */
function runAs(): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {};
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export async function startPostgres(): Promise<PrivatePostgres> {
  const bin = binDir();
  const user = runAs();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'otter-pg-'));
  const data = path.join(dir, 'data');
  if (user.uid !== undefined) chownSync(dir, user.uid, user.gid!);
  execFileSync(path.join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync'], { ...user, stdio: 'ignore' });
  const port = await freePort();
  let child: ChildProcess | undefined;
  let log = '';

  const url = (name = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${name}`;

  async function start(): Promise<void> {
    child = spawn(
      path.join(bin, 'postgres'),
      ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=200'],
      { ...user, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      log = (log + chunk).slice(-4_000);
    });
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`postgres exited (${child.exitCode}): ${log}`);
      const client = new pg.Client({ connectionString: url() });
      try {
        await client.connect();
        await client.query('SELECT 1');
        await client.end();
        return;
      } catch {
        await client.end().catch(() => {});
        if (Date.now() > deadline) throw new Error(`postgres did not start on ${port}: ${log}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }

  async function stop(): Promise<void> {
    if (!child) return;
    // SIGINT: fast shutdown, open connections are cut
    child.kill('SIGINT');
    const timer = setTimeout(() => child?.kill('SIGKILL'), 15_000);
    await exited(child);
    clearTimeout(timer);
    child = undefined;
  }

  await start();
  return {
    port,
    url,
    start,
    stop,
    async destroy() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
