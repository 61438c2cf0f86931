// Reads of upgrade records and their event timelines. State changes live with the code that
// makes them (guarded updates); these are the plain look-ups the API and workers share.
import type { Db } from '../connection.ts';
import type { RecordEventRow, RecordRow } from '../database.ts';

/** The states in which a record still holds its device (one at most, by a partial unique index). */
export const ACTIVE_RECORD_STATES = ['waiting', 'processing'] as const;

export async function findRecord(db: Db, id: number): Promise<RecordRow | undefined> {
  return db.selectFrom('upgrade_records').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function findActiveRecordForDevice(db: Db, deviceId: string): Promise<RecordRow | undefined> {
  return db
    .selectFrom('upgrade_records')
    .selectAll()
    .where('device_id', '=', deviceId)
    .where('state', 'in', ACTIVE_RECORD_STATES)
    .executeTakeFirst();
}

/** The device's upgrade history, newest first. */
export async function listDeviceRecords(
  db: Db,
  deviceId: string,
  window: { limit: number; offset: number },
): Promise<{ rows: RecordRow[]; total: number }> {
  const [rows, count] = await Promise.all([
    db
      .selectFrom('upgrade_records')
      .selectAll()
      .where('device_id', '=', deviceId)
      .orderBy('id', 'desc')
      .limit(window.limit)
      .offset(window.offset)
      .execute(),
    db
      .selectFrom('upgrade_records')
      .select((eb) => eb.fn.countAll<number>().as('total'))
      .where('device_id', '=', deviceId)
      .executeTakeFirstOrThrow(),
  ]);
  return { rows, total: Number(count.total) };
}

/** The record's timeline, oldest first: its latest `limit` events, and how many it holds in all. */
export async function listRecordEvents(db: Db, recordId: number, limit: number): Promise<{ rows: RecordEventRow[]; total: number }> {
  const [latest, count] = await Promise.all([
    db.selectFrom('record_events').selectAll().where('record_id', '=', recordId).orderBy('id', 'desc').limit(limit).execute(),
    db.selectFrom('record_events').select((eb) => eb.fn.countAll<number>().as('total')).where('record_id', '=', recordId).executeTakeFirstOrThrow(),
  ]);
  return { rows: latest.reverse(), total: Number(count.total) };
}
