// `npx tsx tools/release-timing.ts --devices N [--runs 3] [--waves 1,10,100]` (docs/scaling.md#release):
// times one release to all devices of a product through TaskService.release, the code path of
// `POST /api/tasks/{id}/release`, without the rest of the benchmark. The fleet is registered once,
// as the benchmark registers it, into a template database kept between invocations
// (otter_release_tpl_N; `--drop-template` removes it); each run releases in a fresh copy of it,
// migrated to the latest migration, and drops the copy afterwards.
import { parseArgs } from 'node:util';
import type { UpgradeQueues } from '../services/upgrade-queues.ts';
import { sql } from 'kysely';
import pg from 'pg';
import { createDb, type Db } from '../db/connection.ts';
import { migrateToLatest } from '../db/migrate.ts';
import { upsertDevices } from '../db/queries/devices.ts';
import { insertFirmware } from '../db/queries/firmware.ts';
import { insertTask } from '../db/queries/tasks.ts';
import { TaskService } from '../services/task-service.ts';
import { fleetDeviceIds } from './fleet.ts';
import { cpuSeconds } from './process-cpu.ts';

const { values } = parseArgs({
  options: {
    devices: { type: 'string', default: '100000' },
    runs: { type: 'string', default: '3' },
    waves: { type: 'string', description: 'cumulative percentages, e.g. 1,10,100' },
    'drop-template': { type: 'boolean', default: false },
  },
  strict: true,
});

const N = Number(values.devices);
const ADMIN_DATABASE_URL = process.env.BENCH_ADMIN_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const PRODUCT = 'bench';
const template = `otter_release_tpl_${N}`;

const urlOf = (name: string) => {
  const url = new URL(ADMIN_DATABASE_URL);
  url.pathname = `/${name}`;
  return url.toString();
};

async function admin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: ADMIN_DATABASE_URL });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** The fleet registered as the benchmark does (PUT /api/devices, 10,000 a request), left unvacuumed as the benchmark leaves it. */
async function seedTemplate(): Promise<void> {
  const exists = await admin(async (client) => (await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [template])).rowCount === 1);
  if (exists) return;
  await admin((client) => client.query(`CREATE DATABASE "${template}"`));
  const { db } = createDb(urlOf(template), 2);
  try {
    await migrateToLatest(db);
    const ids = fleetDeviceIds(PRODUCT, N);
    const started = performance.now();
    for (let i = 0; i < ids.length; i += 10_000) {
      await upsertDevices(db, ids.slice(i, i + 10_000).map((id) => ({ id, productId: PRODUCT, firmwareVersion: '1.0.0' })));
    }
    process.stderr.write(`release-timing: ${N} devices registered in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
  } finally {
    await db.destroy();
  }
}

/** CPU seconds used so far by each PostgreSQL backend serving database `name`. */
async function backendCpu(name: string): Promise<Map<number, number>> {
  const { rows } = await admin((client) => client.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [name]));
  return new Map(rows.map((row) => [row.pid, cpuSeconds(row.pid)]));
}

/**
 * Records whose wave differs from the one a single ranking of all of them gives (docs/strategies.md#waves):
 * 0 when a release in batches places them as one statement would.
 */
async function misplacedRecords(db: Db, taskId: string, percents: number[]): Promise<number> {
  const { rows } = await sql<{ misplaced: number }>`
    WITH ranked AS (
      SELECT wave, row_number() OVER (ORDER BY md5(${taskId}::text || device_id), device_id) AS rank, count(*) OVER () AS n
      FROM upgrade_records WHERE task_id = ${taskId}
    )
    SELECT count(*)::int AS misplaced FROM ranked r
    WHERE r.wave <> (SELECT min(s.k) FROM unnest(${percents}::float8[]) WITH ORDINALITY AS s(percent, k)
                     WHERE r.rank <= ceil(s.percent * r.n / 100.0))`.execute(db);
  return rows[0]!.misplaced;
}

interface Timing {
  seconds: number;
  /** With --waves: records not in the wave a single ranking gives. */
  misplaced?: number;
  /** CPU used meanwhile by the database's backends, and by this process: steadier than wall time on a busy machine. */
  postgresCpu: number;
  nodeCpu: number;
}

async function timeOneRelease(run: number): Promise<Timing> {
  const name = `otter_release_run_${N}_${process.pid}_${run}`;
  await admin((client) => client.query(`CREATE DATABASE "${name}" TEMPLATE "${template}" STRATEGY FILE_COPY`));
  const { db } = createDb(urlOf(name), 20);
  try {
    await migrateToLatest(db);
    const firmware = await insertFirmware(db, {
      product_id: PRODUCT, name: 'release timing', version: '2.0.0', version_order: 2, url: 'http://127.0.0.1/fw.bin',
      sign: null, sign_method: null, size: null, properties: JSON.stringify({}), description: null,
    });
    const percents = values.waves?.split(',').map(Number);
    const waves = percents?.map((percent) => ({ percent }));
    const task = await insertTask(db, {
      firmwareId: firmware.id, productId: PRODUCT, firmwareVersion: '2.0.0', name: 'release timing', description: null,
      mode: 'push', timeoutSeconds: 600, responseTimeoutSeconds: null,
      retry: { maxAttempts: 3, backoffSeconds: 5, on: ['timeout', 'send_error'] },
      rollout: waves ? { waves, gate: { minSuccessRate: 0.9 } } : {},
      abort: null, startAt: null, windows: null, continuous: false, endAt: null,
    });
    // the queue is only used to remove jobs on cancel; the signal has no listener here
    const service = new TaskService(db, {} as UpgradeQueues, { poke: () => {} });
    await admin((client) => client.query('CHECKPOINT'));
    const cpuBefore = await backendCpu(name);
    const nodeBefore = process.cpuUsage();
    const started = performance.now();
    const result = await service.release(task.id, { allDevices: true }, true);
    const seconds = (performance.now() - started) / 1000;
    const node = process.cpuUsage(nodeBefore);
    let postgresCpu = 0;
    for (const [pid, used] of await backendCpu(name)) postgresCpu += used - (cpuBefore.get(pid) ?? 0);
    if (result.added !== N) throw new Error(`release added ${result.added}, expected ${N}`);
    const misplaced = percents ? await misplacedRecords(db, task.id, percents) : undefined;
    return { seconds, postgresCpu, nodeCpu: (node.user + node.system) / 1e6, misplaced };
  } finally {
    await db.destroy();
    await admin((client) => client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
  }
}

if (values['drop-template']) {
  await admin((client) => client.query(`DROP DATABASE IF EXISTS "${template}" WITH (FORCE)`));
} else {
  await seedTemplate();
  const timings: Timing[] = [];
  for (let run = 1; run <= Number(values.runs); run += 1) {
    timings.push(await timeOneRelease(run));
    process.stderr.write(`release-timing: run ${run}: ${JSON.stringify(timings.at(-1))}\n`);
  }
  const median = (pick: (timing: Timing) => number) => {
    const sorted = timings.map(pick).sort((a, b) => a - b);
    return Number(sorted[Math.floor(sorted.length / 2)]!.toFixed(2));
  };
  process.stdout.write(`${JSON.stringify({
    devices: N,
    waves: values.waves ?? null,
    seconds: timings.map((timing) => Number(timing.seconds.toFixed(2))),
    medianSeconds: median((timing) => timing.seconds),
    medianPostgresCpu: median((timing) => timing.postgresCpu),
    medianNodeCpu: median((timing) => timing.nodeCpu),
  })}\n`);
}
