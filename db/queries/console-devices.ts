// Device search for the console (docs/operations.md#the-console): by product and by part of the id or
// name, a page at a time. One more row than asked tells whether a next page exists, so no count runs.
import type { Db } from '../connection.ts';
import type { DeviceRow } from '../database.ts';

export interface DeviceSearch {
  productId?: string;
  /** Part of the id or name, case-insensitive. */
  q?: string;
}

function likePattern(text: string): string {
  return `%${text.replace(/[\\%_]/g, (char) => `\\${char}`)}%`;
}

export async function searchDevices(db: Db, search: DeviceSearch, window: { limit: number; offset: number }): Promise<{ rows: DeviceRow[]; more: boolean }> {
  let query = db.selectFrom('devices').selectAll();
  if (search.productId) query = query.where('product_id', '=', search.productId);
  if (search.q) {
    const pattern = likePattern(search.q);
    query = query.where((eb) => eb.or([eb('id', 'ilike', pattern), eb('name', 'ilike', pattern)]));
  }
  const rows = await query.orderBy('id').limit(window.limit + 1).offset(window.offset).execute();
  return { rows: rows.slice(0, window.limit), more: rows.length > window.limit };
}
