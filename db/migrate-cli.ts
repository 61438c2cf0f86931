// `npm run migrate`: creates the database if needed and applies the migrations.
import { loadConfig, redactUrl } from '../core/config.ts';
import { DependencyError } from '../core/errors.ts';
import { checkPostgres } from '../service/dependencies.ts';
import { createLogger } from '../service/logger.ts';
import { createDb, ensureDatabase } from './connection.ts';
import { migrateToLatest } from './migrate.ts';

const config = loadConfig(process.env);
const logger = createLogger(config.logLevel);
try {
  await checkPostgres(config.databaseUrl);
  await ensureDatabase(config.databaseUrl);
  const { db } = createDb(config.databaseUrl, 2);
  const results = await migrateToLatest(db);
  await db.destroy();
  logger.info({ database: redactUrl(config.databaseUrl), applied: results.map((r) => r.migrationName) }, 'migrations up to date');
} catch (error) {
  if (error instanceof DependencyError) {
    process.stderr.write(`otter: cannot migrate: ${error.dependency} is not reachable at ${error.url} — ${error.hint}\n`);
  } else {
    process.stderr.write(`otter: cannot migrate: ${(error as Error).message}\n`);
  }
  process.exit(1);
}
