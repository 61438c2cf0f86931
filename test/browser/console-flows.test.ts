// Every flow of the seed (设备管理 - 固件升级) in a browser, as an operator: sign in, New firmware with
// a file, Edit, View, Delete (and the 409 of one in use), New task, Release to chosen devices (search
// and pick, paste) and to all devices, Pause and Resume, Push upgrade from the Waiting column, the
// board following the rollout to Succeeded and Failed without a reload, a record's timeline, Retry
// failed, Cancel, and Read firmware. Each step leaves a screenshot in test-artifacts/console/.
import { randomBytes, createHash } from 'node:crypto';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Fleet } from '../../tools/fleet.ts';
import path from 'node:path';
import { ARTIFACTS, OPERATOR_KEY, columnCount, newPage, registerDevices, shot, startRig, type ConsoleRig } from './harness.ts';

const PRODUCT = 'lamp';
const DEVICES = Array.from({ length: 8 }, (_, i) => `lamp-0${i + 1}`);
const FAILING = ['lamp-03', 'lamp-06'];

describe('the console, every flow of the seed', () => {
  let rig: ConsoleRig;
  let fleet: Fleet;
  let context: BrowserContext;
  let page: Page;
  let firmwareUrl = '';
  let taskUrl = '';
  const file = randomBytes(64 * 1024);

  beforeAll(async () => {
    rig = await startRig({ withBroker: true });
    await registerDevices(rig, PRODUCT, DEVICES);
    fleet = new Fleet({ mqttUrl: rig.broker!.url, productId: PRODUCT, deviceIds: DEVICES, progressSteps: 3, stepMs: 700, reportOnStart: false, seed: 'console' });
    for (const id of DEVICES) fleet.devices.get(id)!.fate = FAILING.includes(id) ? 'fail' : 'success';
    await fleet.start();
    ({ context, page } = await newPage(rig));
  });

  afterAll(async () => {
    await context?.close();
    await fleet?.stop();
    await rig?.close();
  });

  it('signs in with an API key', async () => {
    await page.goto('/console');
    expect(new URL(page.url()).pathname).toBe('/console/sign-in');
    await page.getByLabel('API key').fill(OPERATOR_KEY);
    await shot(page, '01-sign-in');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => new URL(page.url()).pathname).toBe('/console');
    await expect.poll(() => page.getByRole('heading', { name: 'Firmware' }).count()).toBe(1);
  });

  it('creates a firmware with a file upload (New)', async () => {
    await page.getByRole('link', { name: 'New', exact: true }).click();
    expect(new URL(page.url()).pathname).toBe('/console/firmware/new');
    await page.getByLabel('Product ID').fill(PRODUCT);
    await page.getByLabel('Name').fill('Lamp firmware');
    await page.getByLabel('Version', { exact: true }).fill('2.0.0');
    await page.getByLabel('Version order').fill('2');
    await page.getByLabel('Sign method').selectOption('sha256');
    await page.getByLabel('Description').fill('brighter, and fewer flickers');
    await page.getByLabel('File').setInputFiles({ name: 'lamp-2.0.0.bin', mimeType: 'application/octet-stream', buffer: file });
    await shot(page, '02-firmware-new');
    await page.getByRole('button', { name: 'Save' }).click();
    await expect.poll(() => new URL(page.url()).pathname).toMatch(/^\/console\/firmware\/[0-9a-f-]{36}$/);
    firmwareUrl = new URL(page.url()).pathname;
    const sha256 = createHash('sha256').update(file).digest('hex');
    await expect.poll(() => page.locator('dl.facts').textContent()).toContain(sha256);
    const stored = await rig.t.app.inject({ url: `/api/firmware/${firmwareUrl.split('/').pop()}`, headers: rig.t.auth });
    expect(stored.json()).toMatchObject({ name: 'Lamp firmware', hasFile: true, size: file.length, sign: sha256, signMethod: 'sha256' });
    await shot(page, '03-firmware-created');
  });

  it('edits it (Edit)', async () => {
    await page.getByRole('link', { name: 'Edit', exact: true }).click();
    await expect(page.getByLabel('Name').inputValue()).resolves.toBe('Lamp firmware');
    await page.getByLabel('Name').fill('Lamp firmware 2.0.0');
    await page.getByLabel('Description').fill('brighter, fewer flickers, quieter fan');
    await shot(page, '04-firmware-edit');
    await page.getByRole('button', { name: 'Save' }).click();
    await expect.poll(() => page.getByRole('status').textContent()).toContain('Saved.');
    await expect.poll(() => page.getByRole('heading', { level: 1 }).textContent()).toBe('Lamp firmware 2.0.0');
  });

  it('views it from the list (View)', async () => {
    await page.goto('/console');
    const row = page.getByRole('row', { name: /Lamp firmware 2\.0\.0/ });
    await row.getByRole('link', { name: 'View' }).click();
    expect(new URL(page.url()).pathname).toBe(firmwareUrl);
    await expect.poll(() => page.locator('dl.facts').textContent()).toContain('quieter fan');
    await shot(page, '05-firmware-view');
  });

  it('creates a task (New task)', async () => {
    await page.getByRole('link', { name: 'New task' }).click();
    await page.getByLabel('Name').fill('Lamp rollout');
    await page.getByLabel('Mode').selectOption('push');
    await page.getByLabel('Timeout (seconds)', { exact: true }).fill('30');
    await page.getByLabel('Attempts at most').fill('1');
    await page.getByLabel('Upgrades at once at most').fill('4');
    await shot(page, '06-task-new');
    await page.getByRole('button', { name: 'Save' }).click();
    await expect.poll(() => new URL(page.url()).pathname).toMatch(/^\/console\/tasks\/[0-9a-f-]{36}$/);
    taskUrl = new URL(page.url()).pathname;
    await expect.poll(() => page.getByRole('heading', { level: 1 }).textContent()).toBe('Lamp rollout');
  });

  it('releases to chosen devices: searched and picked, and pasted', async () => {
    await page.getByLabel('Search devices').fill('lamp-0');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByRole('checkbox', { name: /lamp-01/ }).check();
    await page.getByRole('checkbox', { name: /lamp-02/ }).check();
    await page.getByRole('radio', { name: 'Chosen devices' }).check();
    await page.getByLabel('Device IDs').fill('lamp-03\nlamp-04, no-such-lamp');
    await shot(page, '07-release-chosen');
    await page.getByRole('button', { name: 'Release' }).click();
    await expect.poll(() => page.getByRole('status').textContent()).toContain('Released to 4 devices. Skipped: unknown device 1');
    expect(await columnCount(page, 'waiting')).toBe(4);
    await shot(page, '08-released-chosen');
  });

  it('releases to all devices of the product', async () => {
    // the Release section folds away once the task has devices
    await page.locator('details.release > summary').click();
    await page.getByRole('radio', { name: 'All devices of the product' }).check();
    await page.getByRole('button', { name: 'Release' }).click();
    await expect.poll(() => page.getByRole('status').textContent()).toContain('Released to 4 devices. Skipped: already in this task 4');
    expect(await columnCount(page, 'waiting')).toBe(8);
  });

  it('pauses and resumes the task', async () => {
    await page.getByRole('button', { name: 'Pause' }).click();
    await expect.poll(() => page.locator('#summary .state').textContent()).toBe('paused');
    await shot(page, '09-task-paused');
    await page.getByRole('button', { name: 'Resume' }).click();
    await expect.poll(() => page.locator('#summary .state').textContent()).toBe('running');
  });

  it('deletes another firmware, and shows the 409 of one in use (Delete)', async () => {
    const other = await rig.t.app.inject({
      method: 'POST', url: '/api/firmware', headers: rig.t.auth,
      payload: { productId: PRODUCT, name: 'Old lamp firmware', version: '0.9.0', versionOrder: 0, url: 'https://firmware.example.com/lamp-0.9.0.bin' },
    });
    expect(other.statusCode).toBe(201);
    await page.goto('/console');
    await page.getByRole('row', { name: /Old lamp firmware/ }).getByRole('link', { name: 'Delete' }).click();
    await expect.poll(() => page.getByRole('heading', { level: 1 }).textContent()).toBe('Delete firmware');
    await page.getByRole('button', { name: 'Delete' }).click();
    await expect.poll(() => page.getByRole('status').textContent()).toContain('Firmware deleted.');
    expect(await page.getByRole('row', { name: /Old lamp firmware/ }).count()).toBe(0);

    await page.getByRole('row', { name: /Lamp firmware 2\.0\.0/ }).getByRole('link', { name: 'Delete' }).click();
    await page.getByRole('button', { name: 'Delete' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('has an upgrade task with waiting or processing records');
    await shot(page, '10-delete-in-use-409');
    const still = await rig.t.app.inject({ url: `/api/firmware/${firmwareUrl.split('/').pop()}`, headers: rig.t.auth });
    expect(still.statusCode).toBe(200);
  });

  it('pushes from the Waiting column, and the board follows devices to Succeeded and Failed without a reload', async () => {
    await page.goto(taskUrl);
    const waiting = page.getByRole('region', { name: 'Waiting' });
    await waiting.getByRole('button', { name: 'Push upgrade' }).click();
    await expect.poll(() => page.getByRole('status').textContent()).toContain('Pushed');
    // from here on the page is never reloaded: a mark on the window would not survive one
    await page.evaluate('window.stillThisPage = true');
    await expect.poll(() => columnCount(page, 'processing'), { timeout: 20_000 }).toBeGreaterThan(0);
    await expect.poll(() => page.getByRole('region', { name: 'Upgrading' }).locator('li.card').count()).toBeGreaterThan(0);
    await shot(page, '11-board-upgrading');
    await expect.poll(async () => [await columnCount(page, 'success'), await columnCount(page, 'failed')], { timeout: 60_000, interval: 500 }).toEqual([6, 2]);
    const failedColumn = page.getByRole('region', { name: 'Failed' });
    for (const id of FAILING) await expect.poll(() => failedColumn.locator(`li[data-device="${id}"]`).count()).toBe(1);
    await expect.poll(() => page.locator('#summary .state').textContent()).toBe('completed');
    expect(await page.evaluate('window.stillThisPage')).toBe(true);
    await shot(page, '12-board-done');
    // the README's picture of the board: the top of the page only
    await page.setViewportSize({ width: 1200, height: 640 });
    await page.screenshot({ path: path.join(ARTIFACTS, 'board.png') });
    await page.setViewportSize({ width: 1400, height: 900 });
  });

  it("opens a device's record timeline (View)", async () => {
    await page.getByRole('region', { name: 'Failed' }).locator('li[data-device="lamp-03"]').getByRole('link', { name: 'View' }).click();
    await expect.poll(() => new URL(page.url()).pathname).toMatch(/^\/console\/records\/\d+$/);
    const timeline = page.locator('ol.timeline');
    await expect.poll(() => timeline.textContent()).toContain('simulated failure');
    for (const event of ['released', 'sent', 'progress', 'failed']) await expect.poll(() => timeline.textContent()).toContain(event);
    await shot(page, '13-record-timeline');
  });

  it('retries the failed devices, then cancels the task (Retry failed, Cancel)', async () => {
    await page.goto(taskUrl);
    await page.getByRole('button', { name: 'Retry failed' }).click();
    await expect.poll(() => page.getByRole('status').textContent()).toContain('Failed devices are waiting again.');
    expect(await columnCount(page, 'failed')).toBe(0);
    await shot(page, '14-retried');
    await page.getByRole('button', { name: 'Cancel' }).click();
    await expect.poll(() => page.locator('#summary .state').textContent()).toBe('canceled');
    await expect.poll(() => page.getByRole('button', { name: 'Cancel' }).count()).toBe(0);
    await shot(page, '15-canceled');
  });

  it("reads a device's firmware (Devices, Read firmware)", async () => {
    await page.getByRole('link', { name: 'Devices', exact: true }).click();
    await page.getByLabel('Search').fill('lamp-01');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByRole('row', { name: /lamp-01/ }).getByRole('link', { name: 'View' }).click();
    expect(new URL(page.url()).pathname).toBe('/console/devices/lamp-01');
    await page.getByRole('button', { name: 'Read firmware' }).click();
    await expect.poll(() => page.locator('.read-version').textContent()).toBe('2.0.0');
    expect(await page.locator('table.list').textContent()).toContain('Succeeded');
    await shot(page, '16-device-read-firmware');
  });

  it('shows the task on its firmware page, with its stacked bar', async () => {
    await page.goto(firmwareUrl);
    await expect.poll(() => page.getByRole('row', { name: /Lamp rollout/ }).count()).toBe(1);
    expect(await page.locator('svg.stacked').count()).toBe(1);
    await shot(page, '17-firmware-with-task');
  });
});
