// Firmware pages (docs/operations.md#the-console): the list, the form of New and Edit, a firmware with
// its upgrade tasks, and the confirmation of Delete.
import type { Firmware } from '../../schemas/firmware.ts';
import type { TaskJson } from '../../schemas/tasks.ts';
import { html, type SafeHtml } from '../html.ts';
import { actionLink, csrfField, field, layout, pager, stackedBar, when, type View } from './layout.ts';

export interface FirmwareListData {
  items: Firmware[];
  total: number;
  page: number;
  pageSize: number;
  productId: string;
  q: string;
}

export function firmwareListPage(view: View, data: FirmwareListData, notice?: string): SafeHtml {
  const { t } = view;
  const rows = data.items.map((fw) => html`<tr>
    <td><a href="/console/firmware/${fw.id}">${fw.name}</a></td>
    <td>${fw.productId}</td>
    <td>${fw.version}</td>
    <td>${fw.versionOrder}</td>
    <td>${fw.hasFile ? t.yes : t.no}</td>
    <td>${when(fw.createdAt)}</td>
    <td class="actions">
      <a href="/console/firmware/${fw.id}">${t.view}</a>
      ${actionLink(view, `/console/firmware/${fw.id}/edit`, t.edit, 'link')}
      ${actionLink(view, `/console/firmware/${fw.id}/delete`, t.delete, 'link danger')}
    </td>
  </tr>`);
  const content = html`<div class="title-row"><h1>${t.firmwareList}</h1>${actionLink(view, '/console/firmware/new', t.new, 'primary')}</div>
<form method="get" action="/console" class="filters" role="search">
  ${field('filter-product', t.productId, html`<input id="filter-product" name="productId" value="${data.productId}" maxlength="64">`)}
  ${field('filter-q', t.search, html`<input id="filter-q" name="q" type="search" value="${data.q}" maxlength="128">`)}
  <button type="submit">${t.search}</button>
</form>
${data.items.length === 0 ? html`<p class="empty">${t.nothingHere}</p>` : html`<table class="list">
  <thead><tr><th>${t.name}</th><th>${t.productId}</th><th>${t.version}</th><th>${t.versionOrder}</th><th>${t.hasFile}</th><th>${t.createdAt}</th><th></th></tr></thead>
  <tbody>${rows}</tbody>
</table>`}
${pager(view, '/console', { productId: data.productId, q: data.q }, data.page, data.page * data.pageSize < data.total)}`;
  return layout(view, t.firmwareList, content, { notice });
}

/** What the form shows: a firmware being edited, or what was typed into a refused form. */
export interface FirmwareFormValues {
  productId?: string;
  name?: string;
  version?: string;
  versionOrder?: string | number;
  url?: string | null;
  signMethod?: string | null;
  description?: string | null;
  revision?: number;
}

export function firmwareFormPage(view: View, mode: { kind: 'new' } | { kind: 'edit'; id: string; hasFile: boolean }, values: FirmwareFormValues, error?: string): SafeHtml {
  const { t } = view;
  const action = mode.kind === 'new' ? '/console/firmware' : `/console/firmware/${mode.id}`;
  const title = mode.kind === 'new' ? t.newFirmware : t.editFirmware;
  const signMethod = values.signMethod ?? 'sha256';
  const content = html`<h1>${title}</h1>
<form method="post" action="${action}" enctype="multipart/form-data" class="stacked-form">
  ${csrfField(view)}
  ${values.revision !== undefined ? html`<input type="hidden" name="revision" value="${values.revision}">` : ''}
  ${field('fw-product', t.productId, html`<input id="fw-product" name="productId" required maxlength="64" value="${values.productId ?? ''}">`)}
  ${field('fw-name', t.name, html`<input id="fw-name" name="name" required maxlength="128" value="${values.name ?? ''}">`)}
  ${field('fw-version', t.version, html`<input id="fw-version" name="version" required maxlength="64" value="${values.version ?? ''}">`)}
  ${field('fw-order', t.versionOrder, html`<input id="fw-order" name="versionOrder" type="number" min="0" required value="${values.versionOrder ?? ''}">`)}
  ${field('fw-url', t.url, html`<input id="fw-url" name="url" type="url" maxlength="3000" value="${values.url ?? ''}">`)}
  ${field('fw-sign-method', t.signMethod, html`<select id="fw-sign-method" name="signMethod">
    <option value="sha256"${signMethod === 'sha256' ? html` selected` : ''}>sha256</option>
    <option value="md5"${signMethod === 'md5' ? html` selected` : ''}>md5</option>
  </select>`)}
  ${field('fw-description', t.description, html`<textarea id="fw-description" name="description" maxlength="2000" rows="3">${values.description ?? ''}</textarea>`)}
  ${field('fw-file', t.file, html`<input id="fw-file" name="file" type="file">`, mode.kind === 'edit' && mode.hasFile ? t.fileKept : undefined)}
  <div class="buttons"><button type="submit" class="primary">${t.save}</button>
  <a class="button secondary" href="${mode.kind === 'new' ? '/console' : `/console/firmware/${mode.id}`}">${t.cancelForm}</a></div>
</form>`;
  return layout(view, title, content, { error });
}

export function firmwarePage(view: View, fw: Firmware, tasks: TaskJson[], notice?: string): SafeHtml {
  const { t } = view;
  const taskRows = tasks.map((task) => html`<tr>
    <td><a href="/console/tasks/${task.id}">${task.name}</a></td>
    <td><span class="state state-${task.state}">${t[`task_${task.state}`]}</span></td>
    <td>${t[`mode_${task.mode}`]}</td>
    <td class="bar-cell">${stackedBar(task.stats, t)}<small>${t.success} ${task.stats.success} · ${t.failed} ${task.stats.failed} · ${task.stats.total}</small></td>
    <td>${when(task.createdAt)}</td>
    <td class="actions"><a href="/console/tasks/${task.id}">${t.view}</a></td>
  </tr>`);
  const content = html`<div class="title-row"><h1>${fw.name}</h1>
  <div class="buttons">${actionLink(view, `/console/firmware/${fw.id}/edit`, t.edit)} ${actionLink(view, `/console/firmware/${fw.id}/delete`, t.delete, 'secondary danger')}</div></div>
<dl class="facts">
  <dt>${t.productId}</dt><dd>${fw.productId}</dd>
  <dt>${t.version}</dt><dd>${fw.version}</dd>
  <dt>${t.versionOrder}</dt><dd>${fw.versionOrder}</dd>
  <dt>${t.url}</dt><dd class="wrap">${fw.url ?? ''}</dd>
  <dt>${t.signMethod}</dt><dd>${fw.signMethod ?? ''}</dd>
  <dt>${t.sign}</dt><dd class="wrap mono">${fw.sign ?? ''}</dd>
  <dt>${t.size}</dt><dd>${fw.size ?? ''}</dd>
  <dt>${t.hasFile}</dt><dd>${fw.hasFile ? t.yes : t.no}</dd>
  <dt>${t.description}</dt><dd>${fw.description ?? ''}</dd>
  <dt>${t.createdAt}</dt><dd>${when(fw.createdAt)}</dd>
</dl>
<div class="title-row"><h2>${t.upgradeTasks}</h2>${actionLink(view, `/console/firmware/${fw.id}/tasks/new`, t.newTask, 'primary')}</div>
${tasks.length === 0 ? html`<p class="empty">${t.nothingHere}</p>` : html`<table class="list">
  <thead><tr><th>${t.name}</th><th>${t.state}</th><th>${t.mode}</th><th>${t.progress}</th><th>${t.createdAt}</th><th></th></tr></thead>
  <tbody>${taskRows}</tbody>
</table>`}`;
  return layout(view, fw.name, content, { notice });
}

export function deleteFirmwarePage(view: View, fw: Firmware, error?: string): SafeHtml {
  const { t } = view;
  const content = html`<h1>${t.deleteFirmware}</h1>
<p>${t.deleteConfirm}</p>
<p><strong>${fw.name}</strong> · ${fw.productId} · ${fw.version}</p>
<form method="post" action="/console/firmware/${fw.id}/delete" class="buttons">
  ${csrfField(view)}<input type="hidden" name="revision" value="${fw.revision}">
  <button type="submit" class="danger">${t.delete}</button>
  <a class="button secondary" href="/console/firmware/${fw.id}">${t.cancelForm}</a>
</form>`;
  return layout(view, t.deleteFirmware, content, { error });
}
