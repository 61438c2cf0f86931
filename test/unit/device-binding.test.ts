// Who may speak for a device: its own product's topics, and for a child device only its registered
// gateway (with the gateway's registered product); a platform's REST message skips the gateway rule.
import { describe, expect, it } from 'vitest';
import { bindingRefusal, type DeviceBinding } from '../../core/device-binding.ts';

const direct: DeviceBinding = { productId: 'meter', gatewayId: null, gatewayProductId: null };
const child: DeviceBinding = { productId: 'sensor', gatewayId: 'gw-1', gatewayProductId: 'gateway' };
const via = (gatewayId: string, gatewayProductId: string) => ({ gatewayId, gatewayProductId });

describe('bindingRefusal', () => {
  it("lets a device speak on its own product's topic, or without naming a product", () => {
    expect(bindingRefusal({ deviceId: 'd1', productId: 'meter' }, direct, false)).toBeUndefined();
    expect(bindingRefusal({ deviceId: 'd1', productId: undefined }, direct, false)).toBeUndefined();
    expect(bindingRefusal({ deviceId: 'd1', productId: 'meter' }, direct, true)).toBeUndefined();
  });

  it("refuses another product's topic: product_mismatch, from a device or a platform", () => {
    expect(bindingRefusal({ deviceId: 'd1', productId: 'lamp' }, direct, false)?.code).toBe('product_mismatch');
    expect(bindingRefusal({ deviceId: 'd1', productId: 'lamp' }, direct, true)?.code).toBe('product_mismatch');
  });

  it('lets a child speak through its registered gateway, on the gateway product topic', () => {
    expect(bindingRefusal({ deviceId: 'c1', productId: undefined, gateway: via('gw-1', 'gateway') }, child, false)).toBeUndefined();
  });

  it('refuses a child message through another gateway, or with the wrong gateway product: gateway_mismatch', () => {
    expect(bindingRefusal({ deviceId: 'c1', productId: undefined, gateway: via('gw-2', 'gateway') }, child, false)?.code).toBe('gateway_mismatch');
    expect(bindingRefusal({ deviceId: 'c1', productId: undefined, gateway: via('gw-1', 'meter') }, child, false)?.code).toBe('gateway_mismatch');
    // a device with no gateway cannot be spoken for by one
    expect(bindingRefusal({ deviceId: 'd1', productId: undefined, gateway: via('gw-1', 'gateway') }, direct, false)?.code).toBe('gateway_mismatch');
    // a gateway that is not registered speaks for nobody
    const orphan: DeviceBinding = { productId: 'sensor', gatewayId: 'gw-9', gatewayProductId: null };
    expect(bindingRefusal({ deviceId: 'c1', productId: undefined, gateway: via('gw-9', 'gateway') }, orphan, false)?.code).toBe('gateway_mismatch');
  });

  it("refuses a child device's own direct topic: only its gateway speaks for it", () => {
    expect(bindingRefusal({ deviceId: 'c1', productId: 'sensor' }, child, false)?.code).toBe('gateway_mismatch');
  });

  it('lets a platform post for a child device (REST carries no gateway), with its product checked', () => {
    expect(bindingRefusal({ deviceId: 'c1', productId: undefined }, child, true)).toBeUndefined();
    expect(bindingRefusal({ deviceId: 'c1', productId: 'sensor' }, child, true)).toBeUndefined();
    expect(bindingRefusal({ deviceId: 'c1', productId: 'gateway' }, child, true)?.code).toBe('product_mismatch');
  });

  it("checks a child message's own productId (from its payload) against the child's product", () => {
    expect(bindingRefusal({ deviceId: 'c1', productId: 'meter', gateway: via('gw-1', 'gateway') }, child, false)?.code).toBe('product_mismatch');
    expect(bindingRefusal({ deviceId: 'c1', productId: 'sensor', gateway: via('gw-1', 'gateway') }, child, false)).toBeUndefined();
  });
});
