// A simulated fleet: any number of devices speaking JetLinks' firmware topics over a few shared
// MQTT connections. Devices are plain entries in a map (cheap: one process simulates 100,000).
// Each device's fate (succeed, fail, stay silent, reject the push) is drawn once from its id, so a
// run is reproducible and a device behaves the same on every retry. Devices may sit behind simulated
// gateways: they then hear and speak only on their gateway's child topics.
import { createHash, randomBytes } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { connectCoalesced } from '../protocols/mqtt-client.ts';
import { devicePayloads, type DevicePayloads } from './fleet-payloads.ts';

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
  /** Send only what JetLinks' protocol docs show, numbers and booleans as strings (fleet-payloads.ts). */
  jetlinksStrict?: boolean;
  seed?: string;
  connections?: number;
  username?: string;
  password?: string;
  /** Checks a pulled file: downloads `url` and compares its digest with `sign`. */
  verifyDownload?: (url: string, sign: string | null, signMethod: string | null) => Promise<boolean>;
  /** Devices that sit behind a gateway; the others have their own connection. */
  gateways?: FleetGateways;
}

/**
 * Child devices behind simulated gateways (JetLinks' gateway topics): a child hears and speaks only
 * on `/{productId}/{gatewayId}/child/{childId}/firmware/…`, where `productId` is the gateways' product.
 */
export interface FleetGateways {
  productId: string;
  /** child device id → the id of the gateway it is behind */
  children: ReadonlyMap<string, string>;
}

interface SimulatedDevice {
  id: string;
  version: string;
  fate: DeviceFate;
  upgrading: boolean;
  /** How many UpgradeFirmwareMessages this device received. */
  upgradesReceived: number;
  /** The gateway it is behind, if any. */
  gatewayId?: string;
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
  /** Messages for a device on a topic it cannot hear: a child's direct topic, or another gateway's. */
  misrouted: number;
}

interface UpgradeCommand {
  messageId?: string;
  version?: string;
  url?: string;
  sign?: string | null;
  signMethod?: string | null;
  success?: boolean;
  code?: string;
  firmwareId?: string;
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
    misrouted: 0,
  };
  private clients: MqttClient[] = [];
  private next = 0;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly options: Required<Omit<FleetOptions, 'username' | 'password' | 'verifyDownload' | 'gateways'>> &
    Pick<FleetOptions, 'username' | 'password' | 'verifyDownload' | 'gateways'>;

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
      jetlinksStrict: false,
      seed: 'otter',
      connections: Math.min(4, Math.max(1, Math.ceil(options.deviceIds.length / 25_000))),
      ...options,
    };
    const rates = this.options;
    for (const id of options.deviceIds) {
      const gatewayId = options.gateways?.children.get(id);
      this.devices.set(id, { id, version: this.options.version, fate: deviceFate(this.options.seed, id, rates), upgrading: false, upgradesReceived: 0, ...(gatewayId ? { gatewayId } : {}) });
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
        [`$share/${group}//${productId}/+/firmware/upgrade`, `$share/${group}//${productId}/+/firmware/pull/reply`, `$share/${group}//${productId}/+/firmware/read`, ...this.gatewayFilters(group)],
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
    client.publish(this.topicOf(deviceId, suffix), JSON.stringify(body), { qos: 1 });
  }

  /** A device's own topic, or for a child its gateway's child topic: the gateway relays what its children say. */
  private topicOf(deviceId: string, suffix: string): string {
    const gatewayId = this.devices.get(deviceId)?.gatewayId;
    if (gatewayId) return `/${this.options.gateways!.productId}/${gatewayId}/child/${deviceId}/${suffix}`;
    return `/${this.options.productId}/${deviceId}/${suffix}`;
  }

  /** What the gateways hear for their children: the platform's messages on their child topics. */
  private gatewayFilters(group: string): string[] {
    const gateways = this.options.gateways;
    if (!gateways || gateways.children.size === 0) return [];
    return ['firmware/upgrade', 'firmware/pull/reply', 'firmware/read'].map((suffix) => `$share/${group}//${gateways.productId}/+/child/+/${suffix}`);
  }

  /**
   * The device a platform message is for and its kind (`firmware/upgrade`, …), or undefined when no
   * simulated device can hear it: a child has no connection of its own, and hears only through its gateway.
   */
  private addressee(topic: string): { device: SimulatedDevice; kind: string } | undefined {
    const parts = topic.split('/');
    const viaGateway = this.options.gateways !== undefined && parts[1] === this.options.gateways.productId && parts[3] === 'child';
    const device = this.devices.get((viaGateway ? parts[4] : parts[2]) ?? '');
    if (!device) return undefined;
    if (viaGateway ? device.gatewayId !== parts[2] : device.gatewayId !== undefined) {
      this.stats.misrouted += 1;
      return undefined;
    }
    return { device, kind: parts.slice(viaGateway ? 5 : 3).join('/') };
  }

  /** What the devices put in their messages: Otter's contract, or strictly JetLinks' documented form. */
  private get payloads(): DevicePayloads {
    return devicePayloads(this.options.jetlinksStrict ? 'jetlinks-strict' : 'otter');
  }

  private report(device: SimulatedDevice): void {
    this.publish(device.id, 'firmware/report', this.payloads.report(device.version));
  }

  private requestUpgrade(device: SimulatedDevice): void {
    this.publish(device.id, 'firmware/pull', this.payloads.pull(device.version));
  }

  private onMessage(topic: string, payload: Buffer): void {
    const addressed = this.addressee(topic);
    if (!addressed) return;
    const { device, kind } = addressed;
    let body: UpgradeCommand;
    try {
      body = JSON.parse(payload.toString('utf8')) as UpgradeCommand;
    } catch {
      return;
    }
    if (kind === 'firmware/read') {
      this.stats.readsReceived += 1;
      if (device.fate === 'silent') return;
      this.publish(device.id, 'firmware/read/reply', this.payloads.readReply(body.messageId, device.version));
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
        this.publish(device.id, 'firmware/upgrade/progress', this.payloads.progress({
          progress: 0,
          complete: false,
          success: false,
          version: command.version,
          errorReason: 'download failed or sign mismatch',
          firmwareId: command.firmwareId,
        }));
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
      this.publish(device.id, 'firmware/upgrade/reply', this.payloads.reject(command.messageId, 'simulated rejection'));
      return;
    }
    if (device.upgrading) {
      this.stats.ignored += 1;
      return;
    }
    device.upgrading = true;
    if (pushed && this.options.ack) this.publish(device.id, 'firmware/upgrade/reply', this.payloads.acknowledge(command.messageId));
    const version = command.version ?? device.version;
    const steps = Math.max(1, this.options.progressSteps);
    const failAt = Math.max(1, Math.ceil(steps / 2));
    let step = 0;
    const tick = () => {
      step += 1;
      if (fate === 'fail' && step >= failAt) {
        device.upgrading = false;
        this.stats.failed += 1;
        this.publish(device.id, 'firmware/upgrade/progress', this.payloads.progress({
          progress: Math.floor(((step - 1) / steps) * 100),
          complete: false,
          success: false,
          version,
          errorReason: 'simulated failure: flash write error',
          firmwareId: command.firmwareId,
        }));
        return;
      }
      const complete = step >= steps;
      this.publish(device.id, 'firmware/upgrade/progress', this.payloads.progress({
        progress: complete ? 100 : Math.floor((step / steps) * 100),
        complete,
        success: true,
        version,
        firmwareId: command.firmwareId,
      }));
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

/** The product simulated gateways are registered under when none is named: `<product>-gw`. */
export function defaultGatewayProduct(productId: string): string {
  return `${productId}-gw`;
}

/** `childIds` spread evenly over `gatewayIds` (round robin): child id → gateway id. */
export function spreadOverGateways(childIds: readonly string[], gatewayIds: readonly string[]): Map<string, string> {
  if (gatewayIds.length === 0) return new Map();
  return new Map(childIds.map((id, i) => [id, gatewayIds[i % gatewayIds.length]!]));
}
