// Keeps oversized MQTT PUBLISH packets out of mqtt.js, which buffers a whole packet before it
// emits it: a filter on the bytes coming from the broker frames packets by their fixed header, and
// replaces a PUBLISH whose payload exceeds the limit by a small one (same topic, QoS and packet id,
// so it is still acknowledged) carrying a marker, while the payload's bytes are dropped as they pass.
import { Transform, type Duplex } from 'node:stream';

const PUBLISH = 3;
/** MQTT 5 properties of an oversized PUBLISH beyond this are not kept; the packet is too large. */
const MAX_KEPT_PROPERTIES = 8 * 1024;
const MARKER_PREFIX = Buffer.from('\0otter:too_large:');

export interface SizeLimitOptions {
  /** Largest payload handed on; a PUBLISH with a larger one is replaced. */
  maxPayloadBytes: number;
  /** 5 when PUBLISH packets carry a properties block (MQTT 5), else 3 or 4. */
  protocolVersion: number;
}

/** The payload size of a PUBLISH the filter replaced, or undefined for a payload as sent. */
export function droppedPayloadBytes(payload: Buffer): number | undefined {
  if (payload.length <= MARKER_PREFIX.length || payload[0] !== 0 || !payload.subarray(0, MARKER_PREFIX.length).equals(MARKER_PREFIX)) return undefined;
  const size = Number(payload.subarray(MARKER_PREFIX.length).toString('latin1'));
  return Number.isSafeInteger(size) ? size : undefined;
}

function varintLength(value: number): number {
  return value < 128 ? 1 : value < 16_384 ? 2 : value < 2_097_152 ? 3 : 4;
}

function writeVarint(target: Buffer, offset: number, value: number): number {
  let rest = value;
  do {
    let byte = rest % 128;
    rest = Math.floor(rest / 128);
    if (rest > 0) byte |= 0x80;
    target[offset++] = byte;
  } while (rest > 0);
  return offset;
}

/** Reads a variable byte integer at `offset`: its value and length, 'short' if incomplete, 'bad' if malformed. */
function readVarint(buffer: Buffer, offset: number, end: number): { value: number; length: number } | 'short' | 'bad' {
  let value = 0;
  let multiplier = 1;
  for (let i = 0; i < 4; i += 1) {
    if (offset + i >= end) return 'short';
    const byte = buffer[offset + i]!;
    value += (byte & 0x7f) * multiplier;
    if ((byte & 0x80) === 0) return { value, length: i + 1 };
    multiplier *= 128;
  }
  return 'bad';
}

type Mode = 'header' | 'pass' | 'inspect' | 'discard' | 'raw';

/**
 * The framing state machine, fed chunk by chunk (packets split anywhere). Everything but an
 * oversized PUBLISH comes out as the very bytes that went in; memory held is at most one PUBLISH's
 * topic and properties (≤ 64 KiB + 8 KiB), never a payload.
 */
export class MqttSizeFilter {
  private readonly maxPayload: number;
  private readonly withProperties: boolean;
  private mode: Mode = 'header';
  private readonly header = Buffer.alloc(5);
  private headerLength = 0;
  /** The length of the current packet's fixed header (type byte and remaining length). */
  private fixedHeaderLength = 0;
  /** Bytes of the current packet not yet consumed (after its fixed header). */
  private remaining = 0;
  private remainingLength = 0;
  /** The start of an oversized PUBLISH's variable header, kept until it is judged. */
  private kept: Buffer | undefined;
  private keptLength = 0;
  /** How many PUBLISH packets were replaced so far. */
  dropped = 0;

  constructor(options: SizeLimitOptions) {
    this.maxPayload = options.maxPayloadBytes;
    this.withProperties = options.protocolVersion === 5;
  }

  /** The bytes to hand on for `chunk`, in order (slices of it where possible). */
  filter(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    // chunk[regionStart, i) goes out unchanged once the region ends
    let regionStart = -1;
    let headerStart = -1;
    const endRegion = (at: number) => {
      if (regionStart >= 0 && at > regionStart) out.push(chunk.subarray(regionStart, at));
      regionStart = -1;
    };
    let i = 0;
    while (i < chunk.length) {
      switch (this.mode) {
        case 'raw':
          if (regionStart < 0) regionStart = i;
          i = chunk.length;
          break;
        case 'pass': {
          const n = Math.min(this.remaining, chunk.length - i);
          if (regionStart < 0) regionStart = i;
          i += n;
          this.remaining -= n;
          if (this.remaining === 0) this.mode = 'header';
          break;
        }
        case 'discard': {
          endRegion(i);
          const n = Math.min(this.remaining, chunk.length - i);
          i += n;
          this.remaining -= n;
          if (this.remaining === 0) this.mode = 'header';
          break;
        }
        case 'header': {
          if (this.headerLength === 0) headerStart = i;
          const byte = chunk[i++]!;
          this.header[this.headerLength++] = byte;
          if (this.headerLength === 1 || (byte & 0x80) !== 0) {
            if (this.headerLength < 5) break;
            // a fifth length byte: not MQTT. Hand everything on as received; the parser will say so.
            if (headerStart >= 0) {
              if (regionStart < 0) regionStart = headerStart;
            } else {
              out.push(Buffer.from(this.header.subarray(0, this.headerLength)));
            }
            this.headerLength = 0;
            this.mode = 'raw';
            break;
          }
          const length = readVarint(this.header, 1, this.headerLength) as { value: number };
          this.fixedHeaderLength = this.headerLength;
          this.headerLength = 0;
          this.remainingLength = length.value;
          this.remaining = length.value;
          if ((this.header[0]! >> 4) === PUBLISH && length.value > this.maxPayload) {
            if (headerStart >= 0) endRegion(headerStart);
            this.mode = 'inspect';
            this.kept = Buffer.alloc(Math.min(length.value, 2 + 65_535 + 2 + 4 + MAX_KEPT_PROPERTIES));
            this.keptLength = 0;
          } else {
            // the header's bytes go out as received: with the region, or (begun in an earlier chunk) copied
            if (headerStart >= 0) {
              if (regionStart < 0) regionStart = headerStart;
            } else {
              out.push(Buffer.from(this.header.subarray(0, this.fixedHeaderLength)));
            }
            this.mode = length.value > 0 ? 'pass' : 'header';
          }
          headerStart = -1;
          break;
        }
        case 'inspect': {
          i = this.inspect(chunk, i, out);
          break;
        }
      }
    }
    // a fixed header cut by the chunk's end is kept (in this.header), not handed on yet
    if (this.mode === 'header' && this.headerLength > 0 && headerStart >= 0) endRegion(headerStart);
    else endRegion(chunk.length);
    return out;
  }

  /** Reads what is needed of a large PUBLISH's variable header, then judges it; returns the new offset. */
  private inspect(chunk: Buffer, start: number, out: Buffer[]): number {
    const kept = this.kept!;
    let i = start;
    for (;;) {
      const need = this.needed();
      if (typeof need === 'string') {
        this.judge(need, out);
        return i;
      }
      if (i >= chunk.length) return i;
      const n = Math.min(need - this.keptLength, chunk.length - i);
      chunk.copy(kept, this.keptLength, i, i + n);
      this.keptLength += n;
      this.remaining -= n;
      i += n;
    }
  }

  /** How many bytes of variable header must be kept before judging, or the verdict once known. */
  private needed(): number | 'small' | 'large' | 'malformed' {
    const kept = this.kept!;
    const have = this.keptLength;
    const total = this.remainingLength;
    if (have < 2) return total < 2 ? 'malformed' : 2;
    const topicEnd = 2 + kept.readUInt16BE(0);
    const qos = (this.header[0]! >> 1) & 0x03;
    const idEnd = topicEnd + (qos > 0 ? 2 : 0);
    if (idEnd > total) return 'malformed';
    if (have < idEnd) return idEnd;
    if (!this.withProperties) return total - idEnd > this.maxPayload ? 'large' : 'small';
    const properties = readVarint(kept, idEnd, have);
    if (properties === 'bad') return 'malformed';
    if (properties === 'short') return have + 1 > total ? 'malformed' : have + 1;
    const propertiesEnd = idEnd + properties.length + properties.value;
    if (propertiesEnd > total) return 'malformed';
    if (properties.value > MAX_KEPT_PROPERTIES) return 'large';
    if (have < propertiesEnd) return propertiesEnd;
    return total - propertiesEnd > this.maxPayload ? 'large' : 'small';
  }

  private judge(verdict: 'small' | 'large' | 'malformed', out: Buffer[]): void {
    const kept = this.kept!.subarray(0, this.keptLength);
    this.kept = undefined;
    if (verdict !== 'large') {
      // as received: the fixed header, what was kept, and the rest streams through
      out.push(Buffer.from(this.header.subarray(0, this.fixedHeaderLength)), Buffer.from(kept));
      this.mode = this.remaining > 0 ? 'pass' : 'header';
      return;
    }
    out.push(this.replacement(kept));
    this.dropped += 1;
    this.mode = this.remaining > 0 ? 'discard' : 'header';
  }

  /** The small PUBLISH handed on instead: same flags, topic and packet id, no properties, a marker. */
  private replacement(kept: Buffer): Buffer {
    const topicEnd = 2 + kept.readUInt16BE(0);
    const qos = (this.header[0]! >> 1) & 0x03;
    const idEnd = topicEnd + (qos > 0 ? 2 : 0);
    // the payload's size: what followed the topic, packet id and properties (all of it when unknown)
    let payloadBytes = this.remainingLength - idEnd;
    if (this.withProperties) {
      const properties = readVarint(kept, idEnd, kept.length);
      if (typeof properties === 'object') payloadBytes -= properties.length + properties.value;
    }
    const marker = Buffer.concat([MARKER_PREFIX, Buffer.from(String(payloadBytes), 'latin1')]);
    const remainingLength = idEnd + (this.withProperties ? 1 : 0) + marker.length;
    const packet = Buffer.alloc(1 + varintLength(remainingLength) + remainingLength);
    packet[0] = this.header[0]!;
    let offset = writeVarint(packet, 1, remainingLength);
    offset += kept.copy(packet, offset, 0, idEnd);
    if (this.withProperties) packet[offset++] = 0;
    marker.copy(packet, offset);
    return packet;
  }
}

/** A stream that passes MQTT bytes through an MqttSizeFilter (back-pressure preserved). */
export function sizeLimitedStream(options: SizeLimitOptions): Transform & { filter: MqttSizeFilter } {
  const filter = new MqttSizeFilter(options);
  const stream = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      for (const piece of filter.filter(chunk)) this.push(piece);
      callback();
    },
  });
  return Object.assign(stream, { filter });
}

/**
 * Makes `stream.pipe(destination)` — how mqtt.js reads a connection — go through the size filter.
 * Writes, errors and closing stay on the connection itself.
 */
export function limitIncoming<S extends Duplex>(stream: S, options: SizeLimitOptions): S {
  const pipe = stream.pipe.bind(stream);
  stream.pipe = function pipeThroughFilter<T extends NodeJS.WritableStream>(destination: T, pipeOptions?: { end?: boolean }): T {
    const filtered = sizeLimitedStream(options);
    // a connection torn down (not ended) must not leave the filter holding a half packet
    stream.once('close', () => filtered.destroy());
    pipe(filtered);
    return filtered.pipe(destination, pipeOptions);
  } as S['pipe'];
  return stream;
}
