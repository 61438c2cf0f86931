// Mosquitto restarted in the middle of a rollout: the connector reconnects and subscribes again,
// and the rollout completes — timeouts and retries cover what the broker dropped.
import { afterAll, expect, it } from 'vitest';
import { FaultRig } from '../helpers/fault-rig.ts';
import { startBroker } from '../helpers/broker.ts';
import { allFinal, waitForTask } from '../helpers/rollout.ts';

let rig: FaultRig | undefined;
afterAll(async () => rig?.stop());

it('completes the rollout after the broker restarts', async () => {
  rig = await FaultRig.start({ devices: 1_000, workers: 2, task: { timeoutSeconds: 8, retry: { maxAttempts: 4, backoffSeconds: 1, on: ['timeout', 'send_error'] } } });
  await waitForTask(rig.t.app, rig.t.auth, rig.taskId, (x) => x.stats.success >= 200, 60_000);
  const port = rig.broker.port;
  await rig.broker.stop();
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  // the same accounts, so the service and the fleet get in again
  rig.broker = await startBroker({ port, secrets: rig.broker.secrets });

  const task = await waitForTask(rig.t.app, rig.t.auth, rig.taskId, (x) => allFinal(x) && x.state === 'completed', 180_000);
  expect(task.stats).toMatchObject({ total: 1_000, success: 1_000, failed: 0 });
  const outcome = await rig.outcome();
  for (const record of outcome) expect(record.received, record.deviceId).toBeLessThanOrEqual(record.attempts);
  console.log(`after the broker restart: ${outcome.filter((r) => r.attempts > 1).length} records needed another attempt`);
});
