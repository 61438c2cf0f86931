// Applies the migrations. kysely's Migrator takes a Postgres advisory lock for the run, so
// processes starting together migrate once and the others wait, then find nothing to do.
import { Migrator, type MigrationResult } from 'kysely';
import type { Db } from './connection.ts';
import { migrations } from './migrations/index.ts';
import { OtterError } from '../core/errors.ts';

export async function migrateToLatest(db: Db): Promise<MigrationResult[]> {
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((result) => result.status === 'Error');
    throw new OtterError('migration_failed', `migration ${failed?.migrationName ?? '?'} failed: ${String(error)}`, 500);
  }
  return results ?? [];
}
