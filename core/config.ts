// Configuration: the environment of CONTRACT §2, parsed and validated once at start.
// Pure: it reads the env object it is given, so tests can build any configuration.
import { randomBytes } from 'node:crypto';
import { OtterError } from './errors.ts';

export type Role = 'all' | 'api' | 'worker';

export interface Config {
  role: Role;
  port: number;
  host: string;
  databaseUrl: string;
  redisUrl: string;
  mqttUrl: string;
  mqttUsername?: string;
  mqttPassword?: string;
  connector: string;
  httpConnectorUrl?: string;
  httpConnectorSecret?: string;
  apiKeys: string[];
  /** True when API_KEYS was unset and a key was generated for this process. */
  apiKeyGenerated: boolean;
  publicBaseUrl: string;
  storageDir: string;
  urlSigningSecret: string;
  urlSigningSecretGenerated: boolean;
  downloadUrlTtlSeconds: number;
  queuePrefix: string;
  workerConcurrency: number;
  logLevel: string;
  firmwareMaxBytes: number;
  /** Largest JSON body accepted by the API (release lists of 100,000 ids need a few MB). */
  bodyLimitBytes: number;
  /** How often a worker compares the jobs in Redis with the records in Postgres. */
  reconcileIntervalMs: number;
  /** Failed authentication attempts allowed per client address and window before 429 (0: no limit). */
  authFailureLimit: number;
  authFailureWindowSeconds: number;
}

export type Env = Record<string, string | undefined>;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export class ConfigError extends OtterError {
  constructor(message: string) {
    super('config_error', message, 500);
  }
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
  }
  return value;
}

function url(env: Env, name: string, fallback: string, protocols: string[]): string {
  const raw = env[name] || fallback;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(`${name} is not a valid URL: "${redactUrl(raw)}"`);
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(`${name} must use ${protocols.join(' or ')}, got "${redactUrl(raw)}"`);
  }
  return raw;
}

/** A URL fit for a log line: the password is replaced. */
export function redactUrl(raw: string): string {
  try {
    const parsed = new URL(raw);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return raw.replace(/\/\/([^:/@]*):[^@/]*@/, '//$1:***@');
  }
}

export function loadConfig(env: Env = process.env): Config {
  const role = (env.ROLE || 'all') as Role;
  if (!['all', 'api', 'worker'].includes(role)) {
    throw new ConfigError(`ROLE must be all, api or worker, got "${role}"`);
  }
  const logLevel = env.LOG_LEVEL || 'info';
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);
  }
  const apiKeys = (env.API_KEYS ?? '')
    .split(',')
    .map((key) => key.trim())
    .filter((key) => key.length > 0);
  const apiKeyGenerated = apiKeys.length === 0;
  if (apiKeyGenerated) apiKeys.push(randomBytes(24).toString('base64url'));

  const connector = env.CONNECTOR || 'mqtt';
  const httpConnectorUrl = env.HTTP_CONNECTOR_URL || undefined;
  if (connector === 'http') {
    if (!httpConnectorUrl) throw new ConfigError('CONNECTOR=http needs HTTP_CONNECTOR_URL');
    url(env, 'HTTP_CONNECTOR_URL', '', ['http:', 'https:']);
    if (!env.HTTP_CONNECTOR_SECRET) throw new ConfigError('CONNECTOR=http needs HTTP_CONNECTOR_SECRET');
  }

  const queuePrefix = env.QUEUE_PREFIX || 'otter';
  if (/\s/.test(queuePrefix)) throw new ConfigError('QUEUE_PREFIX must not contain white space');

  const urlSigningSecretGenerated = !env.URL_SIGNING_SECRET;
  return {
    role,
    port: integer(env, 'PORT', 3000, 0, 65535),
    host: env.HOST || '0.0.0.0',
    databaseUrl: url(env, 'DATABASE_URL', 'postgres://postgres@127.0.0.1:5432/otter', ['postgres:', 'postgresql:']),
    redisUrl: url(env, 'REDIS_URL', 'redis://127.0.0.1:6379', ['redis:', 'rediss:']),
    mqttUrl: url(env, 'MQTT_URL', 'mqtt://127.0.0.1:1883', ['mqtt:', 'mqtts:', 'tcp:', 'ssl:', 'ws:', 'wss:']),
    mqttUsername: env.MQTT_USERNAME || undefined,
    mqttPassword: env.MQTT_PASSWORD || undefined,
    connector,
    httpConnectorUrl,
    httpConnectorSecret: env.HTTP_CONNECTOR_SECRET || undefined,
    apiKeys,
    apiKeyGenerated,
    publicBaseUrl: url(env, 'PUBLIC_BASE_URL', 'http://localhost:3000', ['http:', 'https:']).replace(/\/+$/, ''),
    storageDir: env.STORAGE_DIR || './data/firmware',
    urlSigningSecret: env.URL_SIGNING_SECRET || randomBytes(32).toString('hex'),
    urlSigningSecretGenerated,
    downloadUrlTtlSeconds: integer(env, 'DOWNLOAD_URL_TTL_SECONDS', 86_400, 1, 365 * 86_400),
    queuePrefix,
    workerConcurrency: integer(env, 'WORKER_CONCURRENCY', 50, 1, 10_000),
    logLevel,
    firmwareMaxBytes: integer(env, 'FIRMWARE_MAX_BYTES', 2 * 1024 ** 3, 1, Number.MAX_SAFE_INTEGER),
    bodyLimitBytes: integer(env, 'BODY_LIMIT_BYTES', 8 * 1024 * 1024, 1024, 1024 ** 3),
    reconcileIntervalMs: integer(env, 'RECONCILE_INTERVAL_SECONDS', 30, 1, 86_400) * 1000,
    authFailureLimit: integer(env, 'AUTH_FAILURE_LIMIT', 20, 0, 1_000_000_000),
    authFailureWindowSeconds: integer(env, 'AUTH_FAILURE_WINDOW_SECONDS', 60, 1, 86_400),
  };
}
