// SQL of the firmware catalogue: create, find, list, change, delete, and record an uploaded file.
// A taken (product, versionOrder) pair surfaces as the documented 409 firmware_version_exists. What
// devices are told about a firmware is frozen while a task of it has active records. Every change
// raises `revision`; a change or delete given the revisions it expects writes only if the row still
// has one of them, checked under the row's lock or in the writing statement itself.
import { sql, type Transaction } from 'kysely';
import { conflict } from '../../core/errors.ts';
import type { Db } from '../connection.ts';
import type { Database, FirmwareRow, FirmwareUpdate, NewFirmwareRow, SignMethod } from '../database.ts';
import { pageOf } from './paging.ts';

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

/** The revisions a change is based on (from If-Match): it applies only to a row at one of them. */
export type ExpectedRevisions = readonly number[] | undefined;

export type DeleteOutcome = { kind: 'deleted' } | { kind: 'not_found' } | { kind: 'in_use' } | { kind: 'stale'; revision: number };

/**
 * Columns frozen while the firmware is in use: what devices are handed (version, file, digest,
 * size, parameters) and which devices it is for (product). Name, description and versionOrder are
 * catalogue bookkeeping and stay free.
 */
export const FROZEN_COLUMNS = ['product_id', 'version', 'url', 'sign', 'sign_method', 'size', 'properties'] as const;
export type FrozenColumn = (typeof FROZEN_COLUMNS)[number];

export type UpdateOutcome =
  | { kind: 'updated'; row: FirmwareRow }
  | { kind: 'not_found' }
  /** the change would alter `columns` of a firmware in use: nothing was written */
  | { kind: 'in_use'; columns: FrozenColumn[] }
  /** the row is not at an expected revision: nothing was written */
  | { kind: 'stale'; revision: number };

function matches(revision: number, expected: ExpectedRevisions): boolean {
  return expected === undefined || expected.includes(revision);
}

export type FileOutcome = { kind: 'stored'; row: FirmwareRow } | { kind: 'not_found' } | { kind: 'in_use' };

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
  return pageOf(query, (q) => q.selectAll().orderBy('created_at', 'desc').orderBy('id', 'desc').limit(filter.limit).offset(filter.offset).execute());
}

/** Whether `next` (as written by an update) differs from the row's current value of `column`. */
function differs(current: FirmwareRow, column: FrozenColumn, next: unknown): boolean {
  if (next === undefined) return false;
  if (column !== 'properties') return current[column] !== next;
  const wanted = (typeof next === 'string' ? JSON.parse(next) : next) as Record<string, string>;
  const had = current.properties ?? {};
  const keys = Object.keys(wanted);
  return keys.length !== Object.keys(had).length || keys.some((key) => had[key] !== wanted[key]);
}

/**
 * Changes a firmware. A change that would alter a frozen column of a firmware in use is refused
 * whole; one that sets a frozen column to its current value is not a change and goes through.
 */
export async function updateFirmware(db: Db, id: string, changes: FirmwareUpdate, expected?: ExpectedRevisions): Promise<UpdateOutcome> {
  const write = (executor: Db | Transaction<Database>) => {
    let query = executor.updateTable('firmware')
      .set((eb) => ({ ...changes, revision: eb('revision', '+', 1), updated_at: sql<Date>`now()` }))
      .where('id', '=', id);
    // in the statement itself: of two writers expecting one revision, the second finds it gone
    if (expected !== undefined) query = query.where('revision', 'in', expected.length > 0 ? [...expected] : [-1]);
    return translatingConflicts(query.returningAll().executeTakeFirst());
  };
  if (!FROZEN_COLUMNS.some((column) => changes[column] !== undefined)) {
    const row = await write(db);
    if (row) return { kind: 'updated', row };
    const current = await findFirmware(db, id);
    return current ? { kind: 'stale', revision: current.revision } : { kind: 'not_found' };
  }
  return db.transaction().execute(async (trx): Promise<UpdateOutcome> => {
    const current = await lockFirmware(trx, id);
    if (!current) return { kind: 'not_found' };
    if (!matches(current.revision, expected)) return { kind: 'stale', revision: current.revision };
    const columns = FROZEN_COLUMNS.filter((column) => differs(current, column, changes[column]));
    if (columns.length > 0 && (await firmwareHasActiveTasks(trx, id, { lock: true }))) return { kind: 'in_use', columns };
    const row = await write(trx);
    return row ? { kind: 'updated', row } : { kind: 'not_found' };
  });
}

/** The firmware row, locked until the transaction ends: creating a task of it waits meanwhile. */
function lockFirmware(trx: Transaction<Database>, id: string): Promise<FirmwareRow | undefined> {
  return trx.selectFrom('firmware').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
}

/**
 * True while a task of the firmware has records waiting or being processed. With `lock` (inside a
 * transaction), its tasks' rows are share-locked first: a release or retry writing their counters
 * is waited for and then seen, and none can start until the caller's transaction ends.
 */
export async function firmwareHasActiveTasks(db: Db | Transaction<Database>, id: string, options: { lock?: boolean } = {}): Promise<boolean> {
  if (options.lock) {
    const tasks = await db.selectFrom('upgrade_tasks').select(['waiting', 'processing']).where('firmware_id', '=', id).forShare().execute();
    return tasks.some((task) => task.waiting + task.processing > 0);
  }
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
export async function deleteUnusedFirmware(db: Db, id: string, expected?: ExpectedRevisions): Promise<DeleteOutcome> {
  return db.transaction().execute(async (trx): Promise<DeleteOutcome> => {
    const current = await lockFirmware(trx, id);
    if (!current) return { kind: 'not_found' };
    if (!matches(current.revision, expected)) return { kind: 'stale', revision: current.revision };
    if (await firmwareHasActiveTasks(trx, id, { lock: true })) return { kind: 'in_use' };
    await trx.deleteFrom('firmware').where('id', '=', id).execute();
    return { kind: 'deleted' };
  });
}

/**
 * Records an uploaded file, unless the firmware is in use. `putInPlace` runs while the row is
 * locked, so concurrent uploads of one firmware leave the file on disk and its size and sign in
 * the row from the same upload, and a task's first release cannot slip in between check and write.
 */
export async function setFirmwareFile(
  db: Db,
  id: string,
  file: FirmwareFile,
  putInPlace: () => Promise<void>,
): Promise<FileOutcome> {
  return db.transaction().execute(async (trx): Promise<FileOutcome> => {
    if (!(await lockFirmware(trx, id))) return { kind: 'not_found' };
    if (await firmwareHasActiveTasks(trx, id, { lock: true })) return { kind: 'in_use' };
    await putInPlace();
    const row = await trx.updateTable('firmware')
      .set({
        url: file.url,
        size: file.size,
        sign: file.sign,
        sign_method: file.signMethod,
        has_file: true,
        revision: sql<number>`revision + 1`,
        updated_at: sql<Date>`now()`,
      })
      .where('id', '=', id)
      .returningAll()
      .executeTakeFirstOrThrow();
    return { kind: 'stored', row };
  });
}
