// Where the tests find the real services (override with the usual variables).
export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const TEST_REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
export const TEST_MQTT_URL = process.env.MQTT_URL ?? 'mqtt://127.0.0.1:1883';
export const TEST_API_KEY = 'test-key-0123456789';
