// Certificates issued to devices: which of the requested devices are registered, recording issued
// serials, revoking a device's certificates, and the snapshot a CRL is built from.
import { sql } from 'kysely';
import type { Db } from '../connection.ts';
import type { DeviceCertificateOrigin } from '../database.ts';

export interface IssuedCertificateRow {
  serial: string;
  deviceId: string;
  origin: DeviceCertificateOrigin;
  notAfter: Date;
}

/** The ids among `ids` that name registered devices. */
export async function registeredDeviceIds(db: Db, ids: readonly string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const rows = await db.selectFrom('devices').select('id').where('id', '=', sql<string>`ANY(${[...ids]}::text[])`).execute();
  return new Set(rows.map((row) => row.id));
}

/** One statement for a whole batch, whatever its size (unnest arrays, four parameters). */
export async function recordIssuedCertificates(db: Db, rows: readonly IssuedCertificateRow[]): Promise<void> {
  if (rows.length === 0) return;
  await sql`
    INSERT INTO device_certificates (serial, device_id, origin, not_after)
    SELECT * FROM unnest(${rows.map((row) => row.serial)}::text[], ${rows.map((row) => row.deviceId)}::text[],
                         ${rows.map((row) => row.origin)}::text[], ${rows.map((row) => row.notAfter.toISOString())}::timestamptz[])`.execute(db);
}

/** Marks every unrevoked certificate of the device revoked; answers how many were. */
export async function revokeDeviceCertificates(db: Db, deviceId: string): Promise<number> {
  const result = await db
    .updateTable('device_certificates')
    .set({ revoked_at: sql<Date>`now()` })
    .where('device_id', '=', deviceId)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

export async function deviceHasCertificates(db: Db, deviceId: string): Promise<boolean> {
  const row = await db.selectFrom('device_certificates').select('serial').where('device_id', '=', deviceId).limit(1).executeTakeFirst();
  return row !== undefined;
}

export interface CrlSnapshot {
  crlNumber: number;
  /** Revoked certificates that have not expired yet (an expired one is refused without a CRL). */
  revoked: Array<{ serialHex: string; revokedAt: Date }>;
}

/**
 * Runs `publish` with the current revocations while holding the CRL lock, in one transaction. Every
 * publisher takes the lock, so the last file written lists every revocation committed before it,
 * whichever process wrote it; the CRL number comes from a sequence, so it always grows.
 */
export async function withCrlSnapshot(db: Db, publish: (snapshot: CrlSnapshot) => Promise<void>): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(hashtextextended('otter-device-crl', 0))`.execute(trx);
    const number = await sql<{ n: string }>`SELECT nextval('device_crl_number') AS n`.execute(trx);
    const rows = await trx
      .selectFrom('device_certificates')
      .select(['serial', 'revoked_at'])
      .where('revoked_at', 'is not', null)
      .where('not_after', '>', sql<Date>`now()`)
      .orderBy('revoked_at')
      .orderBy('serial')
      .execute();
    await publish({
      crlNumber: Number(number.rows[0]!.n),
      revoked: rows.map((row) => ({ serialHex: row.serial, revokedAt: new Date(row.revoked_at!) })),
    });
  });
}
