// The console's task board (docs/operations.md#the-console): one page of records per state column,
// in one round trip. Each branch walks upgrade_records_task_state_idx, so a page costs the same
// whether the task has ten devices or a million; the columns' counts come from the task's counters.
import { sql } from 'kysely';
import type { Db } from '../connection.ts';
import type { RecordRow, RecordState } from '../database.ts';

export const BOARD_STATES: readonly RecordState[] = ['waiting', 'processing', 'success', 'failed', 'canceled'];

export async function boardColumns(
  db: Db,
  taskId: string,
  pages: Readonly<Record<RecordState, number>>,
  pageSize: number,
): Promise<Record<RecordState, RecordRow[]>> {
  const branches = BOARD_STATES.map((state) => sql`(SELECT * FROM upgrade_records
      WHERE task_id = ${taskId} AND state = ${state}
      ORDER BY id LIMIT ${pageSize} OFFSET ${(Math.max(1, pages[state]) - 1) * pageSize})`);
  const { rows } = await sql<RecordRow>`${sql.join(branches, sql` UNION ALL `)}`.execute(db);
  const columns = Object.fromEntries(BOARD_STATES.map((state) => [state, [] as RecordRow[]])) as Record<RecordState, RecordRow[]>;
  for (const row of rows) columns[row.state].push(row);
  for (const state of BOARD_STATES) columns[state].sort((a, b) => a.id - b.id);
  return columns;
}
