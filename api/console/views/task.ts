// Task pages (docs/operations.md#the-console): New task, and a task's page: its settings and actions,
// Release, and the board of five columns that follows the rollout by polling one small endpoint.
import { createHash } from 'node:crypto';
import type { Firmware } from '../../schemas/firmware.ts';
import type { TaskJson } from '../../schemas/tasks.ts';
import type { UpgradeRecordJson } from '../../schemas/records.ts';
import type { DeviceJson } from '../../schemas/devices.ts';
import { html, type SafeHtml } from '../html.ts';
import type { LabelKey } from '../labels.ts';
import { actionButton, csrfField, field, layout, stackedBar, when, type View } from './layout.ts';

export const BOARD_COLUMNS = ['waiting', 'processing', 'success', 'failed', 'canceled'] as const;
export type BoardColumn = (typeof BOARD_COLUMNS)[number];
export const BOARD_PAGE_SIZE = 20;

export interface TaskFormValues {
  name?: string;
  mode?: string;
  timeoutSeconds?: string;
  responseTimeoutSeconds?: string;
  maxAttempts?: string;
  backoffSeconds?: string;
  retryOn?: string[];
  maxPerMinute?: string;
  maxInFlight?: string;
  abortFailureRate?: string;
  abortMinFinished?: string;
  startAt?: string;
  /** Sent as Idempotency-Key: a form submitted twice creates one task. */
  idempotencyKey?: string;
}

const RETRY_REASONS = ['timeout', 'send_error', 'device_failure', 'rejected'] as const;

export function taskFormPage(view: View, fw: Firmware, values: TaskFormValues, error?: string): SafeHtml {
  const { t } = view;
  const retryOn = values.retryOn ?? ['timeout', 'send_error'];
  const input = (id: string, name: keyof TaskFormValues, type: string, extra: SafeHtml = html``) =>
    html`<input id="${id}" name="${name}" type="${type}" value="${(values[name] as string | undefined) ?? ''}" ${extra}>`;
  const content = html`<h1>${t.newTask}</h1>
<p>${t.firmware}: <a href="/console/firmware/${fw.id}">${fw.name}</a> · ${fw.productId} · ${fw.version}</p>
<form method="post" action="/console/firmware/${fw.id}/tasks" class="stacked-form">
  ${csrfField(view)}<input type="hidden" name="idempotencyKey" value="${values.idempotencyKey ?? ''}">
  ${field('task-name', t.name, input('task-name', 'name', 'text', html`required maxlength="128"`))}
  ${field('task-mode', t.mode, html`<select id="task-mode" name="mode">
    <option value="push"${values.mode !== 'pull' ? html` selected` : ''}>${t.modePush}</option>
    <option value="pull"${values.mode === 'pull' ? html` selected` : ''}>${t.modePull}</option></select>`)}
  ${field('task-timeout', t.timeoutSeconds, input('task-timeout', 'timeoutSeconds', 'number', html`min="1" placeholder="600"`))}
  ${field('task-response-timeout', t.responseTimeoutSeconds, input('task-response-timeout', 'responseTimeoutSeconds', 'number', html`min="1"`))}
  <fieldset><legend>${t.retryOn}</legend>
    ${field('task-attempts', t.maxAttempts, input('task-attempts', 'maxAttempts', 'number', html`min="1" max="100" placeholder="3"`))}
    ${field('task-backoff', t.backoffSeconds, input('task-backoff', 'backoffSeconds', 'number', html`min="0" placeholder="30"`))}
    <div class="checks">${RETRY_REASONS.map((reason) => html`<label><input type="checkbox" name="retryOn" value="${reason}"${retryOn.includes(reason) ? html` checked` : ''}> ${t[`on_${reason}`]}</label>`)}</div>
  </fieldset>
  ${field('task-per-minute', t.maxPerMinute, input('task-per-minute', 'maxPerMinute', 'number', html`min="1"`))}
  ${field('task-in-flight', t.maxInFlight, input('task-in-flight', 'maxInFlight', 'number', html`min="1"`))}
  ${field('task-abort-rate', t.abortFailureRate, input('task-abort-rate', 'abortFailureRate', 'number', html`min="0" max="100" step="any"`))}
  ${field('task-abort-min', t.abortMinFinished, input('task-abort-min', 'abortMinFinished', 'number', html`min="1"`))}
  ${field('task-start', t.startAt, input('task-start', 'startAt', 'datetime-local'))}
  <div class="buttons"><button type="submit" class="primary">${t.save}</button>
  <a class="button secondary" href="/console/firmware/${fw.id}">${t.cancelForm}</a></div>
</form>`;
  return layout(view, t.newTask, content, { error });
}

export interface BoardData {
  task: TaskJson;
  columns: Record<BoardColumn, UpgradeRecordJson[]>;
  pages: Record<BoardColumn, number>;
}

export interface ReleaseView {
  q: string;
  found: DeviceJson[];
  error?: string;
}

const CLOSED_STATES = ['canceled', 'aborted'];

/** The settings, state, counts and actions of a task: one fragment, replaced when it changes. */
function taskSummary(view: View, task: TaskJson): SafeHtml {
  const { t } = view;
  const closed = CLOSED_STATES.includes(task.state);
  const base = `/console/tasks/${task.id}`;
  const actions = html`
    ${task.state === 'created' || task.state === 'running' ? actionButton(view, `${base}/pause`, t.pause) : ''}
    ${task.state === 'paused' ? actionButton(view, `${base}/resume`, t.resume) : ''}
    ${!closed ? actionButton(view, `${base}/cancel`, t.cancel, { kind: 'danger' }) : ''}
    ${task.stats.failed > 0 ? actionButton(view, `${base}/retry`, t.retryFailed) : ''}`;
  return html`<span class="state state-${task.state}">${t[`task_${task.state}`]}</span>
${task.pausedReason === 'gate_failed' ? html`<p class="notice-inline">${t.paused_gate_failed}</p>` : ''}
${task.nextWindowAt ? html`<p><small>${t.nextWindowAt}: <time datetime="${task.nextWindowAt}">${task.nextWindowAt}</time></small></p>` : ''}
<div class="bar-wide">${stackedBar(task.stats, t)}</div>
<div class="buttons">${actions}</div>
${task.waves.length > 0 ? wavesTable(view, task) : ''}`;
}

/** The task's canary waves (docs/strategies.md#waves): each one's state and counts, and its approval. */
function wavesTable(view: View, task: TaskJson): SafeHtml {
  const { t } = view;
  const approvable = new Set(['running', 'soaking', 'awaiting_approval']);
  const last = task.waves.length;
  return html`<table class="waves" aria-label="${t.waves}"><thead><tr><th>${t.wave}</th><th>${t.state}</th><th>${t.success}</th><th>${t.failed}</th><th></th></tr></thead><tbody>
${task.waves.map((wave) => html`<tr data-wave="${wave.index}"><td>${wave.index} <small>(${wave.size})</small></td>
<td><span class="wave-state wave-${wave.state}">${t[`wave_${wave.state}`]}</span></td>
<td>${wave.stats.success}</td><td>${wave.stats.failed}</td>
<td>${task.rollout.gate?.approval && wave.index < last && approvable.has(wave.state) && !CLOSED_STATES.includes(task.state)
    ? actionButton(view, `/console/tasks/${task.id}/waves/${wave.index}/approve`, t.approve, { kind: wave.state === 'awaiting_approval' ? 'primary' : undefined })
    : ''}</td></tr>`)}
</tbody></table>`;
}

function recordRow(view: View, record: UpgradeRecordJson, column: BoardColumn): SafeHtml {
  const { t } = view;
  return html`<li class="card" data-device="${record.deviceId}">
  <div class="card-head"><a href="/console/devices/${encodeURIComponent(record.deviceId)}" class="device">${record.deviceId}</a>
  <a href="/console/records/${record.id}">${t.view}</a></div>
  ${column === 'processing' ? html`<progress max="100" value="${record.progress}" aria-label="${t.progress}">${record.progress}%</progress> <small>${record.progress}%</small>` : ''}
  ${record.attempts > 1 ? html`<small>${t.attempts}: ${record.attempts}</small>` : ''}
  ${record.errorReason ? html`<small class="reason">${record.errorReason}</small>` : ''}
</li>`;
}

function columnBody(view: View, data: BoardData, column: BoardColumn): SafeHtml {
  const { t } = view;
  const { task } = data;
  const count = task.stats[column];
  const page = data.pages[column];
  const canPush = column === 'waiting' && task.mode === 'push' && count > 0 && !CLOSED_STATES.includes(task.state);
  const pageLink = (target: number) => `/console/tasks/${task.id}?${BOARD_COLUMNS.map((c) => `p_${c}=${c === column ? target : data.pages[c]}`).join('&')}`;
  return html`<header><h3>${t[column as LabelKey]}</h3><span class="count" data-count="${column}">${count}</span></header>
  ${canPush ? actionButton(view, `/console/tasks/${task.id}/push`, t.pushUpgrade, { kind: 'primary' }) : ''}
  <ul class="cards">${data.columns[column].map((record) => recordRow(view, record, column))}</ul>
  ${page > 1 || page * BOARD_PAGE_SIZE < count ? html`<nav class="pager" aria-label="${t[column as LabelKey]}">
    ${page > 1 ? html`<a href="${pageLink(page - 1)}">${t.previous}</a>` : ''}<span>${page}</span>
    ${page * BOARD_PAGE_SIZE < count ? html`<a href="${pageLink(page + 1)}">${t.next}</a>` : ''}</nav>` : ''}`;
}

function fingerprint(fragment: SafeHtml): string {
  return createHash('sha256').update(fragment.text).digest('base64url').slice(0, 16);
}

/** A fragment with its fingerprint in a hidden field: the poll sends them back, and gets only what changed. */
function tracked(id: string, tag: string, cls: string, inner: SafeHtml, oob: boolean, extraAttrs: SafeHtml = html``): { hash: string; html: SafeHtml } {
  const hash = fingerprint(inner);
  return {
    hash,
    html: html`<${tag} id="${id}" class="${cls}"${oob ? html` hx-swap-oob="true"` : ''} ${extraAttrs}>
<input type="hidden" name="h_${id}" value="${hash}" data-board-state>
${inner}</${tag}>`,
  };
}

export function boardFragments(view: View, data: BoardData, oob: boolean): Array<{ id: string; hash: string; html: SafeHtml }> {
  const summary = tracked('summary', 'div', 'summary', taskSummary(view, data.task), oob);
  const columns = BOARD_COLUMNS.map((column) => ({
    id: `col-${column}`,
    ...tracked(`col-${column}`, 'section', `column col-${column}`, columnBody(view, data, column), oob, html`aria-label="${view.t[column as LabelKey]}"`),
  }));
  return [{ id: 'summary', ...summary }, ...columns];
}

function releaseSection(view: View, task: TaskJson, release: ReleaseView): SafeHtml {
  const { t } = view;
  if (!view.canAct || CLOSED_STATES.includes(task.state)) return html``;
  // folded away once the task has devices, so the board stays in view
  const open = task.stats.total === 0 || release.q !== '' || release.error !== undefined;
  return html`<details class="release"${open ? html` open` : ''}>
<summary>${t.releaseTitle}</summary>
<form method="get" action="/console/tasks/${task.id}" class="filters" role="search">
  ${field('release-search', t.searchDevices, html`<input id="release-search" name="q" type="search" value="${release.q}" maxlength="64">`)}
  <button type="submit">${t.search}</button>
</form>
<form method="post" action="/console/tasks/${task.id}/release" class="stacked-form">
  ${csrfField(view)}
  <fieldset class="choice"><legend>${t.releaseTitle}</legend>
    <label><input type="radio" name="target" value="all"${release.q ? '' : html` checked`}> ${t.allDevices}</label>
    <label><input type="radio" name="target" value="chosen"${release.q ? html` checked` : ''}> ${t.chosenDevices}</label>
  </fieldset>
  ${field('release-versions', t.fromVersions, html`<input id="release-versions" name="fromVersions" maxlength="2000">`, t.fromVersionsHint)}
  ${release.found.length > 0 ? html`<fieldset class="found"><legend>${t.chosenDevices}</legend>${release.found.map((device) => html`<label><input type="checkbox" name="deviceIds" value="${device.id}"> ${device.id} <small>${device.firmwareVersion ?? ''}</small></label>`)}</fieldset>` : ''}
  ${field('release-ids', t.deviceIds, html`<textarea id="release-ids" name="pastedIds" rows="3"></textarea>`, t.deviceIdsHint)}
  <div class="buttons"><button type="submit" class="primary">${t.release}</button></div>
</form>
</details>`;
}

export function taskPage(view: View, data: BoardData, fw: Pick<Firmware, 'id' | 'name'>, release: ReleaseView, notice?: string, error?: string): SafeHtml {
  const { t } = view;
  const { task } = data;
  const fragments = boardFragments(view, data, false);
  const pollUrl = `/console/tasks/${task.id}/board`;
  const settings = [
    `${t.mode}: ${t[`mode_${task.mode}`]}`,
    `${t.timeoutSeconds}: ${task.timeoutSeconds}`,
    `${t.maxAttempts}: ${task.retry.maxAttempts}`,
    task.rollout.maxPerMinute ? `${t.maxPerMinute}: ${task.rollout.maxPerMinute}` : '',
    task.rollout.maxInFlight ? `${t.maxInFlight}: ${task.rollout.maxInFlight}` : '',
    task.abort ? `${t.abortFailureRate}: ${Math.round(task.abort.failureRate * 100)}` : '',
    task.startAt ? `${t.startAt}: ${when(task.startAt)}` : '',
  ].filter(Boolean).join(' · ');
  const content = html`<div class="title-row"><h1>${task.name}</h1></div>
<p>${t.firmware}: <a href="/console/firmware/${fw.id}">${fw.name}</a> · ${task.productId} · ${task.firmwareVersion}</p>
<p class="settings">${settings}</p>
${fragments[0]!.html}
<h2>${t.board}</h2>
<div id="board" class="board">
${BOARD_COLUMNS.map((column) => html`<input type="hidden" name="p_${column}" value="${data.pages[column]}" data-board-state>`)}
${fragments.slice(1).map((fragment) => fragment.html)}
</div>
${releaseSection(view, task, release)}
<div id="board-poll" hx-get="${pollUrl}" hx-trigger="every 1s" hx-include="[data-board-state]" hx-swap="none"></div>`;
  return layout(view, task.name, content, { notice, error: error ?? release.error });
}
