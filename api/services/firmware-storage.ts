// Firmware files on disk under STORAGE_DIR. A file's name is derived from the firmware's UUID
// alone (validated before use), so no id can name a path outside the directory.
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { SignMethod } from '../../db/database.ts';
import { OtterError, validationError } from '../../core/errors.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface StoredFile {
  size: number;
  sign: string;
  signMethod: SignMethod;
}

export class FileTooLargeError extends OtterError {
  constructor(limit: number) {
    super('payload_too_large', `firmware file is larger than FIRMWARE_MAX_BYTES (${limit} bytes)`, 413);
  }
}

export class FirmwareStorage {
  readonly root: string;
  readonly maxBytes: number;

  constructor(root: string, maxBytes: number) {
    this.root = path.resolve(root);
    this.maxBytes = maxBytes;
  }

  /** Absolute path of a firmware's file; refuses anything but a UUID. */
  filePath(firmwareId: string): string {
    if (!UUID.test(firmwareId)) throw validationError('firmware id must be a UUID');
    return path.join(this.root, `${firmwareId.toLowerCase()}.bin`);
  }

  /** The file name relative to the root, for static serving. */
  fileName(firmwareId: string): string {
    return path.basename(this.filePath(firmwareId));
  }

  /**
   * Streams `source` to the firmware's file, hashing as it goes: memory stays flat whatever the
   * size. Written to a temporary name first, so a failed upload never replaces a good file.
   */
  async save(firmwareId: string, source: Readable, signMethod: SignMethod): Promise<StoredFile> {
    const target = this.filePath(firmwareId);
    await mkdir(this.root, { recursive: true });
    const temporary = `${target}.${process.pid}.${Date.now()}.part`;
    const hash = createHash(signMethod);
    let size = 0;
    const maxBytes = this.maxBytes;
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        size += chunk.length;
        if (size > maxBytes) return callback(new FileTooLargeError(maxBytes));
        hash.update(chunk);
        callback(null, chunk);
      },
    });
    try {
      await pipeline(source, meter, createWriteStream(temporary));
      // a multipart stream cut at its limit ends quietly; it says so on `truncated`
      if ((source as { truncated?: boolean }).truncated) throw new FileTooLargeError(maxBytes);
      await rename(temporary, target);
    } catch (error) {
      await rm(temporary, { force: true });
      throw error;
    }
    return { size, sign: hash.digest('hex'), signMethod };
  }

  async remove(firmwareId: string): Promise<void> {
    await rm(this.filePath(firmwareId), { force: true });
  }

  async exists(firmwareId: string): Promise<boolean> {
    try {
      return (await stat(this.filePath(firmwareId))).isFile();
    } catch {
      return false;
    }
  }
}
