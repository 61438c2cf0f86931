// SQL of the firmware catalogue: create, find, list, change, delete, and record an uploaded file.
// A taken (product, versionOrder) pair surfaces as the contract's 409 firmware_version_exists.
import { sql, type Transaction } from 'kysely';
import { conflict } from '../../core/errors.ts';
import type { Db } from '../connection.ts';
import type { Database, FirmwareRow, FirmwareUpdate, NewFirmwareRow, SignMethod } from '../database.ts';

const VERSION_ORDER_KEY = 'firmware_product_version_order_key';

export interface FirmwareFilter {
  productId?: string;
  /** Part of the name or the version, case-insensitive. */
  q?: string;
  limit: number;
  offset: number;
}

export interface FirmwareFile {
  url: string;
  size: number;
  sign: string;
  signMethod: SignMethod;
}

export type DeleteOutcome = 'deleted' | 'not_found' | 'in_use';

function versionOrderTaken(error: unknown): boolean {
  const pgError = error as { code?: string; constraint?: string };
  return pgError.code === '23505' && pgError.constraint === VERSION_ORDER_KEY;
}

async function translatingConflicts<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (error) {
    if (versionOrderTaken(error)) {
      throw conflict('firmware_version_exists', 'the product already has a firmware with this versionOrder');
    }
    throw error;
  }
}

/** `text` as a LIKE pattern that matches it literally anywhere in the value. */
function containsPattern(text: string): string {
  return `%${text.replace(/[\\%_]/g, (character) => `\\${character}`)}%`;
}

export async function insertFirmware(db: Db, values: NewFirmwareRow): Promise<FirmwareRow> {
  return translatingConflicts(db.insertInto('firmware').values(values).returningAll().executeTakeFirstOrThrow());
}

export async function findFirmware(db: Db | Transaction<Database>, id: string): Promise<FirmwareRow | undefined> {
  return db.selectFrom('firmware').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function listFirmware(db: Db, filter: FirmwareFilter): Promise<{ rows: FirmwareRow[]; total: number }> {
  let query = db.selectFrom('firmware');
  if (filter.productId !== undefined) query = query.where('product_id', '=', filter.productId);
  if (filter.q) {
    const pattern = containsPattern(filter.q);
    query = query.where((eb) => eb.or([eb('name', 'ilike', pattern), eb('version', 'ilike', pattern)]));
  }
  const [rows, counted] = await Promise.all([
    query.selectAll().orderBy('created_at', 'desc').orderBy('id', 'desc').limit(filter.limit).offset(filter.offset).execute(),
    query.select((eb) => eb.fn.countAll<number>().as('total')).executeTakeFirstOrThrow(),
  ]);
  return { rows, total: Number(counted.total) };
}

export async function updateFirmware(db: Db, id: string, changes: FirmwareUpdate): Promise<FirmwareRow | undefined> {
  return translatingConflicts(
    db.updateTable('firmware')
      .set({ ...changes, updated_at: sql<Date>`now()` })
      .where('id', '=', id)
      .returningAll()
      .executeTakeFirst(),
  );
}

/** True while a task of the firmware has records waiting or being processed. */
export async function firmwareHasActiveTasks(db: Db | Transaction<Database>, id: string): Promise<boolean> {
  const active = await db.selectFrom('upgrade_tasks')
    .select('id')
    .where('firmware_id', '=', id)
    .where((eb) => eb(eb('waiting', '+', eb.ref('processing')), '>', 0))
    .limit(1)
    .executeTakeFirst();
  return active !== undefined;
}

/**
 * Deletes the firmware (its tasks and records cascade) unless a task of it is active. The row is
 * locked first: creating a task takes a key-share lock on it, so none can slip in between.
 */
export async function deleteUnusedFirmware(db: Db, id: string): Promise<DeleteOutcome> {
  return db.transaction().execute(async (trx) => {
    const locked = await trx.selectFrom('firmware').select('id').where('id', '=', id).forUpdate().executeTakeFirst();
    if (!locked) return 'not_found';
    if (await firmwareHasActiveTasks(trx, id)) return 'in_use';
    await trx.deleteFrom('firmware').where('id', '=', id).execute();
    return 'deleted';
  });
}

/**
 * Records an uploaded file. `putInPlace` runs while the row is locked, so concurrent uploads of one
 * firmware leave the file on disk and its size and sign in the row from the same upload.
 */
export async function setFirmwareFile(
  db: Db,
  id: string,
  file: FirmwareFile,
  putInPlace: () => Promise<void>,
): Promise<FirmwareRow | undefined> {
  return db.transaction().execute(async (trx) => {
    const locked = await trx.selectFrom('firmware').select('id').where('id', '=', id).forUpdate().executeTakeFirst();
    if (!locked) return undefined;
    await putInPlace();
    return trx.updateTable('firmware')
      .set({
        url: file.url,
        size: file.size,
        sign: file.sign,
        sign_method: file.signMethod,
        has_file: true,
        updated_at: sql<Date>`now()`,
      })
      .where('id', '=', id)
      .returningAll()
      .executeTakeFirstOrThrow();
  });
}
