// kill -9 of a worker in the middle of a 2,000-device rollout, then a restart: every record ends in
// exactly one final state, and no device is sent the upgrade more often than its retry policy allows.
import { afterAll, expect, it } from 'vitest';
import { FaultRig } from '../helpers/fault-rig.ts';
import { allFinal, waitForTask } from '../helpers/rollout.ts';

let rig: FaultRig | undefined;
afterAll(async () => rig?.stop());

it('survives kill -9 of a worker and its restart', async () => {
  rig = await FaultRig.start({ devices: 2_000, workers: 2, task: { timeoutSeconds: 15 } });
  await waitForTask(rig.t.app, rig.t.auth, rig.taskId, (x) => x.stats.success >= 300, 60_000);
  const victim = rig.workers[0]!;
  victim.child.kill('SIGKILL');
  expect(await victim.exited).toBe('SIGKILL');
  rig.workers.shift();
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  await rig.addWorker();

  const task = await waitForTask(rig.t.app, rig.t.auth, rig.taskId, (x) => allFinal(x) && x.state === 'completed', 180_000);
  expect(task.stats.total).toBe(2_000);
  expect(task.stats.success + task.stats.failed + task.stats.canceled).toBe(2_000);
  const outcome = await rig.outcome();
  expect(outcome).toHaveLength(2_000);
  for (const record of outcome) {
    expect(['success', 'failed', 'canceled']).toContain(record.state);
    expect(record.attempts).toBeLessThanOrEqual(3);
    expect(record.received, record.deviceId).toBeLessThanOrEqual(record.attempts);
  }
  // the task's counters agree with its records
  const byState = (state: string) => outcome.filter((r) => r.state === state).length;
  expect(task.stats).toMatchObject({ success: byState('success'), failed: byState('failed'), canceled: byState('canceled') });
  expect(byState('success')).toBe(2_000);
  console.log(`after kill -9: ${outcome.filter((r) => r.attempts > 1).length} records needed a second attempt`);
});
