// A private redis-server on a free port, for tests that stop or flush Redis without touching the
// one every other test uses.
import { spawn, type ChildProcess } from 'node:child_process';
import { freePort, portAccepts } from '../../tools/ports.ts';

export interface PrivateRedis {
  url: string;
  port: number;
  child: ChildProcess;
  stop(): Promise<void>;
}

export async function startRedis(port?: number): Promise<PrivateRedis> {
  const chosen = port ?? (await freePort());
  const child = spawn('redis-server', ['--port', String(chosen), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const deadline = Date.now() + 10_000;
  while (!(await portAccepts(chosen))) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`redis-server did not start on ${chosen}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    url: `redis://127.0.0.1:${chosen}`,
    port: chosen,
    child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
    },
  };
}
