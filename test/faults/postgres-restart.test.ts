// PostgreSQL restarted in the middle of a rollout: the service rides it out, no device message is
// lost (each device reports once, over QoS 1), and the rollout completes with every record a
// success on its first attempt.
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { afterAll, expect, it } from 'vitest';
import { FaultRig } from '../helpers/fault-rig.ts';

let rig: FaultRig | undefined;
afterAll(async () => rig?.stop());

function restartPostgres(): void {
  const version = readdirSync('/etc/postgresql')[0]!;
  execFileSync('pg_ctlcluster', ['--skip-systemctl-redirect', version, 'main', 'restart'], { stdio: 'inherit' });
}

async function statsWhenReachable(rig: FaultRig) {
  for (;;) {
    const response = await rig.t.app.inject({ url: `/api/tasks/${rig.taskId}`, headers: rig.t.auth });
    if (response.statusCode === 200) return response.json();
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

it('rides out a Postgres restart without losing a device message', async () => {
  // a long timeout: a lost message would show as a record still processing (or a second attempt)
  rig = await FaultRig.start({ devices: 1_000, workers: 2, task: { timeoutSeconds: 120 }, fleet: { stepMs: 400 } });
  for (;;) {
    const task = await statsWhenReachable(rig);
    if (task.stats.success >= 100) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const restartedAt = Date.now();
  restartPostgres();
  console.log(`postgres restarted in ${Date.now() - restartedAt} ms`);

  const deadline = Date.now() + 120_000;
  let task = await statsWhenReachable(rig);
  while (!(task.stats.waiting === 0 && task.stats.processing === 0)) {
    if (Date.now() > deadline) {
      // what the workers said, to tell a lost message from a stuck job
      const said = rig.workers.flatMap((w) => w.output().split('\n').filter((line) => /"level":(40|50)/.test(line)).map((line) => line.replace(/"stack":"[^"]*"/, "")).slice(-12));
      throw new Error(`rollout stuck after the restart: ${JSON.stringify(task.stats)}\n${said.join('\n')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
    task = await statsWhenReachable(rig);
  }
  expect(task.stats).toMatchObject({ total: 1_000, success: 1_000, failed: 0 });
  const outcome = await rig.outcome();
  expect(outcome.filter((r) => r.attempts !== 1)).toEqual([]);
  expect(outcome.filter((r) => r.received !== 1)).toEqual([]);
});
