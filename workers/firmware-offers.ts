// The firmware a device is told to install: catalogue fields plus a download URL, signed per send
// for uploaded files. Firmware rows are cached briefly because a rollout sends the same one to
// every device.
import type { Config } from '../core/config.ts';
import { signDownloadUrl } from '../core/download-url.ts';
import type { FirmwareOffer } from '../core/messages.ts';
import type { Db } from '../db/connection.ts';

const CACHE_MS = 5_000;
const RESIGN_MS = 60_000;

interface CachedFirmware {
  loadedAt: number;
  /** The signed download URL, re-signed once a minute: every device of a rollout gets the same one. */
  signed?: { url: string; at: number };
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

  /** The offer for one firmware, or undefined when it no longer exists. */
  async offer(firmwareId: string, now = Date.now()): Promise<FirmwareOffer | undefined> {
    let cached = this.cache.get(firmwareId);
    if (!cached || now - cached.loadedAt > CACHE_MS) {
      cached = {
        loadedAt: now,
        row: this.db
          .selectFrom('firmware')
          .select(['id', 'version', 'url', 'sign', 'sign_method', 'size', 'properties', 'has_file'])
          .where('id', '=', firmwareId)
          .executeTakeFirst(),
      };
      this.cache.set(firmwareId, cached);
      cached.row.catch(() => this.cache.delete(firmwareId));
    }
    const row = await cached.row;
    if (!row) return undefined;
    let url = row.url ?? '';
    if (row.has_file) {
      if (!cached.signed || now - cached.signed.at > RESIGN_MS) {
        cached.signed = { url: signDownloadUrl(this.config.publicBaseUrl, this.config.urlSigningSecret, row.id, this.config.downloadUrlTtlSeconds, now), at: now };
      }
      url = cached.signed.url;
    }
    return {
      firmwareId: row.id,
      version: row.version,
      url,
      sign: row.sign,
      signMethod: row.sign_method,
      size: row.size,
      parameters: row.properties ?? {},
    };
  }
}
