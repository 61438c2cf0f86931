// An example connector (docs/device-protocol.md#custom-connectors): a template for your own protocol. Instead of a network it
// answers every message itself, as a device that upgrades at once would — handy for trying Otter
// without a broker. Load it with CONNECTOR=./protocols/examples/loopback-connector.ts
//
// A connector module's default export is a factory `(context) => Connector`. It receives the
// configuration and a logger in `context`, and `context.receive` says whether this process handles
// device messages (worker processes do; API-only processes only send).
import type { Connector, ConnectorContext, DeviceMessageListener, OutgoingDeviceMessage } from '../connector.ts';

export default function createLoopbackConnector(context: ConnectorContext): Connector {
  let listener: DeviceMessageListener | undefined;
  const versions = new Map<string, string>();

  // what a device sends back: here, built on the spot; in a real connector, decoded from the wire
  function deviceSays(productId: string, deviceId: string, messageType: string, body: object): void {
    setImmediate(() => void listener?.({ messageType, productId, deviceId, body, source: 'loopback' }));
  }

  return {
    name: 'loopback',

    async start(onDeviceMessage) {
      if (context.receive) listener = onDeviceMessage;
      context.logger.info('loopback connector started: every device upgrades at once');
    },

    async send(message: OutgoingDeviceMessage) {
      const { productId, deviceId } = message;
      switch (message.messageType) {
        case 'UPGRADE_FIRMWARE': {
          const { messageId, version } = message.body;
          deviceSays(productId, deviceId, 'UPGRADE_FIRMWARE_REPLY', { messageId, success: true });
          deviceSays(productId, deviceId, 'UPGRADE_FIRMWARE_PROGRESS', { progress: 50, complete: false, success: true, version, timestamp: Date.now() });
          deviceSays(productId, deviceId, 'UPGRADE_FIRMWARE_PROGRESS', { progress: 100, complete: true, success: true, version, timestamp: Date.now() });
          versions.set(deviceId, version);
          return;
        }
        case 'READ_FIRMWARE':
          deviceSays(productId, deviceId, 'READ_FIRMWARE_REPLY', {
            messageId: message.body.messageId,
            version: versions.get(deviceId) ?? 'unknown',
            properties: { connector: 'loopback' },
          });
          return;
        case 'REQUEST_FIRMWARE_REPLY':
          if (message.body.success && message.body.version) {
            deviceSays(productId, deviceId, 'UPGRADE_FIRMWARE_PROGRESS', { progress: 100, complete: true, success: true, version: message.body.version, timestamp: Date.now() });
          }
          return;
      }
    },

    async ready() {},

    async stop() {
      listener = undefined;
    },
  };
}
