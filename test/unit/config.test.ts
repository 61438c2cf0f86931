// loadConfig against docs/operations.md#configuration: every default, every refusal, and redaction of secrets.
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, redactUrl } from '../../core/config.ts';
import { OtterError } from '../../core/errors.ts';

describe('loadConfig defaults (docs/operations.md#configuration)', () => {
  const config = loadConfig({});

  it('has the contract defaults', () => {
    expect(config.role).toBe('all');
    expect(config.port).toBe(3000);
    expect(config.host).toBe('0.0.0.0');
    expect(config.databaseUrl).toBe('postgres://postgres@127.0.0.1:5432/otter');
    expect(config.redisUrl).toBe('redis://127.0.0.1:6379');
    expect(config.mqttUrl).toBe('mqtt://127.0.0.1:1883');
    expect(config.mqttUsername).toBeUndefined();
    expect(config.mqttPassword).toBeUndefined();
    expect(config.connector).toBe('mqtt');
    expect(config.httpConnectorUrl).toBeUndefined();
    expect(config.httpConnectorSecret).toBeUndefined();
    expect(config.publicBaseUrl).toBe('http://localhost:3000');
    expect(config.storageDir).toBe('./data/firmware');
    expect(config.downloadUrlTtlSeconds).toBe(86_400);
    expect(config.queuePrefix).toBe('otter');
    expect(config.workerConcurrency).toBe(50);
    expect(config.logLevel).toBe('info');
    expect(config.firmwareMaxBytes).toBe(2 * 1024 ** 3);
  });

  it('treats empty variables as unset', () => {
    const empty = loadConfig({ PORT: '', ROLE: '', DATABASE_URL: '', LOG_LEVEL: '', API_KEYS: '' });
    expect(empty.port).toBe(3000);
    expect(empty.role).toBe('all');
    expect(empty.databaseUrl).toBe('postgres://postgres@127.0.0.1:5432/otter');
    expect(empty.logLevel).toBe('info');
    expect(empty.apiKeyGenerated).toBe(true);
  });

  it('generates a random URL signing secret per process, flagged for a warning', () => {
    const other = loadConfig({});
    expect(config.urlSigningSecretGenerated).toBe(true);
    expect(config.urlSigningSecret.length).toBeGreaterThanOrEqual(32);
    expect(other.urlSigningSecret).not.toBe(config.urlSigningSecret);
  });
});

describe('loadConfig reads the environment', () => {
  it('takes every variable it is given', () => {
    const config = loadConfig({
      ROLE: 'worker',
      PORT: '8080',
      HOST: '127.0.0.1',
      DATABASE_URL: 'postgresql://otter:pw@db:5432/fleet',
      REDIS_URL: 'rediss://cache:6380',
      MQTT_URL: 'mqtts://broker:8883',
      MQTT_USERNAME: 'otter',
      MQTT_PASSWORD: 'mqtt-pw',
      CONNECTOR: './my-connector.js',
      API_KEYS: 'a, b ,,c',
      PUBLIC_BASE_URL: 'https://ota.example.com/',
      STORAGE_DIR: '/var/lib/otter',
      URL_SIGNING_SECRET: 'shared-secret',
      DOWNLOAD_URL_TTL_SECONDS: '600',
      QUEUE_PREFIX: '{otter}',
      WORKER_CONCURRENCY: '200',
      LOG_LEVEL: 'debug',
    });
    expect(config).toMatchObject({
      role: 'worker',
      port: 8080,
      host: '127.0.0.1',
      databaseUrl: 'postgresql://otter:pw@db:5432/fleet',
      redisUrl: 'rediss://cache:6380',
      mqttUrl: 'mqtts://broker:8883',
      mqttUsername: 'otter',
      mqttPassword: 'mqtt-pw',
      connector: './my-connector.js',
      apiKeys: ['a', 'b', 'c'],
      apiKeyGenerated: false,
      publicBaseUrl: 'https://ota.example.com',
      storageDir: '/var/lib/otter',
      urlSigningSecret: 'shared-secret',
      urlSigningSecretGenerated: false,
      downloadUrlTtlSeconds: 600,
      queuePrefix: '{otter}',
      workerConcurrency: 200,
      logLevel: 'debug',
    });
  });

  it.each(['all', 'api', 'worker'])('accepts ROLE=%s', (role) => {
    expect(loadConfig({ ROLE: role }).role).toBe(role);
  });

  it('accepts PORT=0 (the OS picks a port) and 65535', () => {
    expect(loadConfig({ PORT: '0' }).port).toBe(0);
    expect(loadConfig({ PORT: '65535' }).port).toBe(65535);
  });

  it('accepts CONNECTOR=http with its URL and secret', () => {
    const config = loadConfig({ CONNECTOR: 'http', HTTP_CONNECTOR_URL: 'https://platform.example.com/otter', HTTP_CONNECTOR_SECRET: 's' });
    expect(config.connector).toBe('http');
    expect(config.httpConnectorUrl).toBe('https://platform.example.com/otter');
    expect(config.httpConnectorSecret).toBe('s');
  });
});

describe('loadConfig refuses bad values with a message naming the variable', () => {
  const cases: [string, Record<string, string>, RegExp][] = [
    ['an unknown ROLE', { ROLE: 'scheduler' }, /ROLE.*scheduler/],
    ['an upper-case ROLE', { ROLE: 'API' }, /ROLE/],
    ['a PORT that is not a number', { PORT: 'http' }, /PORT.*"http"/],
    ['a PORT above 65535', { PORT: '65536' }, /PORT/],
    ['a negative PORT', { PORT: '-1' }, /PORT/],
    ['a fractional PORT', { PORT: '80.5' }, /PORT/],
    ['a DATABASE_URL that is no URL', { DATABASE_URL: 'not a url' }, /DATABASE_URL is not a valid URL/],
    ['a DATABASE_URL of another scheme', { DATABASE_URL: 'mysql://db/otter' }, /DATABASE_URL must use postgres:/],
    ['a REDIS_URL of another scheme', { REDIS_URL: 'http://cache:6379' }, /REDIS_URL/],
    ['an MQTT_URL that is no URL', { MQTT_URL: '127.0.0.1:1883x' }, /MQTT_URL/],
    ['a PUBLIC_BASE_URL that is not http', { PUBLIC_BASE_URL: 'ftp://files' }, /PUBLIC_BASE_URL/],
    ['CONNECTOR=http without a URL', { CONNECTOR: 'http', HTTP_CONNECTOR_SECRET: 's' }, /HTTP_CONNECTOR_URL/],
    ['CONNECTOR=http without a secret', { CONNECTOR: 'http', HTTP_CONNECTOR_URL: 'http://platform/otter' }, /HTTP_CONNECTOR_SECRET/],
    ['CONNECTOR=http with a bad URL', { CONNECTOR: 'http', HTTP_CONNECTOR_URL: 'platform', HTTP_CONNECTOR_SECRET: 's' }, /HTTP_CONNECTOR_URL/],
    ['an unknown LOG_LEVEL', { LOG_LEVEL: 'verbose' }, /LOG_LEVEL/],
    ['a WORKER_CONCURRENCY of 0', { WORKER_CONCURRENCY: '0' }, /WORKER_CONCURRENCY/],
    ['a DOWNLOAD_URL_TTL_SECONDS of 0', { DOWNLOAD_URL_TTL_SECONDS: '0' }, /DOWNLOAD_URL_TTL_SECONDS/],
    ['a QUEUE_PREFIX with white space', { QUEUE_PREFIX: 'ot ter' }, /QUEUE_PREFIX/],
    ['a DATABASE_POOL_SIZE of 1', { DATABASE_POOL_SIZE: '1' }, /DATABASE_POOL_SIZE/],
    ['a DEVICE_MESSAGE_SHARDS of 0', { DEVICE_MESSAGE_SHARDS: '0' }, /DEVICE_MESSAGE_SHARDS/],
    ['a DISPATCH_BATCH_SIZE that is no integer', { DISPATCH_BATCH_SIZE: '10.5' }, /DISPATCH_BATCH_SIZE/],
  ];

  it('tunables: defaults, and what an operator sets', () => {
    expect(loadConfig({})).toMatchObject({ databasePoolSize: 20, deviceMessageShards: 2, dispatchBatchSize: 2_000 });
    expect(loadConfig({ DATABASE_POOL_SIZE: '40', DEVICE_MESSAGE_SHARDS: '4', DISPATCH_BATCH_SIZE: '500' })).toMatchObject({
      databasePoolSize: 40,
      deviceMessageShards: 4,
      dispatchBatchSize: 500,
    });
  });

  it.each(cases)('%s', (_name, env, message) => {
    let caught: unknown;
    try {
      loadConfig(env);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect(caught).toBeInstanceOf(OtterError);
    expect((caught as ConfigError).code).toBe('config_error');
    expect((caught as ConfigError).message).toMatch(message);
  });

  it('never echoes a password from a bad URL', () => {
    expect(() => loadConfig({ DATABASE_URL: 'mysql://otter:hunter2@db/otter' })).toThrow(ConfigError);
    try {
      loadConfig({ DATABASE_URL: 'mysql://otter:hunter2@db/otter' });
    } catch (error) {
      expect((error as Error).message).not.toContain('hunter2');
    }
  });
});

describe('API keys (docs/rest-api.md#authentication: never run open)', () => {
  it('generates one random key when API_KEYS is unset', () => {
    const first = loadConfig({});
    const second = loadConfig({});
    expect(first.apiKeyGenerated).toBe(true);
    expect(first.apiKeys).toHaveLength(1);
    expect(first.apiKeys[0]!.length).toBeGreaterThanOrEqual(24);
    expect(first.apiKeys[0]).not.toBe(second.apiKeys[0]);
  });

  it('generates a key when API_KEYS holds only separators and blanks', () => {
    const config = loadConfig({ API_KEYS: ' , ,' });
    expect(config.apiKeyGenerated).toBe(true);
    expect(config.apiKeys).toHaveLength(1);
    expect(config.apiKeys[0]!.trim()).not.toBe('');
  });

  it('uses the given keys, trimmed, and generates none', () => {
    const config = loadConfig({ API_KEYS: 'k1' });
    expect(config.apiKeys).toEqual(['k1']);
    expect(config.apiKeyGenerated).toBe(false);
  });
});

describe('redactUrl', () => {
  it('hides the password and keeps the rest', () => {
    const redacted = redactUrl('postgres://postgres:secret@127.0.0.1:5432/otter');
    expect(redacted).not.toContain('secret');
    expect(redacted).toBe('postgres://postgres:***@127.0.0.1:5432/otter');
  });

  it('hides a Redis password given without a user', () => {
    const redacted = redactUrl('redis://:s3cr3t@cache:6379/0');
    expect(redacted).not.toContain('s3cr3t');
    expect(redacted).toContain('cache:6379');
  });

  it('leaves a URL without a password alone', () => {
    expect(redactUrl('postgres://postgres@127.0.0.1:5432/otter')).toBe('postgres://postgres@127.0.0.1:5432/otter');
    expect(redactUrl('redis://127.0.0.1:6379')).toContain('127.0.0.1:6379');
  });

  it('hides a password in text that is not a URL', () => {
    const redacted = redactUrl('connect failed: postgres://otter:topsecret@db:5432/otter refused');
    expect(redacted).not.toContain('topsecret');
    expect(redacted).toContain('otter:***@db');
  });
});

describe('device message limits and the MQTT share group', () => {
  it('defaults: 64 KiB payloads, a backlog of 20,000, the share group named after QUEUE_PREFIX', () => {
    expect(loadConfig({})).toMatchObject({ deviceMessageMaxBytes: 65_536, deviceMessageBacklog: 20_000, mqttShareGroup: 'otter' });
    expect(loadConfig({ QUEUE_PREFIX: 'otter-eu' }).mqttShareGroup).toBe('otter-eu');
    expect(loadConfig({ QUEUE_PREFIX: 'otter-eu', MQTT_SHARE_GROUP: 'fleet-a' }).mqttShareGroup).toBe('fleet-a');
    expect(loadConfig({ DEVICE_MESSAGE_MAX_BYTES: '4096', DEVICE_MESSAGE_BACKLOG: '500' })).toMatchObject({ deviceMessageMaxBytes: 4096, deviceMessageBacklog: 500 });
  });

  it.each([
    [{ MQTT_SHARE_GROUP: 'a/b' }, /MQTT_SHARE_GROUP/],
    [{ MQTT_SHARE_GROUP: 'a+' }, /MQTT_SHARE_GROUP/],
    [{ MQTT_SHARE_GROUP: '#' }, /MQTT_SHARE_GROUP/],
    [{ MQTT_SHARE_GROUP: 'a b' }, /MQTT_SHARE_GROUP/],
    // the default comes from QUEUE_PREFIX, which may hold what a share name may not
    [{ QUEUE_PREFIX: 'otter/eu' }, /MQTT_SHARE_GROUP \(default: QUEUE_PREFIX\)/],
    [{ DEVICE_MESSAGE_MAX_BYTES: '100' }, /DEVICE_MESSAGE_MAX_BYTES/],
    [{ DEVICE_MESSAGE_BACKLOG: '0' }, /DEVICE_MESSAGE_BACKLOG/],
  ])('refuses %o', (env, message) => {
    expect(() => loadConfig(env)).toThrow(message);
  });
});

describe('device trust: self-registration and the per-device message rate', () => {
  it('defaults: no self-registration, 20 messages a second per device in bursts of 40', () => {
    expect(loadConfig({})).toMatchObject({ deviceSelfRegistration: false, deviceMessageRate: 20, deviceMessageBurst: 40 });
  });

  it('reads them; the burst defaults to twice the rate, and a rate of 0 turns the limit off', () => {
    expect(loadConfig({ DEVICE_SELF_REGISTRATION: 'true' }).deviceSelfRegistration).toBe(true);
    expect(loadConfig({ DEVICE_SELF_REGISTRATION: 'false' }).deviceSelfRegistration).toBe(false);
    expect(loadConfig({ DEVICE_MESSAGE_RATE: '50' })).toMatchObject({ deviceMessageRate: 50, deviceMessageBurst: 100 });
    expect(loadConfig({ DEVICE_MESSAGE_RATE: '5', DEVICE_MESSAGE_BURST: '8' })).toMatchObject({ deviceMessageRate: 5, deviceMessageBurst: 8 });
    expect(loadConfig({ DEVICE_MESSAGE_RATE: '0' }).deviceMessageRate).toBe(0);
  });

  it.each([
    [{ DEVICE_SELF_REGISTRATION: 'yes' }, /DEVICE_SELF_REGISTRATION/],
    [{ DEVICE_MESSAGE_RATE: '-1' }, /DEVICE_MESSAGE_RATE/],
    [{ DEVICE_MESSAGE_RATE: '20/40' }, /DEVICE_MESSAGE_RATE/],
    [{ DEVICE_MESSAGE_BURST: '0' }, /DEVICE_MESSAGE_BURST/],
  ])('refuses %o', (env, message) => {
    expect(() => loadConfig(env)).toThrow(message);
  });
});

describe('device CA and TLS to the broker', () => {
  it('has no CA and a certificate lifetime of 825 days by default', () => {
    expect(loadConfig({})).toMatchObject({ deviceCaCertFile: undefined, deviceCaKeyFile: undefined, deviceCrlFile: undefined, deviceCertDays: 825, mqttCaFile: undefined });
  });

  it('reads the CA files together, and the TLS files with an mqtts:// URL', () => {
    expect(loadConfig({ DEVICE_CA_CERT_FILE: 'ca.crt', DEVICE_CA_KEY_FILE: 'ca.key', DEVICE_CRL_FILE: 'crl.pem', DEVICE_CERT_DAYS: '365' }))
      .toMatchObject({ deviceCaCertFile: 'ca.crt', deviceCaKeyFile: 'ca.key', deviceCrlFile: 'crl.pem', deviceCertDays: 365 });
    expect(loadConfig({ MQTT_URL: 'mqtts://broker:8883', MQTT_CA_FILE: 'ca.pem', MQTT_CERT_FILE: 'c.pem', MQTT_KEY_FILE: 'k.pem' }))
      .toMatchObject({ mqttCaFile: 'ca.pem', mqttCertFile: 'c.pem', mqttKeyFile: 'k.pem' });
  });

  it('lets MQTT_USERNAME and MQTT_PASSWORD take the place of credentials in MQTT_URL', () => {
    expect(loadConfig({ MQTT_URL: 'mqtt://a:b@broker:1883' }).mqttUrl).toBe('mqtt://a:b@broker:1883');
    expect(loadConfig({ MQTT_URL: 'mqtt://a:b@broker:1883', MQTT_USERNAME: 'otter', MQTT_PASSWORD: 'p' }))
      .toMatchObject({ mqttUrl: 'mqtt://broker:1883', mqttUsername: 'otter', mqttPassword: 'p' });
  });

  it.each([
    [{ DEVICE_CA_CERT_FILE: 'ca.crt', DEVICE_CA_KEY_FILE: 'ca.key' }, /DEVICE_CRL_FILE/],
    [{ DEVICE_CRL_FILE: 'crl.pem' }, /DEVICE_CA_CERT_FILE/],
    [{ DEVICE_CERT_DAYS: '0' }, /DEVICE_CERT_DAYS/],
    [{ MQTT_CA_FILE: 'ca.pem' }, /TLS MQTT_URL/],
    [{ MQTT_URL: 'mqtts://broker:8883', MQTT_CERT_FILE: 'c.pem' }, /MQTT_KEY_FILE/],
  ])('refuses %o', (env, message) => {
    expect(() => loadConfig(env)).toThrow(message);
  });
});

describe('AUDIT_RETENTION_DAYS', () => {
  it('defaults to 90 days, takes 1 to 36,500 and refuses anything else', () => {
    expect(loadConfig({}).auditRetentionDays).toBe(90);
    expect(loadConfig({ AUDIT_RETENTION_DAYS: '7' }).auditRetentionDays).toBe(7);
    for (const bad of ['0', '-1', '1.5', 'forever', '36501']) {
      expect(() => loadConfig({ AUDIT_RETENTION_DAYS: bad }), bad).toThrow(/AUDIT_RETENTION_DAYS/);
    }
  });
});

describe('REDIS_CLUSTER_NODES and QUEUE_SHARDS (docs/scaling.md#redis-cluster)', () => {
  it('defaults to one Redis and one shard', () => {
    const config = loadConfig({});
    expect(config.redisClusterNodes).toBeUndefined();
    expect(config.queueShards).toBe(1);
  });

  it('reads the nodes (IPv6 in brackets) and the shard count', () => {
    const config = loadConfig({ REDIS_CLUSTER_NODES: ' redis-a:7000, 10.0.0.2:7001 ,[::1]:7002', QUEUE_SHARDS: '3' });
    expect(config.redisClusterNodes).toEqual([{ host: 'redis-a', port: 7000 }, { host: '10.0.0.2', port: 7001 }, { host: '::1', port: 7002 }]);
    expect(config.queueShards).toBe(3);
  });

  it.each([
    ['a node without a port', { REDIS_CLUSTER_NODES: 'redis-a' }, /REDIS_CLUSTER_NODES.*"redis-a"/],
    ['a port out of range', { REDIS_CLUSTER_NODES: 'redis-a:70000' }, /REDIS_CLUSTER_NODES/],
    ['an empty entry', { REDIS_CLUSTER_NODES: 'redis-a:7000,,redis-b:7001' }, /REDIS_CLUSTER_NODES/],
    ['no shards', { QUEUE_SHARDS: '0' }, /QUEUE_SHARDS must be an integer from 1 to 64/],
    ['too many shards', { QUEUE_SHARDS: '65' }, /QUEUE_SHARDS/],
    ['a hash tag in the prefix with shards', { QUEUE_SHARDS: '2', QUEUE_PREFIX: '{otter}' }, /QUEUE_PREFIX must not contain \{ or \}/],
    ['a hash tag in the prefix on a cluster', { REDIS_CLUSTER_NODES: 'redis-a:7000', QUEUE_PREFIX: 'ot{ter}' }, /QUEUE_PREFIX/],
  ])('refuses %s', (_name, env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
  });

  it('still takes a braced prefix on one Redis with one shard, as before', () => {
    expect(loadConfig({ QUEUE_PREFIX: '{otter}' }).queuePrefix).toBe('{otter}');
  });
});
