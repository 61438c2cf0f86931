// `npm run demo`: the main job on one machine. Starts a broker tuned for fleet traffic (when
// mosquitto is installed), migrates and starts Otter, registers and simulates a fleet (a tenth of it
// behind `--gateways` gateways, 2 by default, the rest direct), uploads a
// firmware file, creates a task, releases and pushes it, and shows the rollout live until Ctrl-C
// (`--exit`: until the rollout is done). It prints the console's address and the key to sign in with.
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { loadConfig, redactUrl } from '../core/config.ts';
import { DependencyError } from '../core/errors.ts';
import { startOtter, type Otter } from '../service/service.ts';
import { createLogger } from '../service/logger.ts';
import { startBroker, type Broker } from './broker.ts';
import { Fleet, defaultGatewayProduct, fleetDeviceIds, spreadOverGateways } from './fleet.ts';
import { verifyDownload } from './download.ts';
import { OtterClient } from './otter-client.ts';

const { values } = parseArgs({
  options: {
    devices: { type: 'string', default: '1000' },
    'fail-rate': { type: 'string', default: '0.02' },
    'silent-rate': { type: 'string', default: '0.01' },
    'step-ms': { type: 'string', default: '400' },
    gateways: { type: 'string', default: '2' },
    exit: { type: 'boolean', default: false },
  },
  strict: true,
});

const out = (line: string) => process.stdout.write(`${line}\n`);
const count = Number(values.devices);
if (!Number.isInteger(Number(values.gateways)) || Number(values.gateways) < 0) {
  process.stderr.write('demo: --gateways must be an integer from 0 up\n');
  process.exit(2);
}
const productId = `demo-${Date.now().toString(36)}`;

let broker: Broker | undefined;
let otter: Otter | undefined;
let fleet: Fleet | undefined;
let bars: cliProgress.MultiBar | undefined;

async function shutdown(code: number): Promise<never> {
  bars?.stop();
  await fleet?.stop().catch(() => {});
  await otter?.stop().catch(() => {});
  await broker?.stop().catch(() => {});
  process.exit(code);
}

process.once('SIGINT', () => void shutdown(0));
process.once('SIGTERM', () => void shutdown(0));

try {
  broker = await startBroker().catch(() => undefined);
  // the fleet signs in as the broker's simulator account (in the URL), Otter with its own account
  const mqttUrl = broker?.url ?? process.env.MQTT_URL ?? 'mqtt://127.0.0.1:1883';
  out(broker ? `broker: private mosquitto with ./mosquitto.conf at ${broker.plainUrl} (platform accounts), ${broker.devices.url} (devices, TLS client certificates)` : `broker: ${redactUrl(mqttUrl)} (mosquitto not found to start a tuned one)`);
  if (broker) out(`device CA: a throwaway one (${broker.deviceCaEnv.DEVICE_CA_CERT_FILE}); POST /api/devices/credentials issues device certificates`);

  const config = loadConfig({
    ...process.env,
    ROLE: 'all',
    MQTT_URL: mqttUrl,
    ...broker?.serviceEnv,
    ...broker?.deviceCaEnv,
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
    API_KEYS: process.env.API_KEYS ?? `demo-${randomBytes(12).toString('base64url')}`,
  });
  otter = await startOtter(config, { logger: createLogger(config.logLevel) });
  const address = otter.app!.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const baseUrl = `http://localhost:${port}`;
  // a key that may act (API_KEYS may list viewers too)
  const apiKey = config.apiKeyEntries.find((entry) => entry.role !== 'viewer')?.key ?? config.apiKeys[0]!;
  const client = new OtterClient(baseUrl, apiKey);

  const deviceIds = fleetDeviceIds(productId, count);
  await client.registerDevices(productId, deviceIds, '1.0.0');
  // a tenth of the fleet sits behind the gateways (JetLinks' child topics), the rest connects directly
  const gatewayCount = Math.min(Number(values.gateways), Math.floor(count / 10));
  const gatewayProductId = defaultGatewayProduct(productId);
  const gatewayIds = fleetDeviceIds(`${productId}-gw`, Math.max(0, gatewayCount));
  const children = spreadOverGateways(gatewayIds.length > 0 ? deviceIds.slice(0, Math.floor(count / 10)) : [], gatewayIds);
  if (children.size > 0) {
    await client.request('PUT', '/api/devices', { devices: gatewayIds.map((id) => ({ id, productId: gatewayProductId })) });
    const entries = [...children].map(([id, gatewayId]) => ({ id, productId, gatewayId }));
    for (let i = 0; i < entries.length; i += 10_000) await client.request('PUT', '/api/devices', { devices: entries.slice(i, i + 10_000) });
  }
  fleet = new Fleet({
    mqttUrl,
    productId,
    deviceIds,
    ...(children.size > 0 ? { gateways: { productId: gatewayProductId, children } } : {}),
    failRate: Number(values['fail-rate']),
    silentRate: Number(values['silent-rate']),
    progressSteps: 3,
    stepMs: Number(values['step-ms']),
    version: '1.0.0',
    reportOnStart: true,
    verifyDownload,
  });
  await fleet.start();
  out(`fleet: ${count} simulated devices of product ${productId}`);
  if (children.size > 0) out(`gateways: ${children.size} of them behind ${gatewayIds.length} gateways of product ${gatewayProductId} (${gatewayIds.join(', ')}), pushed and heard on the gateways' child topics; the rest direct`);

  const firmware = await client.createFirmware({ productId, name: 'Demo firmware', version: '2.0.0', versionOrder: 2, properties: { channel: 'stable' } });
  const file = randomBytes(256 * 1024);
  const uploaded = await client.uploadFirmware(firmware.id, file);
  out(`firmware: ${firmware.id} v2.0.0, ${uploaded.size} bytes, sha256 ${uploaded.sign}`);

  const task = await client.createTask({
    firmwareId: firmware.id,
    name: 'Demo rollout',
    timeoutSeconds: 10,
    retry: { maxAttempts: 2, backoffSeconds: 2, on: ['timeout', 'send_error'] },
    rollout: { maxPerMinute: Math.max(600, count * 6) },
  });
  const released = await client.release(task.id, { allDevices: true, push: true });
  out(`task: ${task.id} released to ${released.added} devices and pushed`);
  out('');
  out(`console:     ${baseUrl}/console   (sign in with the API key; this rollout: ${baseUrl}/console/tasks/${task.id})`);
  out(`API docs:    ${baseUrl}/docs`);
  out(`bull-board:  ${baseUrl}/admin/queues   (any user name, the API key as password)`);
  out(`API key:     ${apiKey}`);
  out(`task:        curl -H 'authorization: Bearer ${apiKey}' ${baseUrl}/api/tasks/${task.id}`);
  out('');

  // a bar per state, updated in place on a terminal; a line every few seconds otherwise
  const states = ['waiting', 'processing', 'success', 'failed'] as const;
  const tty = process.stdout.isTTY === true;
  if (tty) {
    bars = new cliProgress.MultiBar(
      { format: ' {state} |{bar}| {value}/{total}', hideCursor: true, clearOnComplete: false, barsize: 40 },
      cliProgress.Presets.shades_classic,
    );
  }
  const bar = bars ? Object.fromEntries(states.map((state) => [state, bars!.create(released.added, 0, { state: state.padEnd(10) })])) : {};
  let lastLine = 0;
  for (;;) {
    const current = await client.task(task.id);
    for (const state of states) bar[state]?.update(current.stats[state]);
    if (!tty && Date.now() - lastLine > 2_000) {
      lastLine = Date.now();
      out(`${current.state}: ${states.map((state) => `${state} ${current.stats[state]}`).join(', ')}`);
    }
    const done = current.state === 'completed' || current.state === 'aborted' || current.state === 'canceled';
    if (done && values.exit) {
      bars?.stop();
      bars = undefined;
      out('');
      out(`rollout ${current.state}: ${JSON.stringify(current.stats)}`);
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  await shutdown(0);
} catch (error) {
  bars?.stop();
  const hint = error instanceof DependencyError ? ` — ${error.hint}` : '';
  process.stderr.write(`demo: ${error instanceof Error ? error.message : String(error)}${hint}\n`);
  await shutdown(1);
}
