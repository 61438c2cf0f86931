// Shared steps of rollout tests: register a fleet, create firmware and a task, wait for the end.
import type { FastifyInstance } from 'fastify';
import { expect } from 'vitest';
import type { RecordCounts } from '../../core/tasks.ts';

export type TaskStats = RecordCounts;

export async function registerDevices(app: FastifyInstance, auth: Record<string, string>, productId: string, ids: string[], version = '1.0.0'): Promise<void> {
  for (let i = 0; i < ids.length; i += 10_000) {
    const response = await app.inject({
      method: 'PUT',
      url: '/api/devices',
      headers: auth,
      payload: { devices: ids.slice(i, i + 10_000).map((id) => ({ id, productId, firmwareVersion: version })) },
    });
    expect(response.statusCode, response.body).toBe(200);
  }
}

export async function createFirmware(app: FastifyInstance, auth: Record<string, string>, productId: string, version = '2.0.0', versionOrder = 2): Promise<string> {
  const response = await app.inject({
    method: 'POST',
    url: '/api/firmware',
    headers: auth,
    payload: {
      productId,
      name: `fw ${version}`,
      version,
      versionOrder,
      url: `https://firmware.example.com/${productId}/${version}.bin`,
      sign: 'ab'.repeat(32),
      signMethod: 'sha256',
      size: 1024,
      properties: { channel: 'test' },
    },
  });
  expect(response.statusCode, response.body).toBe(201);
  return response.json().id as string;
}

export async function createTask(app: FastifyInstance, auth: Record<string, string>, body: Record<string, unknown>): Promise<string> {
  const response = await app.inject({ method: 'POST', url: '/api/tasks', headers: auth, payload: { name: 'test rollout', ...body } });
  expect(response.statusCode, response.body).toBe(201);
  return response.json().id as string;
}

export async function taskStats(app: FastifyInstance, auth: Record<string, string>, taskId: string): Promise<{ state: string; stats: TaskStats }> {
  const response = await app.inject({ method: 'GET', url: `/api/tasks/${taskId}`, headers: auth });
  expect(response.statusCode, response.body).toBe(200);
  return response.json();
}

/** Polls the task until `done` says so, or fails after `timeoutMs`. */
export async function waitForTask(
  app: FastifyInstance,
  auth: Record<string, string>,
  taskId: string,
  done: (task: { state: string; stats: TaskStats }) => boolean,
  timeoutMs = 60_000,
): Promise<{ state: string; stats: TaskStats }> {
  const deadline = Date.now() + timeoutMs;
  let task = await taskStats(app, auth, taskId);
  while (!done(task)) {
    if (Date.now() > deadline) throw new Error(`task ${taskId} did not get there in ${timeoutMs} ms: ${JSON.stringify(task)}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
    task = await taskStats(app, auth, taskId);
  }
  return task;
}

export const allFinal = (task: { stats: TaskStats }) => task.stats.total > 0 && task.stats.waiting === 0 && task.stats.processing === 0;

/** What POST /api/tasks/{id}/release answers. */
export interface ReleaseReply {
  added: number;
  skipped: Record<string, number>;
  skippedDevices: Array<{ deviceId: string; reason: string }>;
}
