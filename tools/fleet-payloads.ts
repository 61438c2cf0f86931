// What a simulated device puts in each message it sends. `otter`: the fields of Otter's contract,
// typed as JSON types. `jetlinks-strict`: only what JetLinks' protocol documentation shows, the
// way devices written for JetLinks send it — numbers, booleans and timestamps as strings, no
// `success` on an acknowledgement (JetLinks' reply defaults it to true), JetLinks' `error()` shape
// for a failure — so a run shows such a fleet upgrades through Otter unchanged.
import { randomBytes } from 'node:crypto';

export type PayloadStyle = 'otter' | 'jetlinks-strict';

export interface ProgressReport {
  progress: number;
  complete: boolean;
  success: boolean;
  version: string | undefined;
  errorReason?: string;
  firmwareId?: string;
}

export interface DevicePayloads {
  report(version: string): object;
  pull(currentVersion: string): object;
  acknowledge(messageId: string | undefined): object;
  reject(messageId: string | undefined, message: string): object;
  progress(report: ProgressReport): object;
  readReply(messageId: string | undefined, version: string): object;
}

const messageId = () => randomBytes(8).toString('hex');

const OTTER: DevicePayloads = {
  report: (version) => ({ version, properties: { simulated: 'true' }, timestamp: Date.now() }),
  pull: (currentVersion) => ({ messageId: messageId(), currentVersion, timestamp: Date.now() }),
  acknowledge: (id) => ({ messageId: id, success: true }),
  reject: (id, message) => ({ messageId: id, success: false, code: 'busy', message }),
  progress: ({ progress, complete, success, version, errorReason }) => ({
    progress,
    complete,
    success,
    version,
    ...(errorReason ? { errorReason } : {}),
    timestamp: Date.now(),
  }),
  readReply: (id, version) => ({ messageId: id, version, properties: { simulated: 'true' } }),
};

// jetlinks-docs, the official protocol's firmware topics: every field as its example shows it
const now = () => String(Date.now());
const JETLINKS_STRICT: DevicePayloads = {
  report: (version) => ({ timestamp: now(), version }),
  pull: (currentVersion) => ({ timestamp: now(), messageId: messageId(), currentVersion, requestVersion: '' }),
  acknowledge: (id) => ({ messageId: id, timestamp: now() }),
  reject: (id, message) => ({ messageId: id, success: 'false', code: 'error_code', message, timestamp: now() }),
  progress: ({ progress, complete, success, version, errorReason, firmwareId }) => ({
    timestamp: now(),
    progress: String(progress),
    complete: String(complete),
    version,
    success: String(success),
    ...(errorReason ? { errorReason } : {}),
    ...(firmwareId ? { firmwareId } : {}),
  }),
  readReply: (id, version) => ({ timestamp: now(), messageId: id, version }),
};

export function devicePayloads(style: PayloadStyle): DevicePayloads {
  return style === 'jetlinks-strict' ? JETLINKS_STRICT : OTTER;
}
