// Before any test: the real services must be up. Fails fast with the one clear line otherwise.
import { checkPostgres, checkRedis } from '../../service/dependencies.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './env.ts';

export default async function setup(): Promise<void> {
  await checkPostgres(TEST_DATABASE_URL);
  await checkRedis(TEST_REDIS_URL);
}
