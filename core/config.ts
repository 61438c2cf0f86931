// Configuration: the environment of docs/operations.md#configuration, parsed and validated once at start.
// Pure: it reads the env object it is given, so tests can build any configuration.
import { createHmac, randomBytes } from 'node:crypto';
import { OtterError } from './errors.ts';
import { parseApiKeys, type ApiKeyEntry } from './api-keys.ts';

export type Role = 'all' | 'api' | 'worker';

export interface RedisNode {
  host: string;
  port: number;
}

export interface Config {
  role: Role;
  port: number;
  host: string;
  databaseUrl: string;
  redisUrl: string;
  /** REDIS_CLUSTER_NODES: BullMQ and Otter's keys on a Redis Cluster (REDIS_URL then gives only credentials and TLS). */
  redisClusterNodes?: RedisNode[];
  /** QUEUE_SHARDS: how many BullMQ queues the device jobs are spread over (docs/scaling.md#redis-cluster). */
  queueShards: number;
  mqttUrl: string;
  mqttUsername?: string;
  mqttPassword?: string;
  /** TLS to the broker (mqtts://): the CA that signed the broker's certificate, and Otter's own client certificate. */
  mqttCaFile?: string;
  mqttCertFile?: string;
  mqttKeyFile?: string;
  /** Otter as the devices' CA: its certificate and key (PEM), and the CRL file the broker reads. */
  deviceCaCertFile?: string;
  deviceCaKeyFile?: string;
  deviceCrlFile?: string;
  deviceCertDays: number;
  connector: string;
  httpConnectorUrl?: string;
  httpConnectorSecret?: string;
  /** The keys of API_KEYS, without their roles. */
  apiKeys: string[];
  /** Each key with its role (`key:role` in API_KEYS; admin when none is given). */
  apiKeyEntries: ApiKeyEntry[];
  /** True when API_KEYS was unset and a key was generated for this process. */
  apiKeyGenerated: boolean;
  /** Signs console session cookies (CONSOLE_SESSION_SECRET, else derived from API_KEYS). */
  consoleSessionSecret: string;
  /** How long a console session lasts after sign-in. */
  consoleSessionSeconds: number;
  publicBaseUrl: string;
  storageDir: string;
  urlSigningSecret: string;
  urlSigningSecretGenerated: boolean;
  downloadUrlTtlSeconds: number;
  queuePrefix: string;
  workerConcurrency: number;
  /** Connections each process keeps to PostgreSQL (DATABASE_POOL_SIZE). */
  databasePoolSize: number;
  /** Parallel writers of device-message batches per process (DEVICE_MESSAGE_SHARDS). */
  deviceMessageShards: number;
  /** Records a dispatcher claims for a task per round (DISPATCH_BATCH_SIZE). */
  dispatchBatchSize: number;
  logLevel: string;
  firmwareMaxBytes: number;
  /** Largest JSON body accepted by the API (release lists of 100,000 ids need a few MB). */
  bodyLimitBytes: number;
  /** How often a worker compares the jobs in Redis with the records in Postgres. */
  reconcileIntervalMs: number;
  /** Failed authentication attempts allowed per client address and window before 429 (0: no limit). */
  authFailureLimit: number;
  authFailureWindowSeconds: number;
  /** An MQTT report from an unknown device registers it (otherwise devices are registered over REST only). */
  deviceSelfRegistration: boolean;
  /** Messages per second one device may send (0: no limit), and how many at once after a quiet spell. */
  deviceMessageRate: number;
  deviceMessageBurst: number;
  /** Largest device message payload (MQTT) taken in; a larger one is dropped unread and refused too_large. */
  deviceMessageMaxBytes: number;
  /** Received, not yet applied device messages held per process before intake stops (back-pressure). */
  deviceMessageBacklog: number;
  /** The MQTT shared-subscription group ($share/<group>/…); one per deployment. */
  mqttShareGroup: string;
  /** Days the audit log keeps an entry. */
  auditRetentionDays: number;
  /** The wait after a webhook delivery's first failed attempt, doubled after each further one (at most 15 min). */
  webhookRetryBaseMs: number;
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

function boolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (raw === 'true' || raw === '1') return true;
  if (raw === 'false' || raw === '0') return false;
  throw new ConfigError(`${name} must be true or false, got "${raw}"`);
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

/**
 * MQTT_USERNAME (with MQTT_PASSWORD) takes the place of credentials written into MQTT_URL: the MQTT
 * client would otherwise let the URL's win over the variables.
 */
function withoutUrlCredentials(raw: string, explicitCredentials: boolean): string {
  if (!explicitCredentials) return raw;
  const parsed = new URL(raw);
  if (!parsed.username && !parsed.password) return raw;
  parsed.username = '';
  parsed.password = '';
  return parsed.toString();
}

/** MQTT_CA_FILE, MQTT_CERT_FILE, MQTT_KEY_FILE: only over TLS, and a certificate only with its key. */
function brokerTlsFiles(env: Env): Pick<Config, 'mqttCaFile' | 'mqttCertFile' | 'mqttKeyFile'> {
  const files = { mqttCaFile: env.MQTT_CA_FILE || undefined, mqttCertFile: env.MQTT_CERT_FILE || undefined, mqttKeyFile: env.MQTT_KEY_FILE || undefined };
  if (!files.mqttCaFile && !files.mqttCertFile && !files.mqttKeyFile) return files;
  // a CA or client certificate over a plain connection would protect nothing: say so instead
  const protocol = (env.MQTT_URL || '').split(':')[0];
  if (!['mqtts', 'ssl', 'wss'].includes(protocol ?? '')) {
    throw new ConfigError('MQTT_CA_FILE, MQTT_CERT_FILE and MQTT_KEY_FILE need a TLS MQTT_URL (mqtts://, ssl:// or wss://)');
  }
  if (!files.mqttCertFile !== !files.mqttKeyFile) throw new ConfigError('MQTT_CERT_FILE and MQTT_KEY_FILE go together');
  return files;
}

/** DEVICE_CA_CERT_FILE, DEVICE_CA_KEY_FILE and DEVICE_CRL_FILE go together: a CA that cannot revoke is not offered. */
function deviceCaFiles(env: Env): Pick<Config, 'deviceCaCertFile' | 'deviceCaKeyFile' | 'deviceCrlFile'> {
  const files = {
    deviceCaCertFile: env.DEVICE_CA_CERT_FILE || undefined,
    deviceCaKeyFile: env.DEVICE_CA_KEY_FILE || undefined,
    deviceCrlFile: env.DEVICE_CRL_FILE || undefined,
  };
  const given = Object.values(files).filter(Boolean).length;
  if (given !== 0 && given !== 3) {
    throw new ConfigError('DEVICE_CA_CERT_FILE, DEVICE_CA_KEY_FILE and DEVICE_CRL_FILE must be set together');
  }
  return files;
}

/**
 * Without CONSOLE_SESSION_SECRET, console sessions are signed with a secret derived from all the
 * keys: every process given the same API_KEYS accepts the same sessions (docs/operations.md#the-console),
 * and changing the keys ends every session.
 */
/** REDIS_CLUSTER_NODES: `host:port,host:port,…` (IPv6 hosts in brackets), or undefined when unset. */
function redisClusterNodes(env: Env): RedisNode[] | undefined {
  const raw = env.REDIS_CLUSTER_NODES?.trim();
  if (!raw) return undefined;
  return raw.split(',').map((entry) => {
    const match = /^\[?([^\]\s]+?)\]?:(\d{1,5})$/.exec(entry.trim());
    const port = Number(match?.[2]);
    if (!match || port < 1 || port > 65535) {
      throw new ConfigError(`REDIS_CLUSTER_NODES must be host:port pairs separated by commas, got "${entry.trim()}"`);
    }
    return { host: match[1]!, port };
  });
}

function derivedSessionSecret(entries: readonly ApiKeyEntry[]): string {
  const hmac = createHmac('sha256', 'otter-console-session');
  for (const entry of entries) hmac.update(`${entry.key.length}:${entry.key}:${entry.role};`);
  return hmac.digest('hex');
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
  let apiKeyEntries: ApiKeyEntry[];
  try {
    apiKeyEntries = parseApiKeys(env.API_KEYS ?? '');
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
  const apiKeyGenerated = apiKeyEntries.length === 0;
  if (apiKeyGenerated) apiKeyEntries.push({ key: randomBytes(24).toString('base64url'), role: 'admin' });
  const apiKeys = apiKeyEntries.map((entry) => entry.key);

  const connector = env.CONNECTOR || 'mqtt';
  const httpConnectorUrl = env.HTTP_CONNECTOR_URL || undefined;
  if (connector === 'http') {
    if (!httpConnectorUrl) throw new ConfigError('CONNECTOR=http needs HTTP_CONNECTOR_URL');
    url(env, 'HTTP_CONNECTOR_URL', '', ['http:', 'https:']);
    if (!env.HTTP_CONNECTOR_SECRET) throw new ConfigError('CONNECTOR=http needs HTTP_CONNECTOR_SECRET');
  }

  const queuePrefix = env.QUEUE_PREFIX || 'otter';
  if (/\s/.test(queuePrefix)) throw new ConfigError('QUEUE_PREFIX must not contain white space');

  const clusterNodes = redisClusterNodes(env);
  const queueShards = integer(env, 'QUEUE_SHARDS', 1, 1, 64);
  // each shard's queue name carries its hash tag; a tag in the prefix would come first and put
  // every shard in one slot
  if ((clusterNodes || queueShards > 1) && /[{}]/.test(queuePrefix)) {
    throw new ConfigError('QUEUE_PREFIX must not contain { or } with REDIS_CLUSTER_NODES or QUEUE_SHARDS: Otter gives each queue its own hash tag');
  }

  const mqttShareGroup = env.MQTT_SHARE_GROUP || queuePrefix;
  if (/[/+#\s]/.test(mqttShareGroup)) {
    throw new ConfigError(`MQTT_SHARE_GROUP (default: QUEUE_PREFIX) must not contain /, +, # or white space, got "${mqttShareGroup}"`);
  }

  const urlSigningSecretGenerated = !env.URL_SIGNING_SECRET;
  return {
    role,
    port: integer(env, 'PORT', 3000, 0, 65535),
    host: env.HOST || '0.0.0.0',
    databaseUrl: url(env, 'DATABASE_URL', 'postgres://postgres@127.0.0.1:5432/otter', ['postgres:', 'postgresql:']),
    redisUrl: url(env, 'REDIS_URL', 'redis://127.0.0.1:6379', ['redis:', 'rediss:']),
    redisClusterNodes: clusterNodes,
    queueShards,
    mqttUrl: withoutUrlCredentials(url(env, 'MQTT_URL', 'mqtt://127.0.0.1:1883', ['mqtt:', 'mqtts:', 'tcp:', 'ssl:', 'ws:', 'wss:']), Boolean(env.MQTT_USERNAME)),
    mqttUsername: env.MQTT_USERNAME || undefined,
    mqttPassword: env.MQTT_PASSWORD || undefined,
    ...brokerTlsFiles(env),
    ...deviceCaFiles(env),
    deviceCertDays: integer(env, 'DEVICE_CERT_DAYS', 825, 1, 7300),
    auditRetentionDays: integer(env, 'AUDIT_RETENTION_DAYS', 90, 1, 36500),
    webhookRetryBaseMs: integer(env, 'WEBHOOK_RETRY_BASE_MS', 5_000, 10, 900_000),
    connector,
    httpConnectorUrl,
    httpConnectorSecret: env.HTTP_CONNECTOR_SECRET || undefined,
    apiKeys,
    apiKeyEntries,
    apiKeyGenerated,
    consoleSessionSecret: env.CONSOLE_SESSION_SECRET || derivedSessionSecret(apiKeyEntries),
    consoleSessionSeconds: integer(env, 'CONSOLE_SESSION_HOURS', 12, 1, 24 * 30) * 3600,
    publicBaseUrl: url(env, 'PUBLIC_BASE_URL', 'http://localhost:3000', ['http:', 'https:']).replace(/\/+$/, ''),
    storageDir: env.STORAGE_DIR || './data/firmware',
    urlSigningSecret: env.URL_SIGNING_SECRET || randomBytes(32).toString('hex'),
    urlSigningSecretGenerated,
    downloadUrlTtlSeconds: integer(env, 'DOWNLOAD_URL_TTL_SECONDS', 86_400, 1, 365 * 86_400),
    queuePrefix,
    workerConcurrency: integer(env, 'WORKER_CONCURRENCY', 50, 1, 10_000),
    databasePoolSize: integer(env, 'DATABASE_POOL_SIZE', 20, 2, 1_000),
    deviceMessageShards: integer(env, 'DEVICE_MESSAGE_SHARDS', 2, 1, 64),
    dispatchBatchSize: integer(env, 'DISPATCH_BATCH_SIZE', 2_000, 1, 100_000),
    logLevel,
    firmwareMaxBytes: integer(env, 'FIRMWARE_MAX_BYTES', 2 * 1024 ** 3, 1, Number.MAX_SAFE_INTEGER),
    bodyLimitBytes: integer(env, 'BODY_LIMIT_BYTES', 8 * 1024 * 1024, 1024, 1024 ** 3),
    reconcileIntervalMs: integer(env, 'RECONCILE_INTERVAL_SECONDS', 30, 1, 86_400) * 1000,
    authFailureLimit: integer(env, 'AUTH_FAILURE_LIMIT', 20, 0, 1_000_000_000),
    authFailureWindowSeconds: integer(env, 'AUTH_FAILURE_WINDOW_SECONDS', 60, 1, 86_400),
    deviceMessageMaxBytes: integer(env, 'DEVICE_MESSAGE_MAX_BYTES', 65_536, 1_024, 16 * 1024 * 1024),
    deviceMessageBacklog: integer(env, 'DEVICE_MESSAGE_BACKLOG', 20_000, 10, 1_000_000),
    mqttShareGroup,
    deviceSelfRegistration: boolean(env, 'DEVICE_SELF_REGISTRATION', false),
    deviceMessageRate: integer(env, 'DEVICE_MESSAGE_RATE', 20, 0, 1_000_000),
    deviceMessageBurst: integer(env, 'DEVICE_MESSAGE_BURST', 2 * integer(env, 'DEVICE_MESSAGE_RATE', 20, 0, 1_000_000), 1, 2_000_000),
  };
}
