// Otter as the devices' certificate authority: issues device certificates (with a fresh key pair,
// or for a device's own CSR), records their serials, revokes them, and publishes the CRL file the
// broker reads. Without DEVICE_CA_* configured it answers every credential request 409.
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../core/config.ts';
import {
  buildCrl,
  generateDeviceKey,
  issueCertificate,
  loadDeviceCa,
  newSerial,
  parseCsr,
  type DeviceCa,
} from '../core/device-certificates.ts';
import { conflict, notFound, OtterError } from '../core/errors.ts';
import type { Db } from '../db/connection.ts';
import {
  deviceHasCertificates,
  recordIssuedCertificates,
  registeredDeviceIds,
  revokeDeviceCertificates,
  withCrlSnapshot,
} from '../db/queries/device-certificates.ts';
import type { Logger } from 'pino';

type Log = Pick<Logger, 'info' | 'error'>;

export interface IssuedCredentials {
  deviceId: string;
  certificate: string;
  privateKey: string;
}

/** A certificate starts a little in the past, so a device or broker whose clock lags still takes it. */
const CLOCK_SKEW_MS = 5 * 60_000;
/**
 * The broker refuses every device once the CRL passes its nextUpdate, so the CRL is good for 30 days
 * and rewritten every day (and at each start and revocation): Otter may be down for weeks before
 * devices notice.
 */
const CRL_LIFETIME_MS = 30 * 86_400_000;
const CRL_REFRESH_MS = 86_400_000;
/**
 * Key generation and signing run on libuv's pool; a few in flight keep every thread busy without
 * queueing a thousand jobs ahead of the file reads and writes that share the pool.
 */
const CRYPTO_IN_FLIGHT = 8;

function caNotConfigured(): OtterError {
  return conflict(
    'device_ca_not_configured',
    'Otter is not configured as the device CA: set DEVICE_CA_CERT_FILE, DEVICE_CA_KEY_FILE and DEVICE_CRL_FILE',
  );
}

function unknownDevices(ids: readonly string[], positions: ReadonlyMap<string, number>): OtterError {
  const shown = ids.slice(0, 20);
  return new OtterError(
    'unknown_device',
    `${ids.length} device(s) are not registered: ${shown.join(', ')}${ids.length > shown.length ? ', …' : ''}; nothing was issued`,
    422,
    shown.map((id) => ({ path: positions.has(id) ? `/deviceIds/${positions.get(id)}` : '/deviceId', message: `device ${id} is not registered` })),
  );
}

/** Runs `work` over `items` with at most `limit` in flight; results in the order of `items`. */
async function mapLimited<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const runners = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index]!);
    }
  });
  await Promise.all(runners);
  return results;
}

async function readCaFile(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    throw new OtterError('device_ca_invalid', `device CA: cannot read ${what} ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, 500);
  }
}

export class DeviceCredentials {
  private refreshTimer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly db: Db,
    private readonly logger: Log,
    private readonly ca: DeviceCa | undefined,
    private readonly crlFile: string | undefined,
    private readonly certificateDays: number,
  ) {}

  /**
   * Loads the CA (when configured) and publishes the CRL once, so a broker started next to a fresh
   * Otter finds it, and one whose file was lost gets it back from the database.
   */
  static async open(options: { config: Config; db: Db; logger: Log }): Promise<DeviceCredentials> {
    const { config, db, logger } = options;
    if (!config.deviceCaCertFile || !config.deviceCaKeyFile || !config.deviceCrlFile) {
      return new DeviceCredentials(db, logger, undefined, undefined, config.deviceCertDays);
    }
    const ca = loadDeviceCa(
      await readCaFile(config.deviceCaCertFile, 'DEVICE_CA_CERT_FILE'),
      await readCaFile(config.deviceCaKeyFile, 'DEVICE_CA_KEY_FILE'),
    );
    const credentials = new DeviceCredentials(db, logger, ca, config.deviceCrlFile, config.deviceCertDays);
    try {
      await credentials.publishCrl();
    } catch (error) {
      throw new OtterError('device_crl_unwritable', `cannot write DEVICE_CRL_FILE ${config.deviceCrlFile} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, 500);
    }
    credentials.refreshTimer = setInterval(() => {
      credentials.publishCrl().catch((error: unknown) => logger.error({ err: error }, 'device CRL refresh failed'));
    }, CRL_REFRESH_MS);
    credentials.refreshTimer.unref();
    logger.info({ ca: ca.certificate.subject, crlFile: config.deviceCrlFile }, 'device CA loaded');
    return credentials;
  }

  get configured(): boolean {
    return this.ca !== undefined;
  }

  private requireCa(): DeviceCa {
    if (!this.ca) throw caNotConfigured();
    return this.ca;
  }

  private validity(): { notBefore: Date; notAfter: Date } {
    const now = Date.now();
    return { notBefore: new Date(now - CLOCK_SKEW_MS), notAfter: new Date(now + this.certificateDays * 86_400_000) };
  }

  private async requireRegistered(ids: readonly string[], positions: ReadonlyMap<string, number>): Promise<void> {
    const registered = await registeredDeviceIds(this.db, ids);
    const unknown = ids.filter((id) => !registered.has(id));
    if (unknown.length > 0) throw unknownDevices(unknown, positions);
  }

  /**
   * A key pair and a certificate for each device (all registered, or nothing is issued: a typo in a
   * batch must not hand out the rest silently). The serials are stored before anything is answered.
   */
  async issue(deviceIds: readonly string[]): Promise<IssuedCredentials[]> {
    const ca = this.requireCa();
    await this.requireRegistered(deviceIds, new Map(deviceIds.map((id, index) => [id, index])));
    const { notBefore, notAfter } = this.validity();
    const issued = await mapLimited(deviceIds, CRYPTO_IN_FLIGHT, async (deviceId) => {
      const key = await generateDeviceKey();
      const serial = newSerial();
      const certificate = await issueCertificate(ca, {
        commonName: deviceId, publicKeyDer: key.publicKeyDer, serialHex: serial, notBefore, notAfter, profile: { kind: 'device' },
      });
      return { deviceId, certificate, privateKey: key.privateKeyPem, serial };
    });
    await recordIssuedCertificates(this.db, issued.map((item) => ({ serial: item.serial, deviceId: item.deviceId, origin: 'generated' as const, notAfter })));
    this.logger.info({ devices: issued.length }, 'device credentials issued');
    return issued.map(({ deviceId, certificate, privateKey }) => ({ deviceId, certificate, privateKey }));
  }

  /** A certificate for a device that keeps its own key: the CSR must verify; its CN is replaced by the device id. */
  async signRequest(deviceId: string, csrPem: string): Promise<{ deviceId: string; certificate: string }> {
    const ca = this.requireCa();
    const request = parseCsr(csrPem);
    await this.requireRegistered([deviceId], new Map());
    const { notBefore, notAfter } = this.validity();
    const serial = newSerial();
    const certificate = await issueCertificate(ca, {
      commonName: deviceId, publicKeyDer: request.publicKeyDer, serialHex: serial, notBefore, notAfter, profile: { kind: 'device' },
    });
    await recordIssuedCertificates(this.db, [{ serial, deviceId, origin: 'csr', notAfter }]);
    this.logger.info({ deviceId, requestedCn: request.commonName }, 'device certificate issued for a CSR');
    return { deviceId, certificate };
  }

  /** POST …/credentials/revoke: the device (or a deleted device that had certificates) must be known. */
  async revoke(deviceId: string): Promise<number> {
    this.requireCa();
    const known = (await registeredDeviceIds(this.db, [deviceId])).has(deviceId) || (await deviceHasCertificates(this.db, deviceId));
    if (!known) throw notFound('device', deviceId);
    return this.revokeAll(deviceId);
  }

  /**
   * Revokes every certificate of the device and republishes the CRL; also what deleting a device
   * does. Without a CA there is no CRL to write, but the revocations are still recorded.
   */
  async revokeAll(deviceId: string): Promise<number> {
    const revoked = await revokeDeviceCertificates(this.db, deviceId);
    if (revoked > 0) {
      this.logger.info({ deviceId, revoked }, 'device certificates revoked');
      if (this.ca) await this.publishCrl();
    }
    return revoked;
  }

  /** Writes the CRL from the database: atomically (a rename), readable by the broker's own user. */
  async publishCrl(): Promise<void> {
    const ca = this.requireCa();
    const file = this.crlFile!;
    await mkdir(path.dirname(file), { recursive: true });
    await withCrlSnapshot(this.db, async (snapshot) => {
      const now = Date.now();
      const pem = await buildCrl(ca, {
        revoked: snapshot.revoked,
        thisUpdate: new Date(now - CLOCK_SKEW_MS),
        nextUpdate: new Date(now + CRL_LIFETIME_MS),
        crlNumber: snapshot.crlNumber,
      });
      const temporary = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
      try {
        await writeFile(temporary, pem);
        // whatever the umask: the broker runs as another user
        await chmod(temporary, 0o644);
        await rename(temporary, file);
      } catch (error) {
        await rm(temporary, { force: true });
        throw error;
      }
    });
  }

  close(): void {
    if (this.refreshTimer) clearInterval(this.refreshTimer);
    this.refreshTimer = undefined;
  }
}
