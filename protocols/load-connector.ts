// Picks the connector named by CONNECTOR: `mqtt`, `http`, or a path to a module whose default
// export is a ConnectorFactory (docs/device-protocol.md#custom-connectors).
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { OtterError } from '../core/errors.ts';
import type { Connector, ConnectorContext, ConnectorFactory } from './connector.ts';
import { createMqttConnector } from './mqtt-connector.ts';
import { createHttpConnector } from './http-connector.ts';

export async function loadConnector(context: ConnectorContext): Promise<Connector> {
  const name = context.config.connector;
  if (name === 'mqtt') return createMqttConnector(context);
  if (name === 'http') return createHttpConnector(context);
  const modulePath = path.resolve(name);
  let factory: unknown;
  try {
    factory = ((await import(pathToFileURL(modulePath).href)) as { default?: unknown }).default;
  } catch (error) {
    throw new OtterError('connector_not_loaded', `CONNECTOR=${name}: cannot load ${modulePath}: ${(error as Error).message}`, 500);
  }
  if (typeof factory !== 'function') {
    throw new OtterError('connector_not_loaded', `CONNECTOR=${name}: the module's default export must be a factory (context) => Connector`, 500);
  }
  const connector = await (factory as ConnectorFactory)(context);
  for (const method of ['start', 'send', 'stop'] as const) {
    if (typeof (connector as unknown as Record<string, unknown>)?.[method] !== 'function') {
      throw new OtterError('connector_not_loaded', `CONNECTOR=${name}: the connector has no ${method}() method`, 500);
    }
  }
  return connector;
}
