// Canary waves in the console (docs/strategies.md#waves), as an operator in a browser: a task's page
// shows its waves with their state, follows them without a reload, approves a wave's gate with its
// Approve button, and says why a task is paused when a wave failed its gate; Resume goes on.
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Fleet } from '../../tools/fleet.ts';
import { OPERATOR_KEY, newPage, registerDevices, shot, signIn, startRig, type ConsoleRig } from './harness.ts';

const PRODUCT = 'bulb';
const GOOD = Array.from({ length: 6 }, (_, i) => `bulb-ok-${i + 1}`);
const BAD = Array.from({ length: 4 }, (_, i) => `bulb-bad-${i + 1}`);

describe('the console, canary waves', () => {
  let rig: ConsoleRig;
  let fleet: Fleet;
  let context: BrowserContext;
  let page: Page;
  let firmwareId = '';

  beforeAll(async () => {
    rig = await startRig({ withBroker: true });
    await registerDevices(rig, PRODUCT, [...GOOD, ...BAD]);
    fleet = new Fleet({ mqttUrl: rig.broker!.url, productId: PRODUCT, deviceIds: [...GOOD, ...BAD], progressSteps: 2, stepMs: 200, reportOnStart: false, seed: 'waves' });
    for (const id of [...GOOD, ...BAD]) fleet.devices.get(id)!.fate = BAD.includes(id) ? 'fail' : 'success';
    await fleet.start();
    const firmware = await rig.t.app.inject({
      method: 'POST',
      url: '/api/firmware',
      headers: rig.t.auth,
      payload: { productId: PRODUCT, name: 'bulb 2.0.0', version: '2.0.0', versionOrder: 2, url: 'https://firmware.example.com/bulb-2.0.0.bin' },
    });
    expect(firmware.statusCode, firmware.body).toBe(201);
    firmwareId = firmware.json().id;
    ({ context, page } = await newPage(rig));
  });

  afterAll(async () => {
    await context?.close();
    await fleet?.stop();
    await rig?.close();
  });

  async function releasedTask(body: Record<string, unknown>, deviceIds: string[]): Promise<string> {
    const created = await rig.t.app.inject({ method: 'POST', url: '/api/tasks', headers: rig.t.auth, payload: { firmwareId, name: 'waves', retry: { maxAttempts: 1, backoffSeconds: 0, on: [] }, ...body } });
    expect(created.statusCode, created.body).toBe(201);
    const id = created.json().id as string;
    const release = await rig.t.app.inject({ method: 'POST', url: `/api/tasks/${id}/release`, headers: rig.t.auth, payload: { deviceIds, push: true } });
    expect(release.statusCode, release.body).toBe(200);
    return id;
  }

  const waveState = (index: number) => page.locator(`table.waves tr[data-wave="${index}"] .wave-state`).textContent();

  it('signs in as an operator', async () => {
    await signIn(page, OPERATOR_KEY);
  });

  it('shows each wave, waits for the Approve button, and follows the next wave to the end', async () => {
    const taskId = await releasedTask(
      { rollout: { waves: [{ devices: 2 }, { devices: 6 }], gate: { approval: true }, firstDeviceIds: GOOD.slice(0, 2) } },
      GOOD,
    );
    await page.goto(`/console/tasks/${taskId}`);
    await expect.poll(() => page.locator('table.waves tbody tr').count()).toBe(2);
    await expect.poll(() => waveState(1), { timeout: 20_000 }).toBe('awaiting approval');
    expect(await waveState(2)).toBe('pending');
    await shot(page, 'waves-01-awaiting-approval');

    await page.locator('table.waves tr[data-wave="1"]').getByRole('button', { name: 'Approve' }).click();
    await expect.poll(() => page.getByRole('status').textContent()).toContain('Wave approved');
    // the board follows the second wave without a reload
    await expect.poll(() => waveState(2), { timeout: 20_000 }).toBe('passed');
    expect(await waveState(1)).toBe('passed');
    await expect.poll(() => page.locator('#summary .state').textContent()).toBe('completed');
    await shot(page, 'waves-02-passed');
  });

  it('says a task is paused because a wave failed its gate, and Resume goes on', async () => {
    const taskId = await releasedTask({ rollout: { waves: [{ devices: 2 }, { devices: 4 }], gate: { minSuccessRate: 0.9 }, firstDeviceIds: BAD.slice(0, 2) } }, BAD);
    await page.goto(`/console/tasks/${taskId}`);
    await expect.poll(() => page.locator('#summary').textContent(), { timeout: 20_000 }).toContain('a wave failed its gate');
    expect(await waveState(1)).toBe('failed');
    expect(await waveState(2)).toBe('pending');
    await shot(page, 'waves-03-gate-failed');

    await page.getByRole('button', { name: 'Resume' }).click();
    await expect.poll(() => waveState(2), { timeout: 20_000 }).not.toBe('pending');
    await expect.poll(() => page.locator('#summary').textContent()).not.toContain('a wave failed its gate');
  });
});
