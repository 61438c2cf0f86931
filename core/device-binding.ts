// Whether a device message may act for its device: a device speaks only on its registered
// product's topics, and a child device only through its registered gateway. Pure: the caller
// loads the device's registration (with what it loads anyway) and applies the verdict.
import type { GatewayRoute } from './messages.ts';

/** What the registry says about a device, as far as its messages are concerned. */
export interface DeviceBinding {
  productId: string;
  /** The gateway it talks through, or null for a device with its own connection. */
  gatewayId: string | null;
  /** That gateway's registered product; null when the device has no gateway or it is not registered. */
  gatewayProductId: string | null;
}

export interface BoundMessage {
  deviceId: string;
  /** The product the message names (the MQTT topic's, or a REST message's `productId`). */
  productId: string | undefined;
  /** Set when the message came through a gateway (a child's topic). */
  gateway?: GatewayRoute;
}

export interface BindingRefusal {
  code: 'product_mismatch' | 'gateway_mismatch';
  message: string;
}

/**
 * Why `message` must not act for its registered device, or undefined when it may. `fromPlatform`
 * (a message posted with an API key) skips the gateway rule: a platform relays for its devices
 * however they are connected.
 */
export function bindingRefusal(message: BoundMessage, device: DeviceBinding, fromPlatform: boolean): BindingRefusal | undefined {
  const { deviceId, gateway } = message;
  if (gateway) {
    if (device.gatewayId !== gateway.gatewayId) {
      return {
        code: 'gateway_mismatch',
        message: device.gatewayId === null
          ? `device ${deviceId} is not registered behind a gateway, not behind ${gateway.gatewayId}`
          : `device ${deviceId} is registered behind gateway ${device.gatewayId}, not ${gateway.gatewayId}`,
      };
    }
    if (device.gatewayProductId !== gateway.gatewayProductId) {
      return {
        code: 'gateway_mismatch',
        message: `gateway ${gateway.gatewayId} is ${device.gatewayProductId === null ? 'not registered' : `of product ${device.gatewayProductId}`}, not ${gateway.gatewayProductId}`,
      };
    }
  } else if (device.gatewayId !== null && !fromPlatform) {
    // a child device's own connection would bypass its gateway: only the gateway speaks for it
    return { code: 'gateway_mismatch', message: `device ${deviceId} is registered behind gateway ${device.gatewayId}; its messages must come through it` };
  }
  if (message.productId !== undefined && message.productId !== device.productId) {
    return { code: 'product_mismatch', message: `device ${deviceId} is of product ${device.productId}, not ${message.productId}` };
  }
  return undefined;
}
