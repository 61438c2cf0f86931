// The firmware a device is told to install: catalogue fields plus a download URL, signed per send
// and per device for uploaded files. Firmware rows are cached briefly because a rollout sends the
// same one to every device; the signature (one HMAC) is made for each device.
import type { Config } from '../core/config.ts';
import { downloadUrlTtlSeconds, signDownloadUrl } from '../core/download-url.ts';
import type { FirmwareOffer } from '../core/messages.ts';
import type { Db } from '../db/connection.ts';
import { retryTransient } from '../db/transient-errors.ts';

const CACHE_MS = 5_000;
/** How long a firmware read waits for PostgreSQL to come back before the send fails. */
const LOAD_RETRY_MS = 15_000;

/** Whom an offer is for: its URL works for this device only, for the attempt's timeout plus an hour. */
export interface OfferRecipient {
  deviceId: string;
  timeoutSeconds: number;
}

interface CachedFirmware {
  loadedAt: number;
  row: Promise<{
    id: string;
    version: string;
    url: string | null;
    sign: string | null;
    sign_method: string | null;
    size: number | null;
    properties: Record<string, string>;
    has_file: boolean;
  } | undefined>;
}

export class FirmwareOffers {
  private readonly cache = new Map<string, CachedFirmware>();
  private readonly db: Db;
  private readonly config: Config;

  constructor(db: Db, config: Config) {
    this.db = db;
    this.config = config;
  }

  /** The offer of one firmware to one device, or undefined when the firmware no longer exists. */
  async offer(firmwareId: string, recipient: OfferRecipient, now = Date.now()): Promise<FirmwareOffer | undefined> {
    let cached = this.cache.get(firmwareId);
    if (!cached || now - cached.loadedAt > CACHE_MS) {
      cached = {
        loadedAt: now,
        // a send waits out a database restart rather than failing (and being sent again later)
        row: retryTransient(
          () =>
            this.db
              .selectFrom('firmware')
              .select(['id', 'version', 'url', 'sign', 'sign_method', 'size', 'properties', 'has_file'])
              .where('id', '=', firmwareId)
              .executeTakeFirst(),
          { maxRetryTime: LOAD_RETRY_MS },
        ),
      };
      this.cache.set(firmwareId, cached);
      cached.row.catch(() => this.cache.delete(firmwareId));
    }
    const row = await cached.row;
    if (!row) return undefined;
    const ttlSeconds = downloadUrlTtlSeconds(recipient.timeoutSeconds, this.config.downloadUrlTtlSeconds);
    const url = row.has_file
      ? signDownloadUrl(this.config.publicBaseUrl, this.config.urlSigningSecret, row.id, recipient.deviceId, ttlSeconds, now)
      : (row.url ?? '');
    // what the catalogue does not know is left out: devices are never sent a null
    return {
      firmwareId: row.id,
      version: row.version,
      url,
      ...(row.sign !== null ? { sign: row.sign } : {}),
      ...(row.sign_method !== null ? { signMethod: row.sign_method } : {}),
      ...(row.size !== null ? { size: row.size } : {}),
      parameters: row.properties ?? {},
    };
  }
}
