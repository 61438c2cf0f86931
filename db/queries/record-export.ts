// The records of a task in keyset pages ordered by id, for streaming exports: each page is one
// short query, so memory stays constant and no connection is held between pages.
import type { Db } from '../connection.ts';
import type { RecordRow, RecordState } from '../database.ts';

export const EXPORT_PAGE_SIZE = 5_000;

export interface RecordExportFilter {
  state?: RecordState;
}

/**
 * Yields the task's records page by page. Keyset (id > last) rather than OFFSET: every page costs
 * the same, and a record changing state mid-export is still exported exactly once.
 */
export async function* taskRecordPages(
  db: Db,
  taskId: string,
  filter: RecordExportFilter = {},
  pageSize = EXPORT_PAGE_SIZE,
): AsyncGenerator<RecordRow[]> {
  let after = 0;
  for (;;) {
    let query = db.selectFrom('upgrade_records').selectAll().where('task_id', '=', taskId).where('id', '>', after);
    if (filter.state) query = query.where('state', '=', filter.state);
    const rows = await query.orderBy('id').limit(pageSize).execute();
    if (rows.length > 0) yield rows;
    if (rows.length < pageSize) return;
    after = rows[rows.length - 1]!.id;
  }
}
