// The audit log table: batched inserts, the newest-first listing, and the retention sweep.
import type { Db } from '../connection.ts';
import type { AuditLogRow, NewAuditLogRow } from '../database.ts';
import { pageOf } from './paging.ts';

export async function insertAuditEntries(db: Db, entries: readonly NewAuditLogRow[]): Promise<void> {
  if (entries.length === 0) return;
  await db.insertInto('audit_log').values([...entries]).execute();
}

export interface AuditFilter {
  since?: Date;
  targetId?: string;
}

export async function listAuditEntries(
  db: Db,
  filter: AuditFilter,
  window: { limit: number; offset: number },
): Promise<{ rows: AuditLogRow[]; total: number }> {
  let query = db.selectFrom('audit_log');
  if (filter.since) query = query.where('at', '>=', filter.since);
  if (filter.targetId !== undefined) query = query.where('target_id', '=', filter.targetId);
  return pageOf(query, (q) => q.selectAll().orderBy('at', 'desc').orderBy('id', 'desc').limit(window.limit).offset(window.offset).execute());
}

/** Deletes the entries older than `before`; answers how many went. */
export async function deleteAuditEntriesBefore(db: Db, before: Date): Promise<number> {
  const result = await db.deleteFrom('audit_log').where('at', '<', before).executeTakeFirst();
  return Number(result.numDeletedRows);
}
