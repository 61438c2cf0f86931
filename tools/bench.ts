// `npm run bench -- --devices N [--json]` (docs/operations.md#the-benchmark): a full push rollout to N simulated devices
// over a real broker, with the service in a separate process so its memory can be read, and — in
// the same run, on the same Redis — raw BullMQ throughput with empty jobs, so the ratio holds on a
// noisy machine. Cleans up after itself: its database, queue keys, storage and broker.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import pg from 'pg';
import { startBroker, type Broker } from './broker.ts';
import { freePort } from './ports.ts';
import { cpuSeconds } from './process-cpu.ts';
import { fleetDeviceIds } from './fleet.ts';
import { OtterClient } from './otter-client.ts';
import { startRedisCluster, type LocalRedisCluster } from './redis-cluster.ts';
import { WebhookReceiver } from './webhook-receiver.ts';

const { values } = parseArgs({
  options: {
    devices: { type: 'string', default: '10000' },
    json: { type: 'boolean', default: false },
    concurrency: { type: 'string', default: '600' },
    'progress-steps': { type: 'string', default: '3' },
    'cpu-prof': { type: 'boolean', default: false },
    single: { type: 'boolean', default: false, description: 'one ROLE=all process instead of ROLE=api + ROLE=worker' },
    workers: { type: 'string', default: '1', description: 'how many ROLE=worker processes beside the ROLE=api one' },
    'worker-nice': { type: 'string', default: '10', description: 'CPU priority (nice) of the worker processes and of their scheduling group' },
    'device-limits': { type: 'string', default: 'on', description: 'on: the device edge limits at their defaults; off: rate limit off, size and backlog caps at their maximum (to measure what they cost)' },
    webhook: { type: 'string', default: 'off', description: 'on: a local receiver gets every record.final and task event through a webhook (to measure what it costs)' },
    export: { type: 'boolean', default: false, description: "after the rollout, export the task's records as NDJSON and CSV, sampling the processes' RSS" },
    waves: { type: 'string', description: 'canary waves as cumulative percentages, e.g. 1,10,100 (docs/strategies.md#waves)' },
    'soak-seconds': { type: 'string', default: '0', description: "each wave's gate soak time, with --waves" },
    'redis-cluster': { type: 'string', description: 'run Otter on a local Redis Cluster of this many masters (REDIS_CLUSTER_NODES), after the same run on one Redis' },
    shards: { type: 'string', default: '1', description: 'QUEUE_SHARDS: the queues device jobs are spread over' },
    'skip-single': { type: 'boolean', default: false, description: 'with --redis-cluster: skip the run on one Redis it is compared with' },
  },
  strict: true,
});

const N = Number(values.devices);
const WAVES = values.waves === undefined ? undefined : values.waves.split(',').map(Number);
if (WAVES && WAVES.some((percent) => !(percent > 0 && percent <= 100))) throw new Error('--waves takes cumulative percentages, e.g. 1,10,100');
const SOAK_SECONDS = Number(values['soak-seconds']);
const CLUSTER_MASTERS = values['redis-cluster'] === undefined ? 0 : Number(values['redis-cluster']);
if (!(Number.isInteger(CLUSTER_MASTERS) && CLUSTER_MASTERS >= 0 && CLUSTER_MASTERS <= 16) || CLUSTER_MASTERS === 1 || CLUSTER_MASTERS === 2) {
  throw new Error('--redis-cluster takes the number of masters, 3 to 16 (redis-cli --cluster create needs 3)');
}
const SHARDS = Number(values.shards);
if (!(Number.isInteger(SHARDS) && SHARDS >= 1 && SHARDS <= 64)) throw new Error('--shards takes 1 to 64');
if (values['device-limits'] !== 'on' && values['device-limits'] !== 'off') throw new Error('--device-limits is on or off');
if (values.webhook !== 'on' && values.webhook !== 'off') throw new Error('--webhook is on or off');
/** The device edge's limits as loose as the configuration allows: what `--device-limits off` runs with. */
const DEVICE_LIMITS_OFF = { DEVICE_MESSAGE_RATE: '0', DEVICE_MESSAGE_MAX_BYTES: String(16 * 1024 * 1024), DEVICE_MESSAGE_BACKLOG: '1000000' };
// The recommended shape on one host (README, Scaling): the API in its own process, the workers in
// others at a lower CPU priority, so requests are answered promptly while the rollout saturates the machine.
const split = !values.single;
const say = (line: string) => {
  if (!values.json) process.stderr.write(`${line}\n`);
};
const ADMIN_DATABASE_URL = process.env.BENCH_ADMIN_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const run = `${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
const dbName = `otter_bench_${run}`;
const prefix = `otter-bench-${run}`;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Resident memory of a process now (VmRSS), in MB. */
function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Math.round(Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024);
}

/**
 * CPU seconds used so far by the service's processes and by the PostgreSQL backends serving its
 * database: what a rollout costs, whatever share of a busy machine it got.
 */
async function serviceCpu(admin: pg.Client): Promise<Record<string, number>> {
  const { rows } = await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [dbName]);
  return {
    api: cpuSeconds(service!.pid!),
    workers: workers.reduce((sum, worker) => sum + cpuSeconds(worker.pid!), 0),
    postgres: rows.reduce((sum, row) => sum + cpuSeconds(row.pid), 0),
    fleet: cpuSeconds(fleet!.pid!),
    bench: process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6,
  };
}

/** Peak resident memory of a process (VmHWM), in MB. */
function peakRssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return Math.round(kb / 1024);
}

/** Memory Redis uses: the one server's, or the sum over the cluster's masters. */
async function redisUsedMemory(clients: readonly Redis[]): Promise<number> {
  const used = await Promise.all(clients.map(async (client) => Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1] ?? 0)));
  return used.reduce((sum, bytes) => sum + bytes, 0);
}

/**
 * The same bench on one Redis with one shard, in a process of its own before the cluster run, so
 * both figures come from back-to-back runs of the same code: its devices/s and ratio.
 */
async function singleRedisRun(): Promise<Record<string, number>> {
  const args = ['--devices', String(N), '--json', '--concurrency', values.concurrency!, '--progress-steps', values['progress-steps']!,
    '--workers', values.workers!, '--worker-nice', values['worker-nice']!, '--device-limits', values['device-limits']!, '--webhook', values.webhook!,
    ...(values.single ? ['--single'] : [])];
  const child = spawn(process.execPath, ['--import', 'tsx', 'tools/bench.ts', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  if (code !== 0) throw new Error(`the single-Redis run exited with ${code}`);
  const single = JSON.parse(output.trim().split('\n').pop()!) as Record<string, number>;
  return {
    singleRedisDevicesPerSecond: single.devicesPerSecond!,
    singleRedisRatioToRawBullmq: single.ratioToRawBullmq!,
    singleRedisRolloutSeconds: single.rolloutSeconds!,
  };
}

async function waitForReady(baseUrl: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the service exited with ${child.exitCode}`);
    try {
      if ((await fetch(`${baseUrl}/health/ready`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error('the service was not ready within 60 s');
}

/** Raw BullMQ on the same Redis: add N empty jobs in chunks of 1,000 and process them with one worker. */
/** Raw BullMQ is measured for at least this long, in rounds of this many empty jobs. */
const RAW_MIN_SECONDS = 10;
const RAW_ROUND_JOBS = 10_000;

/**
 * Raw BullMQ throughput on the same Redis: empty jobs added and processed (concurrency 100) in
 * rounds of 10,000 until at least 10 s have passed, so a short burst of the machine's noise
 * weighs little; jobs per second over the whole time.
 */
async function rawBullmq(): Promise<number> {
  const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  const rawPrefix = `${prefix}-raw`;
  const queue = new Queue('raw', { connection, prefix: rawPrefix });
  let done = 0;
  let roundTarget = 0;
  let finishRound: () => void = () => {};
  const worker = new Worker('raw', async () => {}, {
    connection: new Redis(REDIS_URL, { maxRetriesPerRequest: null }),
    prefix: rawPrefix,
    concurrency: 100,
    removeOnComplete: { count: 0 },
  });
  worker.on('completed', () => {
    done += 1;
    if (done === roundTarget) finishRound();
  });
  const started = performance.now();
  while (performance.now() - started < RAW_MIN_SECONDS * 1000) {
    const finished = new Promise<void>((resolve) => (finishRound = resolve));
    const first = roundTarget;
    roundTarget += RAW_ROUND_JOBS;
    for (let i = 0; i < RAW_ROUND_JOBS; i += 1_000) {
      await queue.addBulk(Array.from({ length: 1_000 }, (_, k) => ({ name: 'empty', data: {}, opts: { jobId: `j${first + i + k}` } })));
    }
    await finished;
  }
  const seconds = (performance.now() - started) / 1000;
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  connection.disconnect();
  return done / seconds;
}

/**
 * The worker's CPU priority. Every process here runs in its own session, as separate services would,
 * so with the kernel's autogroup scheduling each is its own group and nice alone would not weigh
 * against the others: the group's nice is set too.
 */
function lowerPriority(pid: number, nice: number): void {
  os.setPriority(pid, nice);
  try {
    writeFileSync(`/proc/${pid}/autogroup`, String(nice));
  } catch {
    // no autogroup scheduling here: the process nice is what counts
  }
}

/**
 * Exports the task's records in `format` through the API, counting lines, while the RSS of `pids`
 * is sampled every 50 ms: before, the peak during, and after (docs/operations.md#the-benchmark).
 */
async function measureExport(baseUrl: string, apiKey: string, taskId: string, format: 'ndjson' | 'csv', pids: Record<string, number>) {
  const before = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, rssMb(pid)]));
  const peak = { ...before };
  const sampler = setInterval(() => {
    for (const [name, pid] of Object.entries(pids)) peak[name] = Math.max(peak[name]!, rssMb(pid));
  }, 50);
  const started = performance.now();
  const response = await fetch(`${baseUrl}/api/tasks/${taskId}/records/export?format=${format}`, { headers: { authorization: `Bearer ${apiKey}` } });
  if (!response.ok || !response.body) throw new Error(`the ${format} export answered ${response.status}`);
  let bytes = 0;
  let lines = 0;
  for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
    bytes += chunk.length;
    for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines += 1;
  }
  const seconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const after = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, rssMb(pid)]));
  return { seconds: Number(seconds.toFixed(2)), mb: Number((bytes / 1024 / 1024).toFixed(1)), lines, before, peak, after };
}

let receiver: WebhookReceiver | undefined;
let broker: Broker | undefined;
let service: ChildProcess | undefined;
const workers: ChildProcess[] = [];
// the service runs as `npm start` runs it: the node flags are read from that script
const SERVICE_NODE_FLAGS = (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: { start: string } }).scripts.start
  .split(/\s+/)
  .filter((word, i, words) => i > 0 && words[0] === 'node' && word !== 'service/main.ts');
let fleet: ChildProcess | undefined;
let storage: string | undefined;
let cluster: LocalRedisCluster | undefined;

async function stopProcess(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null) return;
  child.kill('SIGTERM');
  await new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.once('exit', () => resolve(clearTimeout(timer)));
  });
}

let cleaning: Promise<void> | undefined;
/** Stops what the bench started and removes what it made, once however often it is asked. */
const cleanup = (): Promise<void> => (cleaning ??= removeEverything());

async function removeEverything(): Promise<void> {
  await stopProcess(fleet);
  await receiver?.stop();
  await stopProcess(service);
  for (const worker of workers) await stopProcess(worker);
  await broker?.stop().catch(() => {});
  await cluster?.stop().catch(() => {});
  const admin = new pg.Client({ connectionString: ADMIN_DATABASE_URL });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`).catch(() => {});
  await admin.end();
  const redis = new Redis(REDIS_URL);
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 5_000);
    cursor = next;
    if (keys.length > 0) await redis.unlink(...keys);
  } while (cursor !== '0');
  redis.disconnect();
  if (storage) await rm(storage, { recursive: true, force: true });
}

async function main(): Promise<Record<string, number | string>> {
  const single = CLUSTER_MASTERS > 0 && !values['skip-single'] ? await singleRedisRun() : {};
  if (CLUSTER_MASTERS > 0) cluster = await startRedisCluster(CLUSTER_MASTERS);
  broker = await startBroker({ ownSession: true });
  storage = await mkdtemp(path.join(os.tmpdir(), 'otter-bench-'));
  const port = await freePort();
  const apiKey = randomBytes(16).toString('hex');
  const dbUrl = new URL(ADMIN_DATABASE_URL);
  dbUrl.pathname = `/${dbName}`;
  const redis = new Redis(REDIS_URL);
  const memoryClients = cluster ? cluster.ports.map((clusterPort) => new Redis({ host: '127.0.0.1', port: clusterPort })) : [redis];
  const redisBaseline = await redisUsedMemory(memoryClients);

  say(`bench: ${N} devices; service on :${port} (${split ? `ROLE=api + ${values.workers} ROLE=worker` : 'ROLE=all'}), broker ${broker.plainUrl}`);
  const serviceEnv = {
    ...process.env,
    HOST: '127.0.0.1',
    DATABASE_URL: dbUrl.toString(),
    REDIS_URL,
    MQTT_URL: broker.url,
    ...broker.serviceEnv,
    API_KEYS: apiKey,
    QUEUE_PREFIX: prefix,
    QUEUE_SHARDS: String(SHARDS),
    ...(cluster ? { REDIS_CLUSTER_NODES: cluster.nodes } : {}),
    STORAGE_DIR: storage,
    URL_SIGNING_SECRET: 'bench',
    PUBLIC_BASE_URL: `http://127.0.0.1:${port}`,
    WORKER_CONCURRENCY: values.concurrency,
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
    ...(values['device-limits'] === 'off' ? DEVICE_LIMITS_OFF : {}),
  };
  const startProcess = (role: string, listenPort: number) =>
    spawn(process.execPath, [...SERVICE_NODE_FLAGS, ...(values['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir=.bench'] : []), 'service/main.ts'], {
      env: { ...serviceEnv, ROLE: role, PORT: String(listenPort) },
      stdio: ['ignore', 'ignore', 'inherit'],
      detached: true,
    });
  service = startProcess(split ? 'api' : 'all', port);
  if (split) {
    for (let i = 0; i < Number(values.workers); i += 1) {
      const workerPort = await freePort();
      const worker = startProcess('worker', workerPort);
      workers.push(worker);
      lowerPriority(worker.pid!, Number(values['worker-nice']));
      await waitForReady(`http://127.0.0.1:${workerPort}`, worker);
    }
  }
  const baseUrl = `http://127.0.0.1:${port}`;
  await waitForReady(baseUrl, service);
  const client = new OtterClient(baseUrl, apiKey);

  const productId = 'bench';
  const deviceIds = fleetDeviceIds('bench', N);
  await client.registerDevices(productId, deviceIds, '1.0.0');
  // the fleet runs in its own process, so this one measures with an idle event loop
  fleet = spawn(process.execPath, ['--import', 'tsx', 'tools/simulate.ts', '--devices', String(N), '--product', productId, '--prefix', 'bench',
    '--progress-steps', values['progress-steps']!, '--step-ms', '0', '--skip-report', '--mqtt-url', broker.url], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  await new Promise<void>((resolve, reject) => {
    fleet!.stdout!.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('simulating')) resolve();
    });
    fleet!.once('exit', (code) => reject(new Error(`the simulated fleet exited with ${code}`)));
  });
  const firmware = await client.createFirmware({ productId, name: 'bench firmware', version: '2.0.0', versionOrder: 2 });
  await client.uploadFirmware(firmware.id, randomBytes(64 * 1024));
  const task = await client.createTask({
    firmwareId: firmware.id,
    name: 'bench rollout',
    timeoutSeconds: 600,
    retry: { maxAttempts: 3, backoffSeconds: 5, on: ['timeout', 'send_error'] },
    // gates that pass: every simulated device succeeds
    ...(WAVES ? { rollout: { waves: WAVES.map((percent) => ({ percent })), gate: { minSuccessRate: 0.9, soakSeconds: SOAK_SECONDS } } } : {}),
  });
  if (values.webhook === 'on') {
    receiver = new WebhookReceiver({ keepEvents: false });
    await receiver.start();
    const secret = randomBytes(16).toString('hex');
    await client.request('POST', '/api/webhooks', { url: receiver.url('/bench', secret), secret, events: ['record.final', 'task.state_changed', 'task.completed'] });
  }
  say(`bench: devices registered, fleet connected, task created${values.webhook === 'on' ? ', webhook registered' : ''}`);
  say('bench: measuring raw BullMQ on the same Redis');
  const rawBefore = await rawBullmq();
  say(`bench: raw BullMQ ${Math.round(rawBefore)} jobs/s; releasing`);

  let redisPeak = redisBaseline;
  const getTaskMs: number[] = [];
  const cpuProbe = new pg.Client({ connectionString: ADMIN_DATABASE_URL });
  await cpuProbe.connect();
  const cpuBefore = await serviceCpu(cpuProbe);
  const databaseBytes = async () => Number((await cpuProbe.query<{ bytes: string }>('SELECT pg_database_size($1) AS bytes', [dbName])).rows[0]!.bytes);
  const databaseBefore = await databaseBytes();
  // WAL written meanwhile, by the whole server (the bench's database is the only busy one)
  const walPosition = async () => (await cpuProbe.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;
  const walBefore = await walPosition();
  const started = performance.now();
  const released = await client.release(task.id, { allDevices: true, push: true });
  const releaseSeconds = (performance.now() - started) / 1000;
  if (released.added !== N) throw new Error(`release added ${released.added}, expected ${N}`);
  say(`bench: released in ${releaseSeconds.toFixed(2)} s`);

  let final = await client.task(task.id);
  let lastSay = 0;
  // when each wave started (seconds from the release), as the task shows it
  const waveStartSeconds: number[] = [];
  while (final.stats.waiting + final.stats.processing > 0) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const t0 = performance.now();
    final = await client.task(task.id);
    getTaskMs.push(performance.now() - t0);
    for (const wave of final.waves ?? []) {
      if (wave.state !== 'pending' && waveStartSeconds[wave.index - 1] === undefined) {
        waveStartSeconds[wave.index - 1] = Number(((performance.now() - started) / 1000).toFixed(2));
      }
    }
    redisPeak = Math.max(redisPeak, await redisUsedMemory(memoryClients));
    if (performance.now() - lastSay > 5_000) {
      lastSay = performance.now();
      say(`bench: ${((performance.now() - started) / 1000).toFixed(1)} s ${JSON.stringify(final.stats)}`);
    }
    if (performance.now() - started > 30 * 60_000) throw new Error('the rollout did not finish within 30 minutes');
  }
  const rolloutSeconds = (performance.now() - started) / 1000;
  // the service's own view of its event loop over the run (prom-client's default metrics)
  const metricsText = await (await fetch(`${baseUrl}/metrics`, { headers: { authorization: `Bearer ${apiKey}` } })).text();
  const gauge = (name: string) => Number(new RegExp(`^${name} ([0-9.e+-]+)$`, 'm').exec(metricsText)?.[1] ?? 0);
  // the service's largest process (the only one, or the largest worker when split)
  const apiRss = peakRssMb(service.pid!);
  // the largest worker's (with --single, the one ROLE=all process runs the workers)
  const workerRss = workers.length > 0 ? Math.max(...workers.map((worker) => peakRssMb(worker.pid!))) : apiRss;
  const peakRss = Math.max(apiRss, workerRss);
  say(`bench: rollout done in ${rolloutSeconds.toFixed(1)} s: ${JSON.stringify(final.stats)}`);

  // every record.final must reach the receiver; how long after the rollout's end the last one came
  let webhook: Record<string, number> = {};
  if (receiver) {
    const rolloutEnded = performance.now();
    const deadline = Date.now() + 10 * 60_000;
    while (receiver.finalsByRecord.size < N || (receiver.eventsByType.get('task.completed') ?? 0) < 1) {
      if (Date.now() > deadline) throw new Error(`the webhook receiver got ${receiver.finalsByRecord.size} of ${N} record.final events`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    webhook = {
      webhookRecordFinal: receiver.eventsByType.get('record.final') ?? 0,
      webhookMissing: N - receiver.finalsByRecord.size,
      webhookDeliveries: receiver.acceptedDeliveries,
      webhookLargestBatch: receiver.largestBatch,
      webhookOutOfOrder: receiver.outOfOrder,
      webhookBadSignatures: receiver.badSignatures,
      webhookDrainSeconds: Number(((performance.now() - rolloutEnded) / 1000).toFixed(2)),
    };
    say(`bench: webhook: ${JSON.stringify(webhook)}`);
  }
  // what the rollout left in PostgreSQL: records, their timelines and indexes (before any vacuum)
  const postgresBytesPerDevice = Math.round(((await databaseBytes()) - databaseBefore) / N);
  const walBytes = Number((await cpuProbe.query<{ bytes: string }>('SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1) AS bytes', [walBefore])).rows[0]!.bytes);
  const walBytesPerDevice = Math.round(walBytes / N);
  // the rollout's cost in CPU, webhook deliveries included (they are done by now)
  const cpuAfter = await serviceCpu(cpuProbe);
  await cpuProbe.end();
  const cpuUsed = (name: string) => Number((cpuAfter[name]! - cpuBefore[name]!).toFixed(1));
  const cpu = {
    cpuMsPerDevice: Number((((cpuUsed('api') + cpuUsed('workers') + cpuUsed('postgres')) * 1000) / N).toFixed(3)),
    apiCpuSeconds: cpuUsed('api'),
    workerCpuSeconds: cpuUsed('workers'),
    postgresCpuSeconds: cpuUsed('postgres'),
    fleetCpuSeconds: cpuUsed('fleet'),
    benchCpuSeconds: cpuUsed('bench'),
  };
  say(`bench: cpu: ${JSON.stringify(cpu)}`);

  let exported: Record<string, number> = {};
  if (values.export) {
    const pids: Record<string, number> = { api: service.pid!, ...(workers[0] ? { worker: workers[0].pid! } : {}) };
    // NDJSON a second time: memory that stays put across exports is a plateau, not a build-up
    for (const [label, format] of [['ndjson', 'ndjson'], ['csv', 'csv'], ['ndjson2', 'ndjson']] as const) {
      const result = await measureExport(baseUrl, apiKey, task.id, format, pids);
      say(`bench: export ${label}: ${JSON.stringify(result)}`);
      if (result.lines !== N + (format === 'csv' ? 1 : 0)) throw new Error(`the ${format} export had ${result.lines} lines`);
      exported = {
        ...exported,
        [`export_${label}_seconds`]: result.seconds,
        [`export_${label}_mb`]: result.mb,
        ...Object.fromEntries(Object.keys(pids).flatMap((name) => [
          [`export_${label}_${name}RssBeforeMb`, result.before[name]!],
          [`export_${label}_${name}RssPeakMb`, result.peak[name]!],
          [`export_${label}_${name}RssAfterMb`, result.after[name]!],
        ])),
      };
    }
  }

  const db = new pg.Client({ connectionString: dbUrl.toString() });
  await db.connect();
  const { rows } = await db.query<{ p50: number; p99: number }>(`
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50, percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
    FROM (SELECT extract(epoch FROM completed_at - started_at) * 1000 AS ms FROM upgrade_records WHERE state = 'success') s`);
  await db.end();

  say('bench: measuring raw BullMQ on the same Redis again');
  const rawAfter = await rawBullmq();
  // the baseline of the ratio: raw BullMQ before and after the rollout, each for at least 10 s
  const rawBullmqJobsPerSecond = (rawBefore + rawAfter) / 2;
  const devicesPerSecond = N / rolloutSeconds;
  getTaskMs.sort((a, b) => a - b);
  for (const client of new Set([redis, ...memoryClients])) client.disconnect();
  return {
    devices: N,
    redisCluster: CLUSTER_MASTERS,
    queueShards: SHARDS,
    deviceLimits: values['device-limits'],
    webhook: values.webhook!,
    ...(WAVES ? { waves: WAVES.join(','), soakSeconds: SOAK_SECONDS, waveStartSeconds: waveStartSeconds.join(',') } : {}),
    success: final.stats.success,
    releaseSeconds: Number(releaseSeconds.toFixed(3)),
    rolloutSeconds: Number(rolloutSeconds.toFixed(3)),
    devicesPerSecond: Math.round(devicesPerSecond),
    p50CompletionMs: Math.round(Number(rows[0]?.p50 ?? 0)),
    p99CompletionMs: Math.round(Number(rows[0]?.p99 ?? 0)),
    rawBullmqBeforeJobsPerSecond: Math.round(rawBefore),
    rawBullmqAfterJobsPerSecond: Math.round(rawAfter),
    rawBullmqJobsPerSecond: Math.round(rawBullmqJobsPerSecond),
    ratioToRawBullmq: Number((devicesPerSecond / rawBullmqJobsPerSecond).toFixed(3)),
    peakRssMb: peakRss,
    apiRssMb: apiRss,
    workerRssMb: workerRss,
    redisBytesPerDevice: Math.round((redisPeak - redisBaseline) / N),
    postgresBytesPerDevice,
    walBytesPerDevice,
    getTaskP99Ms: Number(percentile(getTaskMs, 99).toFixed(1)),
    apiEventLoopLagP99Ms: Number((gauge('nodejs_eventloop_lag_p99_seconds') * 1000).toFixed(1)),
    apiEventLoopLagMaxMs: Number((gauge('nodejs_eventloop_lag_max_seconds') * 1000).toFixed(1)),
    ...cpu,
    ...single,
    ...(single.singleRedisDevicesPerSecond ? { clusterToSingleRedis: Number((devicesPerSecond / single.singleRedisDevicesPerSecond).toFixed(3)) } : {}),
    ...webhook,
    ...exported,
  };
}

// The processes it started are in sessions of their own, out of reach of the terminal's Ctrl-C.
// The listeners stay: the same Ctrl-C reaches this process again through npm and tsx, and a signal
// with no listener left would end it before the cleanup is done.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    process.stderr.write(`bench: ${signal}, cleaning up\n`);
    void cleanup().finally(() => process.exit(128 + os.constants.signals[signal]));
  });
}

let code = 0;
try {
  const result = await main();
  process.stdout.write(`${JSON.stringify(result)}\n`);
  if (result.success !== N) code = 1;
} catch (error) {
  process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`);
  code = 1;
} finally {
  await cleanup();
}
process.exit(code);
