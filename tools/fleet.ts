// A simulated fleet: any number of devices speaking JetLinks' firmware topics over a few shared
// MQTT connections. Devices are plain entries in a map (cheap: one process simulates 100,000).
// Each device's fate (succeed, fail, stay silent, reject the push) is drawn once from its id, so a
// run is reproducible and a device behaves the same on every retry.
import { createHash, randomBytes } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { connectCoalesced } from '../protocols/mqtt-client.ts';

export type DeviceFate = 'success' | 'fail' | 'silent' | 'reject';

export interface FleetOptions {
  mqttUrl: string;
  productId: string;
  deviceIds: string[];
  failRate?: number;
  silentRate?: number;
  rejectRate?: number;
  /** Progress reports per upgrade, the last one final (complete: true). */
  progressSteps?: number;
  stepMs?: number;
  /** The firmware version devices run at start; reported at start when `reportOnStart`. */
  version?: string;
  reportOnStart?: boolean;
  /** Devices ask for upgrades themselves (RequestFirmwareMessage) instead of waiting for a push. */
  pull?: boolean;
  /** Acknowledge a push with `upgrade/reply` success: true before the progress reports. */
  ack?: boolean;
  seed?: string;
  connections?: number;
  username?: string;
  password?: string;
  /** Checks a pulled file: downloads `url` and compares its digest with `sign`. */
  verifyDownload?: (url: string, sign: string | null, signMethod: string | null) => Promise<boolean>;
}

interface SimulatedDevice {
  id: string;
  version: string;
  fate: DeviceFate;
  upgrading: boolean;
  /** How many UpgradeFirmwareMessages this device received. */
  upgradesReceived: number;
}

export interface FleetStats {
  upgradesReceived: number;
  pullRepliesReceived: number;
  readsReceived: number;
  succeeded: number;
  failed: number;
  rejected: number;
  ignored: number;
  messagesSent: number;
  downloadFailures: number;
}

interface UpgradeCommand {
  messageId?: string;
  version?: string;
  url?: string;
  sign?: string | null;
  signMethod?: string | null;
  success?: boolean;
  code?: string;
}

function fraction(seed: string, deviceId: string): number {
  const digest = createHash('sha256').update(`${seed}:${deviceId}`).digest();
  return digest.readUInt32BE(0) / 0x1_0000_0000;
}

export function deviceFate(seed: string, deviceId: string, rates: { failRate: number; silentRate: number; rejectRate: number }): DeviceFate {
  const x = fraction(seed, deviceId);
  if (x < rates.failRate) return 'fail';
  if (x < rates.failRate + rates.silentRate) return 'silent';
  if (x < rates.failRate + rates.silentRate + rates.rejectRate) return 'reject';
  return 'success';
}

export class Fleet {
  readonly devices = new Map<string, SimulatedDevice>();
  readonly stats: FleetStats = {
    upgradesReceived: 0,
    pullRepliesReceived: 0,
    readsReceived: 0,
    succeeded: 0,
    failed: 0,
    rejected: 0,
    ignored: 0,
    messagesSent: 0,
    downloadFailures: 0,
  };
  private clients: MqttClient[] = [];
  private next = 0;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly options: Required<Omit<FleetOptions, 'username' | 'password' | 'verifyDownload'>> &
    Pick<FleetOptions, 'username' | 'password' | 'verifyDownload'>;

  constructor(options: FleetOptions) {
    this.options = {
      failRate: 0,
      silentRate: 0,
      rejectRate: 0,
      progressSteps: 3,
      stepMs: 0,
      version: '1.0.0',
      reportOnStart: true,
      pull: false,
      ack: true,
      seed: 'otter',
      connections: Math.min(4, Math.max(1, Math.ceil(options.deviceIds.length / 25_000))),
      ...options,
    };
    const rates = this.options;
    for (const id of options.deviceIds) {
      this.devices.set(id, { id, version: this.options.version, fate: deviceFate(this.options.seed, id, rates), upgrading: false, upgradesReceived: 0 });
    }
  }

  fateCount(fate: DeviceFate): number {
    let n = 0;
    for (const device of this.devices.values()) if (device.fate === fate) n += 1;
    return n;
  }

  async start(): Promise<void> {
    const { productId } = this.options;
    const group = `sim-${randomBytes(4).toString('hex')}`;
    for (let i = 0; i < this.options.connections; i += 1) {
      const client = await connectCoalesced(this.options.mqttUrl, {
        protocolVersion: 5,
        clientId: `${group}-${i}`,
        username: this.options.username,
        password: this.options.password,
        clean: true,
        reconnectPeriod: 1_000,
        properties: { receiveMaximum: 65_535 },
      });
      client.on('message', (topic, payload) => this.onMessage(topic, payload));
      await client.subscribeAsync(
        [`$share/${group}//${productId}/+/firmware/upgrade`, `$share/${group}//${productId}/+/firmware/pull/reply`, `$share/${group}//${productId}/+/firmware/read`],
        { qos: 1 },
      );
      this.clients.push(client);
    }
    if (this.options.reportOnStart) {
      for (const device of this.devices.values()) this.report(device);
    }
    if (this.options.pull) {
      for (const device of this.devices.values()) this.requestUpgrade(device);
    }
  }

  /** Every device asks for an upgrade (pull mode), e.g. after a task was released. */
  requestAll(): void {
    for (const device of this.devices.values()) if (!device.upgrading) this.requestUpgrade(device);
  }

  private publish(deviceId: string, suffix: string, body: object): void {
    const client = this.clients[this.next++ % this.clients.length]!;
    this.stats.messagesSent += 1;
    client.publish(`/${this.options.productId}/${deviceId}/${suffix}`, JSON.stringify(body), { qos: 1 });
  }

  private report(device: SimulatedDevice): void {
    this.publish(device.id, 'firmware/report', { version: device.version, properties: { simulated: 'true' }, timestamp: Date.now() });
  }

  private requestUpgrade(device: SimulatedDevice): void {
    this.publish(device.id, 'firmware/pull', { messageId: randomBytes(8).toString('hex'), currentVersion: device.version, timestamp: Date.now() });
  }

  private onMessage(topic: string, payload: Buffer): void {
    const parts = topic.split('/');
    const deviceId = parts[2] ?? '';
    const kind = parts.slice(3).join('/');
    const device = this.devices.get(deviceId);
    if (!device) return;
    let body: UpgradeCommand;
    try {
      body = JSON.parse(payload.toString('utf8')) as UpgradeCommand;
    } catch {
      return;
    }
    if (kind === 'firmware/read') {
      this.stats.readsReceived += 1;
      if (device.fate === 'silent') return;
      this.publish(device.id, 'firmware/read/reply', { messageId: body.messageId, version: device.version, properties: { simulated: 'true' } });
      return;
    }
    if (kind === 'firmware/pull/reply') {
      this.stats.pullRepliesReceived += 1;
      if (!body.success) return;
      void this.upgradeAfterDownload(device, body);
      return;
    }
    if (kind === 'firmware/upgrade') {
      this.stats.upgradesReceived += 1;
      device.upgradesReceived += 1;
      this.upgrade(device, body, true);
    }
  }

  private async upgradeAfterDownload(device: SimulatedDevice, command: UpgradeCommand): Promise<void> {
    if (this.options.verifyDownload && command.url) {
      const ok = await this.options.verifyDownload(command.url, command.sign ?? null, command.signMethod ?? null).catch(() => false);
      if (!ok) {
        this.stats.downloadFailures += 1;
        this.publish(device.id, 'firmware/upgrade/progress', {
          progress: 0,
          complete: false,
          success: false,
          version: command.version,
          errorReason: 'download failed or sign mismatch',
          timestamp: Date.now(),
        });
        return;
      }
    }
    this.upgrade(device, command, false);
  }

  private upgrade(device: SimulatedDevice, command: UpgradeCommand, pushed: boolean): void {
    const { fate } = device;
    if (fate === 'silent') return;
    if (pushed && fate === 'reject') {
      this.stats.rejected += 1;
      this.publish(device.id, 'firmware/upgrade/reply', { messageId: command.messageId, success: false, code: 'busy', message: 'simulated rejection' });
      return;
    }
    if (device.upgrading) {
      this.stats.ignored += 1;
      return;
    }
    device.upgrading = true;
    if (pushed && this.options.ack) this.publish(device.id, 'firmware/upgrade/reply', { messageId: command.messageId, success: true });
    const version = command.version ?? device.version;
    const steps = Math.max(1, this.options.progressSteps);
    const failAt = Math.max(1, Math.ceil(steps / 2));
    let step = 0;
    const tick = () => {
      step += 1;
      if (fate === 'fail' && step >= failAt) {
        device.upgrading = false;
        this.stats.failed += 1;
        this.publish(device.id, 'firmware/upgrade/progress', {
          progress: Math.floor(((step - 1) / steps) * 100),
          complete: false,
          success: false,
          version,
          errorReason: 'simulated failure: flash write error',
          timestamp: Date.now(),
        });
        return;
      }
      const complete = step >= steps;
      this.publish(device.id, 'firmware/upgrade/progress', {
        progress: complete ? 100 : Math.floor((step / steps) * 100),
        complete,
        success: true,
        version,
        timestamp: Date.now(),
      });
      if (complete) {
        device.upgrading = false;
        device.version = version;
        this.stats.succeeded += 1;
        return;
      }
      this.schedule(tick);
    };
    this.schedule(tick);
  }

  private schedule(fn: () => void): void {
    if (this.options.stepMs <= 0) {
      setImmediate(fn);
      return;
    }
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, this.options.stepMs);
    this.timers.add(timer);
  }

  async stop(): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer);
    await Promise.all(this.clients.map((client) => client.endAsync()));
    this.clients = [];
  }
}

/** Device ids `${prefix}-000001` … for a fleet of `count`. */
export function fleetDeviceIds(prefix: string, count: number): string[] {
  const width = String(count).length;
  return Array.from({ length: count }, (_, i) => `${prefix}-${String(i + 1).padStart(width, '0')}`);
}
