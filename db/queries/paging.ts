// A page of a filtered list and how many rows the filter matches in all, in two queries run at once.
import type { SelectQueryBuilder } from 'kysely';

export interface PageWindow {
  limit: number;
  offset: number;
}

/** `rows` reads the page from `query` (its order and window); the total counts all of `query`. */
export async function pageOf<DB, TB extends keyof DB, Row>(
  query: SelectQueryBuilder<DB, TB, object>,
  rows: (query: SelectQueryBuilder<DB, TB, object>) => Promise<Row[]>,
): Promise<{ rows: Row[]; total: number }> {
  const [page, count] = await Promise.all([
    rows(query),
    query.select((eb) => eb.fn.countAll<number>().as('total')).executeTakeFirstOrThrow() as Promise<{ total: number | string }>,
  ]);
  // count(*) is int8: a string unless the pool parses it
  return { rows: page, total: Number(count.total) };
}
