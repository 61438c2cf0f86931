// Device pages and the record page (docs/operations.md#the-console): the device list with search, a
// device with its version and upgrade history (and Read firmware), and one record's timeline.
import type { DeviceJson } from '../../schemas/devices.ts';
import type { RecordWithEventsJson, UpgradeRecordJson } from '../../schemas/records.ts';
import { html, type SafeHtml } from '../html.ts';
import type { LabelKey } from '../labels.ts';
import { actionButton, field, layout, pager, when, type View } from './layout.ts';

export interface DeviceListData {
  items: DeviceJson[];
  page: number;
  more: boolean;
  productId: string;
  q: string;
}

export function deviceListPage(view: View, data: DeviceListData): SafeHtml {
  const { t } = view;
  const rows = data.items.map((device) => html`<tr>
    <td><a href="/console/devices/${encodeURIComponent(device.id)}">${device.id}</a></td>
    <td>${device.name ?? ''}</td>
    <td>${device.productId}</td>
    <td>${device.firmwareVersion ?? ''}</td>
    <td>${when(device.firmwareReportedAt)}</td>
    <td>${device.gatewayId ?? ''}</td>
    <td class="actions"><a href="/console/devices/${encodeURIComponent(device.id)}">${t.view}</a></td>
  </tr>`);
  const content = html`<h1>${t.deviceList}</h1>
<form method="get" action="/console/devices" class="filters" role="search">
  ${field('device-product', t.productId, html`<input id="device-product" name="productId" value="${data.productId}" maxlength="64">`)}
  ${field('device-q', t.search, html`<input id="device-q" name="q" type="search" value="${data.q}" maxlength="64">`)}
  <button type="submit">${t.search}</button>
</form>
${data.items.length === 0 ? html`<p class="empty">${t.nothingHere}</p>` : html`<table class="list">
  <thead><tr><th>ID</th><th>${t.name}</th><th>${t.productId}</th><th>${t.firmwareVersion}</th><th>${t.reportedAt}</th><th>${t.gateway}</th><th></th></tr></thead>
  <tbody>${rows}</tbody></table>`}
${pager(view, '/console/devices', { productId: data.productId, q: data.q }, data.page, data.more)}`;
  return layout(view, t.deviceList, content);
}

export interface DevicePageData {
  device: DeviceJson & { activeRecord: UpgradeRecordJson | null };
  history: UpgradeRecordJson[];
  historyPage: number;
  historyMore: boolean;
  read?: { version: string; properties: Record<string, unknown> | null };
  readError?: string;
}

function stateLabel(view: View, state: string): string {
  return view.t[state as LabelKey] ?? state;
}

export function devicePage(view: View, data: DevicePageData): SafeHtml {
  const { t } = view;
  const { device } = data;
  const id = encodeURIComponent(device.id);
  const rows = data.history.map((record) => html`<tr>
    <td><a href="/console/tasks/${record.taskId}">${record.targetVersion}</a></td>
    <td>${record.fromVersion ?? ''}</td>
    <td><span class="rstate rstate-${record.state}">${stateLabel(view, record.state)}</span></td>
    <td>${record.progress}%</td>
    <td>${record.attempts}</td>
    <td>${record.errorReason ?? ''}</td>
    <td>${when(record.updatedAt)}</td>
    <td class="actions"><a href="/console/records/${record.id}">${t.view}</a></td>
  </tr>`);
  const content = html`<div class="title-row"><h1>${device.id}</h1>
  <div class="buttons">${actionButton(view, `/console/devices/${id}/read`, t.readFirmware, { kind: 'primary' })}</div></div>
${data.read ? html`<p class="notice" role="status">${t.readResult}: ${t.version} <strong class="read-version">${data.read.version}</strong>
  ${data.read.properties ? html` <code>${JSON.stringify(data.read.properties)}</code>` : ''}</p>` : ''}
${data.readError ? html`<p class="error" role="alert">${data.readError}</p>` : ''}
<dl class="facts">
  <dt>${t.name}</dt><dd>${device.name ?? ''}</dd>
  <dt>${t.productId}</dt><dd>${device.productId}</dd>
  <dt>${t.firmwareVersion}</dt><dd class="device-version">${device.firmwareVersion ?? ''}</dd>
  <dt>${t.reportedAt}</dt><dd>${when(device.firmwareReportedAt)}</dd>
  <dt>${t.gateway}</dt><dd>${device.gatewayId ?? ''}</dd>
  ${device.firmwareProperties ? html`<dt>${t.description}</dt><dd><code>${JSON.stringify(device.firmwareProperties)}</code></dd>` : ''}
</dl>
<h2>${t.upgradeHistory}</h2>
${data.history.length === 0 ? html`<p class="empty">${t.nothingHere}</p>` : html`<table class="list">
  <thead><tr><th>${t.version}</th><th>${t.firmwareVersion}</th><th>${t.state}</th><th>${t.progress}</th><th>${t.attempts}</th><th>${t.reason}</th><th>${t.updatedAt}</th><th></th></tr></thead>
  <tbody>${rows}</tbody></table>`}
${pager(view, `/console/devices/${id}`, {}, data.historyPage, data.historyMore)}`;
  return layout(view, device.id, content);
}

export function recordPage(view: View, record: RecordWithEventsJson): SafeHtml {
  const { t } = view;
  const events = record.events.map((event) => html`<li class="event event-${event.type}">
    <time datetime="${event.at}">${when(event.at)}</time>
    <span class="etype">${t[`event_${event.type}`]}</span>
    ${event.attempt > 0 ? html`<small>${t.attempts} ${event.attempt}</small>` : ''}
    ${event.progress !== undefined ? html`<progress max="100" value="${event.progress}" aria-label="${t.progress}"></progress> <small>${event.progress}%</small>` : ''}
    ${event.message ? html`<span class="emsg">${event.message}</span>` : ''}
  </li>`);
  const content = html`<h1>${t.record} · ${record.deviceId}</h1>
<dl class="facts">
  <dt>${t.device}</dt><dd><a href="/console/devices/${encodeURIComponent(record.deviceId)}">${record.deviceId}</a></dd>
  <dt>${t.task}</dt><dd><a href="/console/tasks/${record.taskId}">${record.taskId}</a></dd>
  <dt>${t.version}</dt><dd>${record.fromVersion ?? '?'} → ${record.targetVersion}</dd>
  <dt>${t.state}</dt><dd><span class="rstate rstate-${record.state}">${stateLabel(view, record.state)}</span></dd>
  <dt>${t.progress}</dt><dd><progress max="100" value="${record.progress}" aria-label="${t.progress}"></progress> ${record.progress}%</dd>
  <dt>${t.attempts}</dt><dd>${record.attempts}</dd>
  <dt>${t.reason}</dt><dd>${record.errorReason ?? ''}</dd>
</dl>
<h2>${t.timeline}</h2>
<ol class="timeline">${events}</ol>
${record.eventsTotal > record.events.length ? html`<p><small>${record.eventsTotal - record.events.length} ${t.more}</small></p>` : ''}`;
  return layout(view, t.record, content);
}
