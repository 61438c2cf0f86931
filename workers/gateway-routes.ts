// Child devices are reached through their gateway: a connector decorator fills in each outgoing
// message's route (`via`) from the device registry, so most senders need not know about gateways.
// The upgrade sender reads the route itself, before it writes a send (upgrade-sender.ts). Look-ups
// are batched (every send of a moment shares one query) and briefly cached.
import type { Connector, OutgoingDeviceMessage } from '../protocols/connector.ts';
import type { GatewayRoute } from '../core/messages.ts';
import type { Db } from '../db/connection.ts';
import { findGateways } from '../db/queries/devices.ts';
import { Batcher } from '../core/batcher.ts';
import { retryTransient } from '../db/transient-errors.ts';

/** A device's gateway as registered: the gateway's product is null when the gateway is not registered. */
type Registered = { gatewayId: string; gatewayProductId: string | null } | null;

/** How long a device's route is reused (retries and reads of one device come in bursts). */
const CACHE_MS = 2_000;
const MAX_CACHED = 50_000;
/** How long a look-up waits for PostgreSQL to come back (a restart) before it fails. */
const LOOKUP_RETRY_MS = 15_000;

export class GatewayDirectory {
  private readonly db: Db;
  private readonly cache = new Map<string, { at: number; route: Registered }>();
  private readonly lookups: Batcher<string, Registered>;

  constructor(db: Db) {
    this.db = db;
    this.lookups = new Batcher<string, Registered>(async (ids) => {
      // a send waits out a database restart rather than failing (and being sent again later)
      const found = await retryTransient(() => findGateways(this.db, ids), { maxRetryTime: LOOKUP_RETRY_MS });
      return ids.map((id) => found.get(id) ?? null);
    }, { maxItems: 1_000, maxWaitMs: 1, concurrency: 4 });
  }

  /** The route to `deviceId`: through its gateway, or null for a device with its own connection. */
  async routeTo(deviceId: string, now = Date.now()): Promise<GatewayRoute | null> {
    const cached = this.cache.get(deviceId);
    let registered: Registered;
    if (cached && now - cached.at < CACHE_MS) {
      registered = cached.route;
    } else {
      registered = await this.lookups.add(deviceId);
      if (this.cache.size >= MAX_CACHED) this.cache.clear();
      this.cache.set(deviceId, { at: now, route: registered });
    }
    if (!registered) return null;
    if (registered.gatewayProductId === null) {
      throw new Error(`device ${deviceId} is behind gateway ${registered.gatewayId}, which is not registered`);
    }
    return { gatewayId: registered.gatewayId, gatewayProductId: registered.gatewayProductId };
  }
}

/**
 * `connector`, with every message that names no route sent the way the registry says. Everything
 * else is the connector's own (a proxy, so whatever else a connector offers stays reachable).
 */
export function routeThroughGateways(connector: Connector, directory: GatewayDirectory): Connector {
  const send = async (message: OutgoingDeviceMessage): Promise<void> => {
    if (message.via !== undefined) return connector.send(message);
    const via = await directory.routeTo(message.deviceId);
    return connector.send({ ...message, via });
  };
  return new Proxy(connector, {
    get(target, property) {
      if (property === 'send') return send;
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}
