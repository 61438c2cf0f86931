// The `downloaded` timeline event: a device's first download of an attempt's firmware file, noted
// on its active record of that firmware. Its own statement rather than applyRecordChanges' notes:
// it changes no state (no revision, no counters), and it must be written only if the attempt has
// none yet — the notes insert unconditionally, so a duplicate would fail their whole batch, while
// here the unique partial index of migration 0005 settles concurrent first downloads.
import { sql } from 'kysely';
import type { Db } from '../connection.ts';

export interface Download {
  firmwareId: string;
  deviceId: string;
}

/** Notes each download on its device's waiting or processing record of that firmware; returns how many events were added. */
export async function noteFirstDownloads(db: Db, downloads: readonly Download[]): Promise<number> {
  if (downloads.length === 0) return 0;
  // the attempt is read in the same statement that writes the event: no read-then-write gap
  const result = await sql`
    INSERT INTO record_events (record_id, type, attempt)
    SELECT r.id, 'downloaded', r.attempts
    FROM unnest(${downloads.map((d) => d.firmwareId)}::uuid[], ${downloads.map((d) => d.deviceId)}::text[]) AS d(firmware_id, device_id)
    JOIN upgrade_records r
      ON r.device_id = d.device_id AND r.firmware_id = d.firmware_id AND r.state IN ('waiting', 'processing')
    -- the usual case, a later request of a download, stops here (no row tried, no id used up);
    -- racing first requests are settled by the index
    WHERE NOT EXISTS (SELECT 1 FROM record_events e WHERE e.record_id = r.id AND e.type = 'downloaded' AND e.attempt = r.attempts)
    ON CONFLICT (record_id, attempt) WHERE type = 'downloaded' DO NOTHING`.execute(db);
  return Number(result.numAffectedRows ?? 0);
}
