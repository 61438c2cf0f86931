// The page frame and the small pieces every console page uses (docs/operations.md#the-console).
import type { ApiRole } from '../../../core/api-keys.ts';
import { html, type HtmlValue, type SafeHtml } from '../html.ts';
import type { Labels, Lang } from '../labels.ts';

/** What every page is rendered for: the reader's language and role, and the session's CSRF token. */
export interface View {
  t: Labels;
  lang: Lang;
  role: ApiRole | null;
  /** Empty before sign-in. */
  csrf: string;
  /** False for a viewer: no action buttons at all. */
  canAct: boolean;
  /** The path of the page, for the language switch. */
  path: string;
}

export const HTMX_CONFIG = '{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"historyCacheSize":0}';

export function layout(view: View, title: string, content: SafeHtml, options: { notice?: string; error?: string; nav?: boolean } = {}): SafeHtml {
  const { t } = view;
  const other = view.lang === 'zh' ? { lang: 'en', label: 'English' } : { lang: 'zh', label: '中文' };
  return html`<html lang="${view.lang === 'zh' ? 'zh-CN' : 'en'}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content="${HTMX_CONFIG}">
<title>${title} · ${t.product}</title>
<link rel="stylesheet" href="/console/assets/console.css">
<script src="/console/assets/htmx.min.js" defer></script>
</head>
<body>
<header class="top">
  <div class="brand"><a href="/console">${t.product}</a> <span class="crumb">${t.deviceManagement} - ${t.firmwareUpgrade}</span></div>
  ${options.nav === false ? '' : html`<nav aria-label="main">
    <a href="/console">${t.firmware}</a>
    <a href="/console/devices">${t.devices}</a>
    <a href="/admin/queues">${t.bullBoard}</a>
    <a href="/docs">${t.apiDocs}</a>
  </nav>`}
  <div class="who">
    <a href="${withLang(view.path, other.lang)}" hreflang="${other.lang}">${other.label}</a>
    ${view.role ? html`<span class="role">${t.signedInAs}: ${view.role}</span>
    <form method="post" action="/console/sign-out" class="inline">${csrfField(view)}<button type="submit" class="link">${t.signOut}</button></form>` : ''}
  </div>
</header>
<main>
${options.notice ? html`<p class="notice" role="status">${options.notice}</p>` : ''}
${options.error ? html`<p class="error" role="alert">${options.error}</p>` : ''}
${content}
</main>
</body>
</html>`;
}

function withLang(path: string, lang: string): string {
  const url = new URL(path, 'http://console.invalid');
  url.searchParams.set('lang', lang);
  return `${url.pathname}${url.search}`;
}

export function csrfField(view: View): SafeHtml {
  return view.csrf ? html`<input type="hidden" name="_csrf" value="${view.csrf}">` : html``;
}

/** A button that posts to `action` (an action with no fields): shown only to those who may act. */
export function actionButton(view: View, action: string, label: string, options: { kind?: string; extra?: HtmlValue } = {}): SafeHtml {
  if (!view.canAct) return html``;
  return html`<form method="post" action="${action}" class="inline">${csrfField(view)}${options.extra ?? ''}<button type="submit" class="${options.kind ?? 'secondary'}">${label}</button></form>`;
}

/** A link styled as a button (New, Edit, Delete…): shown only to those who may act. */
export function actionLink(view: View, href: string, label: string, kind = 'secondary'): SafeHtml {
  if (!view.canAct) return html``;
  return html`<a class="button ${kind}" href="${href}">${label}</a>`;
}

/** `2026-11-29 14:03:07` in UTC, or an empty cell. */
export function when(iso: string | null | undefined): string {
  if (!iso) return '';
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}`;
}

export function pager(view: View, base: string, params: Record<string, string | undefined>, page: number, hasNext: boolean): SafeHtml {
  if (page <= 1 && !hasNext) return html``;
  const link = (target: number) => {
    const search = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) if (value) search.set(name, value);
    search.set('page', String(target));
    return `${base}?${search.toString()}`;
  };
  return html`<nav class="pager" aria-label="pages">
    ${page > 1 ? html`<a href="${link(page - 1)}" rel="prev">${view.t.previous}</a>` : ''}
    <span>${page}</span>
    ${hasNext ? html`<a href="${link(page + 1)}" rel="next">${view.t.next}</a>` : ''}
  </nav>`;
}

/** Record-state counts as one stacked bar (SVG: no inline style, which the CSP forbids). */
export function stackedBar(stats: { total: number; waiting: number; processing: number; success: number; failed: number; canceled: number }, t: Labels): SafeHtml {
  const states = ['success', 'failed', 'processing', 'waiting', 'canceled'] as const;
  const total = Math.max(1, stats.total);
  let x = 0;
  const parts = states.map((state) => {
    const width = (stats[state] / total) * 100;
    const rect = html`<rect class="s-${state}" x="${x.toFixed(2)}" y="0" width="${width.toFixed(2)}" height="10"><title>${t[state]}: ${stats[state]}</title></rect>`;
    x += width;
    return rect;
  });
  const summary = states.map((state) => `${t[state]} ${stats[state]}`).join(', ');
  return html`<svg class="stacked" viewBox="0 0 100 10" preserveAspectRatio="none" role="img" aria-label="${summary}">${parts}</svg>`;
}

export function field(id: string, label: string, control: SafeHtml, hint?: string): SafeHtml {
  return html`<div class="field"><label for="${id}">${label}</label>${control}${hint ? html`<small>${hint}</small>` : ''}</div>`;
}
