// The console's roles and defences in a browser: a viewer sees every page and no action button, and
// its posts are refused; bull-board is read-only for viewers and operators; a cross-site form post is
// refused; a firmware named <script>alert(1)</script> shows as text; the Content-Security-Policy
// allows no inline script; the session cookie is HttpOnly and SameSite=Strict; sign-out ends the session.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_KEY, OPERATOR_KEY, VIEWER_KEY, newPage, registerDevices, shot, signIn, startRig, type ConsoleRig } from './harness.ts';

const PRODUCT = 'meter';
const ACTION_NAMES = /^(New|Edit|Delete|New task|Release|Push upgrade|Pause|Resume|Cancel|Retry failed|Read firmware|Save)$/;

describe('console roles and security', () => {
  let rig: ConsoleRig;
  let firmwareId = '';
  let taskId = '';
  let recordId = 0;

  beforeAll(async () => {
    rig = await startRig();
    await registerDevices(rig, PRODUCT, ['meter-1', 'meter-2']);
    const auth = rig.t.auth;
    const fw = await rig.t.app.inject({ method: 'POST', url: '/api/firmware', headers: auth, payload: { productId: PRODUCT, name: 'Meter firmware', version: '3.1.0', versionOrder: 31, url: 'https://firmware.example.com/meter-3.1.0.bin' } });
    firmwareId = fw.json().id;
    const task = await rig.t.app.inject({ method: 'POST', url: '/api/tasks', headers: auth, payload: { firmwareId, name: 'Meter rollout' } });
    taskId = task.json().id;
    await rig.t.app.inject({ method: 'POST', url: `/api/tasks/${taskId}/release`, headers: auth, payload: { allDevices: true } });
    const records = await rig.t.app.inject({ url: `/api/tasks/${taskId}/records`, headers: auth });
    recordId = records.json().items[0].id;
  });

  afterAll(async () => {
    await rig?.close();
  });

  it('a viewer sees every page, and no action button or link on any', async () => {
    const { context, page } = await newPage(rig);
    await signIn(page, VIEWER_KEY);
    const pages = ['/console', `/console/firmware/${firmwareId}`, `/console/tasks/${taskId}`, `/console/tasks/${taskId}?q=meter`,
      `/console/records/${recordId}`, '/console/devices', '/console/devices/meter-1'];
    for (const path of pages) {
      const response = await page.goto(path);
      expect(response?.status(), path).toBe(200);
      const buttons = await page.getByRole('button').allTextContents();
      const links = await page.getByRole('link').allTextContents();
      expect([...buttons, ...links].map((name) => name.trim()).filter((name) => ACTION_NAMES.test(name)), path).toEqual([]);
      expect(buttons.map((name) => name.trim()).sort(), path).toEqual(path.includes('/tasks/') || path.startsWith('/console/devices/') || path.startsWith('/console/firmware') || path.startsWith('/console/records') ? ['Sign out'] : ['Search', 'Sign out']);
    }
    await page.goto(`/console/tasks/${taskId}`);
    expect(await page.locator('[data-count="waiting"]').textContent()).toBe('2');
    await shot(page, 'viewer-task');
    await context.close();
  });

  it("a viewer's console posts are refused 403, and so are its REST writes", async () => {
    const { context, page } = await newPage(rig);
    await signIn(page, VIEWER_KEY);
    await page.goto(`/console/tasks/${taskId}`);
    // a well-formed post of this very session (token and origin right): the role alone refuses it
    const csrf = await page.locator('input[name="_csrf"]').first().inputValue();
    const push = await page.request.post(`/console/tasks/${taskId}/push`, { form: { _csrf: csrf }, headers: { origin: rig.baseUrl } });
    expect(push.status()).toBe(403);
    expect(await push.text()).toContain('viewer role');
    const rest = await page.request.post(`/api/tasks/${taskId}/push`, { headers: { authorization: `Bearer ${VIEWER_KEY}` }, data: {} });
    expect(rest.status()).toBe(403);
    expect((await rest.json()).code).toBe('forbidden');
    const task = await rig.t.app.inject({ url: `/api/tasks/${taskId}`, headers: rig.t.auth });
    expect(task.json().state).toBe('created');
    await context.close();
  });

  it('bull-board is read-only for a viewer and an operator, and writable for an admin', async () => {
    for (const [key, writable] of [[VIEWER_KEY, false], [OPERATOR_KEY, false], [ADMIN_KEY, true]] as const) {
      const context = await rig.browser.newContext({ baseURL: rig.baseUrl, httpCredentials: { username: 'me', password: key }, viewport: { width: 1400, height: 800 } });
      const page = await context.newPage();
      expect((await page.goto('/admin/queues'))?.status()).toBe(200);
      const queues = await page.request.get('/admin/queues/api/queues?activeQueue=upgrades&status=latest');
      const upgrades = (await queues.json()).queues.find((queue: { name: string }) => queue.name === 'upgrades');
      expect(upgrades.readOnlyMode).toBe(!writable);
      if (!writable) {
        const pause = await page.request.put('/admin/queues/api/queues/upgrades/pause');
        expect(pause.status()).toBe(403);
        expect((await pause.json()).code).toBe('forbidden');
        const clean = await page.request.put('/admin/queues/api/queues/upgrades/clean/completed');
        expect(clean.status()).toBe(403);
      } else {
        const clean = await page.request.put('/admin/queues/api/queues/upgrades/clean/completed');
        expect(clean.status()).toBe(200);
      }
      if (key === VIEWER_KEY) {
        await page.goto('/admin/queues/queue/upgrades');
        await page.waitForLoadState('networkidle');
        await shot(page, 'viewer-bull-board');
      }
      await context.close();
    }
  });

  it('refuses a cross-site form post (CSRF), and a same-origin post without the token', async () => {
    const { context, page } = await newPage(rig);
    await signIn(page, ADMIN_KEY);
    // another origin (same host, other port) serving a form that targets the console
    const attacker: Server = createServer((_request, response) => {
      response.setHeader('content-type', 'text/html');
      response.end(`<!doctype html><form method="post" action="${rig.baseUrl}/console/firmware/${firmwareId}/delete"><input name="revision" value="1"><button type="submit">win a prize</button></form>`);
    });
    await new Promise<void>((resolve) => attacker.listen(0, '127.0.0.1', resolve));
    try {
      await page.goto(`http://127.0.0.1:${(attacker.address() as AddressInfo).port}/`);
      const [response] = await Promise.all([page.waitForResponse((r) => r.url().includes('/delete')), page.getByRole('button', { name: 'win a prize' }).click()]);
      expect(response.status()).toBe(403);
    } finally {
      attacker.close();
    }
    const noToken = await page.request.post(`/console/firmware/${firmwareId}/delete`, { form: { revision: '1' }, headers: { origin: rig.baseUrl } });
    expect(noToken.status()).toBe(403);
    const firmware = await rig.t.app.inject({ url: `/api/firmware/${firmwareId}`, headers: rig.t.auth });
    expect(firmware.statusCode).toBe(200);
    await context.close();
  });

  it('shows a firmware named <script>alert(1)</script> as text', async () => {
    const { context, page } = await newPage(rig);
    const dialogs: string[] = [];
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.message());
      void dialog.dismiss();
    });
    await signIn(page, ADMIN_KEY);
    await page.getByRole('link', { name: 'New', exact: true }).click();
    await page.getByLabel('Product ID').fill(PRODUCT);
    await page.getByLabel('Name').fill('<script>alert(1)</script>');
    await page.getByLabel('Version', { exact: true }).fill('<img src=x onerror=alert(2)>');
    await page.getByLabel('Version order').fill('99');
    await page.getByLabel('URL').fill('https://firmware.example.com/x.bin');
    await page.getByRole('button', { name: 'Save' }).click();
    await expect.poll(() => page.getByRole('heading', { level: 1 }).textContent()).toBe('<script>alert(1)</script>');
    await page.goto('/console');
    expect(await page.getByRole('link', { name: '<script>alert(1)</script>' }).count()).toBe(1);
    const markup = await page.content();
    expect(markup).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(markup).not.toContain('<script>alert(1)</script>');
    expect(await page.locator('img[src="x"]').count()).toBe(0);
    expect(dialogs).toEqual([]);
    await shot(page, 'xss-as-text');
    await context.close();
  });

  it('sends a Content-Security-Policy that allows no inline script, and pages hold none', async () => {
    const { context, page } = await newPage(rig);
    await signIn(page, ADMIN_KEY);
    for (const path of ['/console', `/console/tasks/${taskId}`, '/console/sign-in']) {
      const response = await page.goto(path);
      const csp = response!.headers()['content-security-policy'] ?? '';
      const scriptSrc = csp.split(';').map((part) => part.trim()).find((part) => part.startsWith('script-src'));
      expect(scriptSrc, path).toBe("script-src 'self'");
      expect(csp).not.toContain('unsafe-inline');
      expect(csp).not.toContain('unsafe-eval');
      expect(await page.locator('script:not([src])').count(), path).toBe(0);
    }
    // the browser enforces it: a script put into the page inline does not run
    const ran = await page.evaluate(`(async () => {
      const script = document.createElement('script');
      script.textContent = 'window.inlineRan = true';
      document.body.append(script);
      await new Promise((resolve) => setTimeout(resolve, 100));
      return window.inlineRan === true;
    })()`);
    expect(ran).toBe(false);
    // htmx runs under it: the board's poll is answered (204 when nothing changed)
    await page.goto(`/console/tasks/${taskId}`);
    const poll = await page.waitForResponse((r) => r.url().includes(`/console/tasks/${taskId}/board`), { timeout: 5_000 });
    expect([200, 204]).toContain(poll.status());
    await context.close();
  });

  it('keeps the session in an HttpOnly, SameSite=Strict cookie, and sign-out ends it', async () => {
    const { context, page } = await newPage(rig);
    await signIn(page, OPERATOR_KEY);
    const cookie = (await context.cookies()).find((c) => c.name === 'otter_session');
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/console' });
    expect(cookie!.value).not.toContain(OPERATOR_KEY);
    expect(await page.evaluate('document.cookie')).not.toContain('otter_session');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await expect.poll(() => new URL(page.url()).pathname).toBe('/console/sign-in');
    expect((await context.cookies()).find((c) => c.name === 'otter_session')).toBeUndefined();
    // the old cookie, kept by someone, no longer opens anything
    const replay = await rig.browser.newContext({ baseURL: rig.baseUrl });
    await replay.addCookies([{ ...cookie! }]);
    const again = await replay.newPage();
    await again.goto('/console');
    expect(new URL(again.url()).pathname).toBe('/console/sign-in');
    await replay.close();
    await context.close();
  });

  it('refuses a wrong key at sign-in', async () => {
    const { context, page } = await newPage(rig);
    await page.goto('/console/sign-in');
    await page.getByLabel('API key').fill('not-a-key');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('That key is not valid.');
    expect((await context.cookies()).find((c) => c.name === 'otter_session')).toBeUndefined();
    await context.close();
  });
});
