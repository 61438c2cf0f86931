// The browser tests' rig: a real Otter listening on a local port (with workers and a private broker
// when a fleet is needed), Debian's Chromium driven by playwright-core, and screenshots saved under
// test-artifacts/console/ (README: The console).
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { expect } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.ts';
import { startBroker, type TestBroker } from '../helpers/broker.ts';
import { TEST_API_KEY } from '../helpers/env.ts';

export const ADMIN_KEY = TEST_API_KEY;
export const OPERATOR_KEY = 'operator-key-0123456789';
export const VIEWER_KEY = 'viewer-key-0123456789';
export const API_KEYS = `${ADMIN_KEY},${OPERATOR_KEY}:operator,${VIEWER_KEY}:viewer`;

export const ARTIFACTS = path.resolve('test-artifacts/console');

const CHROMIUM_PATHS = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/lib/chromium/chromium', '/usr/bin/chromium-headless-shell'];

export interface ConsoleRig {
  t: TestApp;
  broker: TestBroker | undefined;
  baseUrl: string;
  browser: Browser;
  close(): Promise<void>;
}

async function launch(): Promise<Browser> {
  const { existsSync } = await import('node:fs');
  const executablePath = CHROMIUM_PATHS.find((candidate) => candidate && existsSync(candidate));
  if (!executablePath) throw new Error('no Chromium found: apt-get install -y --no-install-recommends chromium fonts-wqy-microhei (or set CHROMIUM_PATH)');
  return chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}

/** Otter on a free port (with workers and a broker when `withBroker`), and a browser. */
export async function startRig(options: { withBroker?: boolean; env?: Record<string, string> } = {}): Promise<ConsoleRig> {
  await mkdir(ARTIFACTS, { recursive: true });
  const broker = options.withBroker ? await startBroker() : undefined;
  const t = await buildTestApp({
    API_KEYS,
    PORT: '0',
    HOST: '127.0.0.1',
    ...(broker ? { ROLE: 'all', MQTT_URL: broker.url } : {}),
    ...options.env,
  }, { listen: true });
  const address = t.app.server.address();
  if (!address || typeof address !== 'object') throw new Error('otter is not listening');
  const browser = await launch();
  return {
    t,
    broker,
    baseUrl: `http://127.0.0.1:${address.port}`,
    browser,
    async close() {
      await browser.close().catch(() => undefined);
      await t.close();
      await broker?.stop();
    },
  };
}

export async function newPage(rig: ConsoleRig, locale = 'en-US'): Promise<{ context: BrowserContext; page: Page }> {
  const context = await rig.browser.newContext({ baseURL: rig.baseUrl, locale, viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  return { context, page };
}

export async function signIn(page: Page, key: string, labels = { apiKey: 'API key', signIn: 'Sign in' }, query = ''): Promise<void> {
  await page.goto(`/console${query}`);
  await expect.poll(() => new URL(page.url()).pathname).toBe('/console/sign-in');
  await page.getByLabel(labels.apiKey).fill(key);
  await page.getByRole('button', { name: labels.signIn }).click();
  await expect.poll(() => new URL(page.url()).pathname).toBe('/console');
}

/** A full-page PNG under test-artifacts/console/. */
export async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** The number shown in a board column's header. */
export async function columnCount(page: Page, column: string): Promise<number> {
  return Number(await page.locator(`[data-count="${column}"]`).textContent());
}

export async function registerDevices(rig: ConsoleRig, productId: string, ids: string[], version = '1.0.0'): Promise<void> {
  const response = await rig.t.app.inject({
    method: 'PUT',
    url: '/api/devices',
    headers: rig.t.auth,
    payload: { devices: ids.map((id) => ({ id, productId, firmwareVersion: version })) },
  });
  expect(response.statusCode, response.body).toBe(200);
}
