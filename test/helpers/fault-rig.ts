// A rollout rig for fault tests: a private broker, the API in the test process, worker processes,
// a simulated fleet, and a task released and pushed to it.
import { expect } from 'vitest';
import { buildTestApp, type TestApp } from './app.ts';
import { startBroker, type TestBroker } from './broker.ts';
import { envFor, spawnOtter, type OtterProcess } from './processes.ts';
import { Fleet, fleetDeviceIds, type FleetOptions } from '../../tools/fleet.ts';
import { createFirmware, createTask, registerDevices } from './rollout.ts';

export interface RigOptions {
  devices: number;
  workers: number;
  env?: Record<string, string>;
  fleet?: Partial<FleetOptions>;
  task?: Record<string, unknown>;
  brokerPort?: number;
}

export class FaultRig {
  broker!: TestBroker;
  t!: TestApp;
  workers: OtterProcess[] = [];
  fleet!: Fleet;
  ids: string[] = [];
  taskId = '';
  private options!: RigOptions;

  static async start(options: RigOptions): Promise<FaultRig> {
    const rig = new FaultRig();
    rig.options = options;
    rig.broker = await startBroker({ port: options.brokerPort });
    rig.t = await buildTestApp({ ROLE: 'api', MQTT_URL: rig.broker.url, ...options.env });
    for (let i = 0; i < options.workers; i += 1) await rig.addWorker();
    const product = 'fault';
    rig.ids = fleetDeviceIds(product, options.devices);
    await registerDevices(rig.t.app, rig.t.auth, product, rig.ids);
    rig.fleet = new Fleet({ mqttUrl: rig.broker.url, productId: product, deviceIds: rig.ids, progressSteps: 3, stepMs: 200, reportOnStart: false, ...options.fleet });
    await rig.fleet.start();
    const firmwareId = await createFirmware(rig.t.app, rig.t.auth, product);
    rig.taskId = await createTask(rig.t.app, rig.t.auth, {
      firmwareId,
      timeoutSeconds: 20,
      retry: { maxAttempts: 3, backoffSeconds: 1, on: ['timeout', 'send_error'] },
      ...options.task,
    });
    const release = await rig.t.app.inject({ method: 'POST', url: `/api/tasks/${rig.taskId}/release`, headers: rig.t.auth, payload: { allDevices: true, push: true } });
    expect(release.json().added).toBe(options.devices);
    return rig;
  }

  async addWorker(): Promise<OtterProcess> {
    const worker = await spawnOtter(envFor(this.t.config, { ROLE: 'worker', WORKER_CONCURRENCY: '50', RECONCILE_INTERVAL_SECONDS: '2', ...this.options.env }));
    this.workers.push(worker);
    return worker;
  }

  /** Every record's state and attempts, with how many upgrade messages its device received. */
  async outcome() {
    const records = await this.t.database.db
      .selectFrom('upgrade_records')
      .select(['device_id', 'state', 'attempts'])
      .where('task_id', '=', this.taskId)
      .execute();
    return records.map((r) => ({ deviceId: r.device_id, state: r.state, attempts: r.attempts, received: this.fleet.devices.get(r.device_id)!.upgradesReceived }));
  }

  async stop(): Promise<void> {
    await this.fleet?.stop().catch(() => {});
    await Promise.all(this.workers.map((worker) => worker.stop('SIGKILL')));
    await this.t?.close().catch(() => {});
    await this.broker?.stop().catch(() => {});
  }
}
