// A local Redis Cluster of `masters` redis-server processes on free ports, made with
// `redis-cli --cluster create` (equal slot ranges, no replicas). The bench and the cluster test
// run Otter on it (REDIS_CLUSTER_NODES); nothing is kept on disk after stop().
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort, portAccepts } from './ports.ts';

const run = promisify(execFile);

export interface LocalRedisCluster {
  /** host:port of each master, in the order of their slot ranges: REDIS_CLUSTER_NODES's value. */
  nodes: string;
  ports: number[];
  /** The master's port that serves `slot`. */
  masterOfSlot(slot: number): Promise<number>;
  stop(): Promise<void>;
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`redis cluster: ${what} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function clusterState(port: number): Promise<string> {
  const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    await client.connect();
    return (await client.cluster('INFO')) as string;
  } catch {
    return '';
  } finally {
    client.disconnect();
  }
}

export async function startRedisCluster(masters = 3): Promise<LocalRedisCluster> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'otter-redis-cluster-'));
  const children: ChildProcess[] = [];
  const ports: number[] = [];
  const stop = async () => {
    await Promise.all(children.filter((child) => child.exitCode === null && child.signalCode === null).map((child) => {
      child.kill('SIGKILL');
      return new Promise((resolve) => child.once('exit', resolve));
    }));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < masters; i += 1) {
      const port = await freePort();
      // the cluster bus on a port of its own: port + 10000 may be taken or out of range
      const busPort = await freePort();
      const nodeDir = path.join(dir, String(port));
      await mkdir(nodeDir);
      children.push(spawn('redis-server', [
        '--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-port', String(busPort),
        '--cluster-config-file', 'nodes.conf', '--dir', nodeDir, '--save', '', '--appendonly', 'no',
        '--maxmemory-policy', 'noeviction',
      ], { stdio: 'ignore' }));
      ports.push(port);
    }
    for (const port of ports) await waitFor(() => portAccepts(port), `node ${port} did not listen`);
    await run('redis-cli', ['--cluster', 'create', ...ports.map((port) => `127.0.0.1:${port}`), '--cluster-replicas', '0', '--cluster-yes']);
    for (const port of ports) await waitFor(async () => /cluster_state:ok/.test(await clusterState(port)), `node ${port} was not ok`);
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    nodes: ports.map((port) => `127.0.0.1:${port}`).join(','),
    ports,
    async masterOfSlot(slot) {
      const client = new Redis({ port: ports[0]!, host: '127.0.0.1' });
      try {
        const range = (await client.cluster('SLOTS')).find(([from, to]) => slot >= from && slot <= to);
        const master = range?.[2];
        if (!master) throw new Error(`redis cluster: no master serves slot ${slot}`);
        return master[1];
      } finally {
        client.disconnect();
      }
    },
    stop,
  };
}
