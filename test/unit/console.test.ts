// The console's building blocks (docs/operations.md#the-console): templates escape every value, both
// languages name everything, the browser's language is honoured, and session cookies and CSRF tokens
// cannot be forged, stretched or replayed after sign-out.
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { html } from '../../api/console/html.ts';
import { labelsFor, prefersChinese } from '../../api/console/labels.ts';
import { ConsoleSessions } from '../../api/console/session.ts';

describe('html', () => {
  it('escapes every interpolated value, in text and in attributes', () => {
    const name = `<script>alert("1")</script> & 'x'`;
    expect(html`<p title="${name}">${name}</p>`.text).toBe(
      '<p title="&lt;script&gt;alert(&quot;1&quot;)&lt;/script&gt; &amp; &#39;x&#39;">&lt;script&gt;alert(&quot;1&quot;)&lt;/script&gt; &amp; &#39;x&#39;</p>',
    );
  });

  it('nests html results and lists without escaping them twice; drops null, undefined and false', () => {
    const items = ['a<b', 'c'].map((item) => html`<li>${item}</li>`);
    expect(html`<ul>${items}</ul>${null}${undefined}${false}${0}`.text).toBe('<ul><li>a&lt;b</li><li>c</li></ul>0');
  });
});

describe('labels', () => {
  it('has every label in both languages, none empty', () => {
    const en = labelsFor('en');
    const zh = labelsFor('zh');
    expect(Object.keys(zh).sort()).toEqual(Object.keys(en).sort());
    for (const [key, value] of Object.entries(zh)) expect(value.length, key).toBeGreaterThan(0);
  });

  it("uses the seed's words for its screens", () => {
    const zh = labelsFor('zh');
    expect([zh.waiting, zh.processing, zh.success, zh.failed, zh.pushUpgrade]).toEqual(['等待升级', '升级中', '升级完成', '升级失败', '推送升级']);
    expect([zh.new, zh.edit, zh.delete, zh.view, zh.save, zh.upgradeTasks, zh.release]).toEqual(['新建', '编辑', '删除', '查看', '确定', '升级任务', '发布任务']);
  });

  it.each([
    ['zh-CN,zh;q=0.9,en;q=0.8', true],
    ['en-US,en;q=0.9,zh;q=0.8', false],
    ['en;q=0.5,zh-TW;q=0.9', true],
    ['fr-FR,zh;q=0.5', true],
    ['fr-FR', false],
    ['', false],
  ])('Accept-Language %s prefers Chinese: %s', (header, expected) => {
    expect(prefersChinese(header)).toBe(expected);
  });
});

describe('ConsoleSessions', () => {
  function store(now: () => number) {
    const keys = new Map<string, string>();
    const redis = {
      exists: async (key: string) => (keys.has(key) ? 1 : 0),
      set: async (key: string, value: string) => {
        keys.set(key, value);
        return 'OK';
      },
    } as unknown as Redis;
    return new ConsoleSessions({ secret: 'test-secret', ttlSeconds: 3600, redis: async () => redis, prefix: 'p', now });
  }

  it('reads back its own cookie, which names the key by hash only', async () => {
    const sessions = store(() => 1_000_000);
    const { cookie, session } = sessions.create('ab'.repeat(32));
    expect(await sessions.read(cookie)).toEqual(session);
  });

  it('refuses a tampered, foreign, malformed or expired cookie', async () => {
    let now = 1_000_000;
    const sessions = store(() => now);
    const { cookie } = sessions.create('ab'.repeat(32));
    const parts = cookie.split('.');
    const stretched = [parts[0], parts[1], parts[2], String(Number(parts[3]) + 86_400), parts[4]].join('.');
    expect(await sessions.read(stretched)).toBeNull();
    const otherKey = [parts[0], 'cd'.repeat(32), parts[2], parts[3], parts[4]].join('.');
    expect(await sessions.read(otherKey)).toBeNull();
    expect(await store(() => now).read(cookie)).not.toBeNull();
    const foreign = new ConsoleSessions({ secret: 'other', ttlSeconds: 3600, redis: async () => ({}) as Redis, prefix: 'p' });
    expect(await foreign.read(cookie)).toBeNull();
    for (const bad of [undefined, '', 'v1', 'x'.repeat(600), `${cookie}.x`]) expect(await sessions.read(bad)).toBeNull();
    now += 3_600_000;
    expect(await sessions.read(cookie)).toBeNull();
  });

  it('ends a session at sign-out', async () => {
    const sessions = store(() => 1_000_000);
    const { cookie, session } = sessions.create('ab'.repeat(32));
    await sessions.signOut(session);
    expect(await sessions.read(cookie)).toBeNull();
  });

  it("accepts only its session's CSRF token", () => {
    const sessions = store(() => 1_000_000);
    const one = sessions.create('ab'.repeat(32)).session;
    const two = sessions.create('ab'.repeat(32)).session;
    expect(sessions.checkCsrf(one, sessions.csrfToken(one))).toBe(true);
    expect(sessions.checkCsrf(one, sessions.csrfToken(two))).toBe(false);
    for (const bad of [undefined, '', 'x', 42, ['a']]) expect(sessions.checkCsrf(one, bad)).toBe(false);
  });
});
