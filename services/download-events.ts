// Notes devices' first downloads on their records' timelines (the `downloaded` event) without
// holding up the downloads: noted once the answer is known to carry the file, and the notes of many
// requests (a Range download is many) are written together, the database keeping one per attempt.
import type { FastifyBaseLogger } from 'fastify';
import type { Db } from '../db/connection.ts';
import { noteFirstDownloads, type Download } from '../db/queries/download-events.ts';
import { Batcher } from '../core/batcher.ts';

export class DownloadEvents {
  private readonly db: Db;
  private readonly logger: FastifyBaseLogger;
  private readonly batcher: Batcher<Download, void>;

  constructor(db: Db, logger: FastifyBaseLogger) {
    this.db = db;
    this.logger = logger;
    // a short wait: the event should land before the device's first progress report; one batch at
    // a time, so notes are written in the order the downloads came
    this.batcher = new Batcher((downloads) => this.write(downloads), { maxItems: 500, maxWaitMs: 2, concurrency: 1 });
  }

  /**
   * A device fetched the file with a URL signed for it. Returns at once. No memory of earlier
   * requests is kept here: the same URL may serve the device's next attempt, which must be noted.
   */
  note(download: Download): void {
    this.batcher.add(download).catch((error: unknown) => {
      this.logger.warn({ err: error, deviceId: download.deviceId, firmwareId: download.firmwareId }, 'could not note a firmware download');
    });
  }

  /** Resolves once every noted download is written (for shutdown). */
  idle(): Promise<void> {
    return this.batcher.idle();
  }

  private async write(downloads: Download[]): Promise<void[]> {
    // a burst of one device's Range requests becomes one row of the statement
    const unique = new Map(downloads.map((d) => [`${d.firmwareId}\n${d.deviceId}`, d]));
    const added = await noteFirstDownloads(this.db, [...unique.values()]);
    if (added > 0) this.logger.debug({ added }, 'firmware downloads noted');
    return downloads.map(() => undefined);
  }
}
