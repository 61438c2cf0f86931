// Firmware files on disk under STORAGE_DIR. A file's name is derived from the firmware's UUID
// alone (validated before use), so no id can name a path outside the directory.
import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { SignMethod } from '../db/database.ts';
import { OtterError, validationError } from '../core/errors.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface StoredFile {
  size: number;
  sign: string;
  signMethod: SignMethod;
}

/** A file received in full under a temporary name, not yet in place. */
export interface ReceivedFile extends StoredFile {
  /** Moves the file into place, replacing any earlier one. */
  commit(): Promise<void>;
  /** Removes the temporary file unless it was committed; safe to call twice. */
  discard(): Promise<void>;
}

export class FileTooLargeError extends OtterError {
  constructor(limit: number) {
    super('payload_too_large', `firmware file is larger than FIRMWARE_MAX_BYTES (${limit} bytes)`, 413);
  }
}

export class UploadAbortedError extends OtterError {
  constructor() {
    super('upload_aborted', 'the upload ended before the file was complete', 400);
  }
}

export class FirmwareStorage {
  readonly root: string;
  readonly maxBytes: number;

  constructor(root: string, maxBytes: number) {
    this.root = path.resolve(root);
    this.maxBytes = maxBytes;
  }

  async ensureRoot(): Promise<void> {
    await mkdir(this.root, { recursive: true });
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
   * Streams `source` to a temporary file beside the firmware's, hashing as it goes: memory stays
   * flat whatever the size. The caller commits it (under whatever lock it needs) or discards it,
   * so a failed upload never replaces a good file.
   *
   * On failure the source is unpiped and drained, never destroyed: destroying an HTTP request
   * would cut the socket before the error reply (413, 400) could be written.
   */
  async receive(firmwareId: string, source: Readable, signMethod: SignMethod): Promise<ReceivedFile> {
    const target = this.filePath(firmwareId);
    await this.ensureRoot();
    const temporary = `${target}.${randomUUID()}.part`;
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
    // the source is the client's body: its errors (a malformed multipart body cut short) are the
    // client's, not the server's; refusals with a status of their own (a size limit) keep it
    const asClientError = (error: Error & { statusCode?: number }): Error =>
      error instanceof OtterError || (error.statusCode !== undefined && error.statusCode < 500) ? error : new UploadAbortedError();
    // a multipart part whose body ended early may have failed before anyone listened: its error
    // and close are gone, and waiting for them would hang the request
    if (source.destroyed) throw source.errored ? asClientError(source.errored) : new UploadAbortedError();
    const onSourceError = (error: Error) => meter.destroy(asClientError(error));
    const onSourceClose = () => {
      if (!source.readableEnded) meter.destroy(new UploadAbortedError());
    };
    source.on('error', onSourceError);
    source.on('close', onSourceClose);
    const written = pipeline(meter, createWriteStream(temporary));
    source.pipe(meter);
    try {
      await written;
      // a multipart stream cut at its limit ends quietly; it says so on `truncated`
      if ((source as { truncated?: boolean }).truncated) throw new FileTooLargeError(maxBytes);
      if (size === 0) throw validationError('firmware file is empty');
    } catch (error) {
      source.unpipe(meter);
      source.resume();
      await rm(temporary, { force: true });
      throw error;
    } finally {
      source.off('error', onSourceError);
      source.off('close', onSourceClose);
    }

    let settled = false;
    return {
      size,
      sign: hash.digest('hex'),
      signMethod,
      async commit() {
        if (settled) return;
        await rename(temporary, target);
        settled = true;
      },
      async discard() {
        if (settled) return;
        settled = true;
        await rm(temporary, { force: true });
      },
    };
  }

  /** Receives `source` and puts it in place at once (no lock needed by the caller). */
  async save(firmwareId: string, source: Readable, signMethod: SignMethod): Promise<StoredFile> {
    const received = await this.receive(firmwareId, source, signMethod);
    try {
      await received.commit();
    } finally {
      await received.discard();
    }
    return { size: received.size, sign: received.sign, signMethod };
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
