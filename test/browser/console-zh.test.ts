// The console in Chinese: with ?lang=zh (kept for the next pages) or a Chinese browser, every label
// of the seed's pages shows as JetLinks names it — 新建, 编辑, 删除, 查看, 新建任务, 发布任务, 推送升级,
// 等待升级, 升级中, 升级完成, 升级失败, … — drawn with a Chinese font (see the screenshots).
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Fleet } from '../../tools/fleet.ts';
import { ADMIN_KEY, columnCount, newPage, registerDevices, shot, startRig, type ConsoleRig } from './harness.ts';

const PRODUCT = 'fan';
const DEVICES = ['fan-1', 'fan-2', 'fan-3', 'fan-4', 'fan-5'];

async function expectNames(page: Page, role: 'button' | 'link' | 'region' | 'heading', names: string[]): Promise<void> {
  for (const name of names) expect(await page.getByRole(role, { name, exact: true }).count(), `${role} ${name}`).toBeGreaterThan(0);
}

async function expectLabels(page: Page, labels: string[]): Promise<void> {
  for (const label of labels) expect(await page.getByLabel(label, { exact: true }).count(), label).toBeGreaterThan(0);
}

describe('the console in Chinese', () => {
  let rig: ConsoleRig;
  let fleet: Fleet;

  beforeAll(async () => {
    rig = await startRig({ withBroker: true });
    await registerDevices(rig, PRODUCT, DEVICES);
    fleet = new Fleet({ mqttUrl: rig.broker!.url, productId: PRODUCT, deviceIds: DEVICES, progressSteps: 3, stepMs: 300, reportOnStart: false, seed: 'zh' });
    for (const id of DEVICES) fleet.devices.get(id)!.fate = id === 'fan-4' ? 'fail' : 'success';
    await fleet.start();
  });

  afterAll(async () => {
    await fleet?.stop();
    await rig?.close();
  });

  it('names every page, button, column and field in Chinese with ?lang=zh', async () => {
    const { context, page } = await newPage(rig);
    await page.goto('/console?lang=zh');
    await expectLabels(page, ['API 密钥']);
    await expectNames(page, 'button', ['登录']);
    expect(await page.locator('.crumb').textContent()).toBe('设备管理 - 固件升级');
    await shot(page, 'zh-01-sign-in');
    await page.getByLabel('API 密钥').fill(ADMIN_KEY);
    await page.getByRole('button', { name: '登录' }).click();
    await expect.poll(() => new URL(page.url()).pathname).toBe('/console');

    // 新建: the firmware form (the language stays chosen without ?lang=zh)
    await page.getByRole('link', { name: '新建', exact: true }).click();
    await expectLabels(page, ['产品ID', '名称', '版本号', '版本序号', '固件地址', '签名方式', '描述', '固件文件']);
    await page.getByLabel('产品ID').fill(PRODUCT);
    await page.getByLabel('名称').fill('风扇固件');
    await page.getByLabel('版本号').fill('1.1.0');
    await page.getByLabel('版本序号').fill('11');
    await page.getByLabel('固件地址').fill('https://firmware.example.com/fan-1.1.0.bin');
    await shot(page, 'zh-02-firmware-new');
    await page.getByRole('button', { name: '确定' }).click();
    await expect.poll(() => new URL(page.url()).pathname).toMatch(/^\/console\/firmware\//);
    await expectNames(page, 'link', ['编辑', '删除', '新建任务']);
    await expectNames(page, 'heading', ['升级任务']);

    await page.goto('/console');
    await expectNames(page, 'link', ['新建', '查看', '编辑', '删除', '固件', '设备']);
    await expectNames(page, 'button', ['搜索', '退出登录']);
    await shot(page, 'zh-03-firmware-list');

    // 新建任务 → 发布任务 → 等待升级 → 推送升级
    await page.getByRole('row', { name: /风扇固件/ }).getByRole('link', { name: '查看' }).click();
    await page.getByRole('link', { name: '新建任务' }).click();
    await expectLabels(page, ['名称', '升级方式', '超时时间(秒)']);
    await page.getByLabel('名称').fill('风扇升级');
    await page.getByRole('button', { name: '确定' }).click();
    await expect.poll(() => new URL(page.url()).pathname).toMatch(/^\/console\/tasks\//);
    await expectNames(page, 'region', ['等待升级', '升级中', '升级完成', '升级失败', '已取消']);
    await expectLabels(page, ['设备ID', '搜索设备']);
    await expectNames(page, 'button', ['发布任务', '暂停', '取消']);
    await page.getByRole('button', { name: '发布任务' }).click();
    await expect.poll(() => page.getByRole('status').textContent()).toContain('已发布到 5 台设备');
    await expectNames(page, 'button', ['推送升级']);
    await shot(page, 'zh-04-task-waiting');
    await page.getByRole('button', { name: '推送升级' }).click();
    await expect.poll(async () => [await columnCount(page, 'success'), await columnCount(page, 'failed')], { timeout: 60_000, interval: 500 }).toEqual([4, 1]);
    await expectNames(page, 'button', ['重试失败']);
    await expectNames(page, 'link', ['查看']);
    const body = await page.locator('main').textContent();
    for (const english of ['Waiting', 'Upgrading', 'Succeeded', 'Failed', 'Push upgrade', 'Retry failed', 'Release']) expect(body).not.toContain(english);
    await shot(page, 'zh-05-board-done');

    await page.getByRole('region', { name: '升级失败' }).getByRole('link', { name: '查看' }).click();
    await expectNames(page, 'heading', ['升级历史']);
    expect(await page.locator('ol.timeline').textContent()).toContain('升级失败');
    await shot(page, 'zh-06-record');

    await page.goto('/console/devices/fan-1');
    await expectNames(page, 'button', ['读取固件']);
    await page.getByRole('button', { name: '读取固件' }).click();
    await expect.poll(() => page.locator('.read-version').textContent()).toBe('1.1.0');
    await shot(page, 'zh-07-device');
    await context.close();
  });

  it("follows the browser's language when none is chosen", async () => {
    const { context, page } = await newPage(rig, 'zh-CN');
    await page.goto('/console/sign-in');
    await expectNames(page, 'button', ['登录']);
    await context.close();
    const english = await newPage(rig, 'en-US');
    await english.page.goto('/console/sign-in');
    await expectNames(english.page, 'button', ['Sign in']);
    await english.context.close();
  });
});
