// `npm run simulate -- --devices N --product P [...]`: a simulated fleet over MQTT (docs/operations.md#commands).
// With --api and --api-key it registers the devices with Otter first (over REST: Otter does not take
// unknown devices from MQTT unless DEVICE_SELF_REGISTRATION=true).
// With --gateways N the devices sit behind N simulated gateways and talk on their child topics.
import { parseArgs } from 'node:util';
import { redactUrl } from '../core/config.ts';
import { Fleet, defaultGatewayProduct, fleetDeviceIds, spreadOverGateways } from './fleet.ts';
import { verifyDownload } from './download.ts';

const { values } = parseArgs({
  options: {
    devices: { type: 'string', default: '100' },
    product: { type: 'string', default: 'demo-product' },
    prefix: { type: 'string' },
    gateways: { type: 'string', default: '0' },
    'gateway-product': { type: 'string' },
    'fail-rate': { type: 'string', default: '0' },
    'silent-rate': { type: 'string', default: '0' },
    'reject-rate': { type: 'string', default: '0' },
    'progress-steps': { type: 'string', default: '3' },
    'step-ms': { type: 'string', default: '500' },
    version: { type: 'string', default: '1.0.0' },
    pull: { type: 'boolean', default: false },
    'jetlinks-strict': { type: 'boolean', default: false },
    'skip-report': { type: 'boolean', default: false },
    seed: { type: 'string', default: 'otter' },
    'mqtt-url': { type: 'string', default: process.env.MQTT_URL ?? 'mqtt://127.0.0.1:1883' },
    api: { type: 'string', description: 'Otter base URL: register the devices first' },
    'api-key': { type: 'string', default: process.env.API_KEYS?.split(',')[0] },
    help: { type: 'boolean', default: false },
  },
  strict: true,
});

if (values.help) {
  process.stdout.write(`usage: npm run simulate -- --devices N --product P [--fail-rate 0.02] [--silent-rate 0.01]
  [--reject-rate 0] [--progress-steps 3] [--step-ms 500] [--version 1.0.0] [--pull] [--skip-report] [--seed s]
  [--jetlinks-strict]  (send only what JetLinks' protocol docs show: "progress": "60", string timestamps, no success on acks)
  [--mqtt-url mqtt://127.0.0.1:1883] [--api http://localhost:3000 --api-key KEY]
  [--gateways N [--gateway-product P]]  (the devices sit behind N gateways <prefix>-gw-1… of product P,
    default <product>-gw, and talk on the gateways' child topics; --api registers the gateways too)
`);
  process.exit(0);
}

function rate(name: string, raw: string | undefined): number {
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0 || value > 1) {
    process.stderr.write(`simulate: --${name} must be a number from 0 to 1\n`);
    process.exit(2);
  }
  return value;
}

const count = Number(values.devices);
if (!Number.isInteger(count) || count < 1 || count > 1_000_000) {
  process.stderr.write('simulate: --devices must be an integer from 1 to 1,000,000\n');
  process.exit(2);
}
const productId = values.product!;
const deviceIds = fleetDeviceIds(values.prefix ?? productId, count);
const gatewayCount = Number(values.gateways);
if (!Number.isInteger(gatewayCount) || gatewayCount < 0 || gatewayCount > count) {
  process.stderr.write('simulate: --gateways must be an integer from 0 to the number of devices\n');
  process.exit(2);
}
const gatewayProductId = values['gateway-product'] ?? defaultGatewayProduct(productId);
const gatewayIds = fleetDeviceIds(`${values.prefix ?? productId}-gw`, gatewayCount);
const gatewayOf = spreadOverGateways(deviceIds, gatewayIds);

if (!values.api && !values['skip-report']) {
  // Otter takes messages only from registered devices (unless DEVICE_SELF_REGISTRATION=true)
  process.stderr.write('simulate: no --api given: the devices must already be registered with Otter (PUT /api/devices), or their messages are refused unknown_device\n');
}
if (values.api) {
  // the gateways first, then the devices, each child naming its gateway
  const registrations: object[] = [
    ...gatewayIds.map((id) => ({ id, productId: gatewayProductId })),
    ...deviceIds.map((id) => ({ id, productId, firmwareVersion: values.version, ...(gatewayOf.has(id) ? { gatewayId: gatewayOf.get(id) } : {}) })),
  ];
  for (let i = 0; i < registrations.length; i += 10_000) {
    const response = await fetch(`${values.api.replace(/\/$/, '')}/api/devices`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${values['api-key'] ?? ''}` },
      body: JSON.stringify({ devices: registrations.slice(i, i + 10_000) }),
    });
    if (!response.ok) {
      process.stderr.write(`simulate: registering devices failed: ${response.status} ${await response.text()}\n`);
      process.exit(1);
    }
  }
}

const fleet = new Fleet({
  mqttUrl: values['mqtt-url']!,
  username: process.env.MQTT_USERNAME,
  password: process.env.MQTT_PASSWORD,
  productId,
  deviceIds,
  ...(gatewayCount > 0 ? { gateways: { productId: gatewayProductId, children: gatewayOf } } : {}),
  failRate: rate('fail-rate', values['fail-rate']),
  silentRate: rate('silent-rate', values['silent-rate']),
  rejectRate: rate('reject-rate', values['reject-rate']),
  progressSteps: Number(values['progress-steps']),
  stepMs: Number(values['step-ms']),
  version: values.version,
  pull: values.pull,
  jetlinksStrict: values['jetlinks-strict'],
  reportOnStart: !values['skip-report'],
  seed: values.seed,
  verifyDownload,
});
await fleet.start();
process.stdout.write(`simulating ${count} devices of product ${productId} on ${redactUrl(values['mqtt-url']!)} (Ctrl-C to stop)\n`);
if (gatewayCount > 0) process.stdout.write(`  behind ${gatewayCount} gateways of product ${gatewayProductId} (${gatewayIds[0]} …), on their child topics\n`);

const timer = setInterval(() => process.stdout.write(`${JSON.stringify({ at: new Date().toISOString(), ...fleet.stats })}\n`), 5_000);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    clearInterval(timer);
    void fleet.stop().then(() => process.exit(0));
  });
}
