// A minimal DER writer: just the ASN.1 types X.509 certificates and CRLs are made of. Issuing
// certificates for a fleet builds thousands of them a second; a general ASN.1 library spent ~5 ms
// on each (ten times the key generation and signature), so the few fixed structures are written here.

/** One tag-length-value element. */
export function tlv(tag: number, ...contents: Uint8Array[]): Buffer {
  const body = Buffer.concat(contents);
  return Buffer.concat([Buffer.from([tag]), encodeLength(body.length), body]);
}

function encodeLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export function sequence(...items: Uint8Array[]): Buffer {
  return tlv(0x30, ...items);
}

export function set(...items: Uint8Array[]): Buffer {
  return tlv(0x31, ...items);
}

/** A non-negative INTEGER from its big-endian magnitude (leading zeros trimmed, sign byte added). */
export function unsignedInteger(magnitude: Uint8Array): Buffer {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const trimmed = Buffer.from(magnitude.subarray(start));
  if (trimmed.length === 0) return tlv(0x02, Buffer.from([0]));
  return tlv(0x02, (trimmed[0]! & 0x80) !== 0 ? Buffer.concat([Buffer.from([0]), trimmed]) : trimmed);
}

export function smallInteger(value: number): Buffer {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`not a small non-negative integer: ${value}`);
  const bytes: number[] = [];
  for (let rest = value; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256);
  return unsignedInteger(Buffer.from(bytes.length > 0 ? bytes : [0]));
}

export function boolean(value: boolean): Buffer {
  return tlv(0x01, Buffer.from([value ? 0xff : 0x00]));
}

export function nullValue(): Buffer {
  return tlv(0x05);
}

export function objectIdentifier(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  if (arcs.length < 2 || arcs.some((arc) => !Number.isSafeInteger(arc) || arc < 0)) throw new RangeError(`bad OID ${dotted}`);
  const bytes: number[] = [];
  const [first, second, ...rest] = arcs as [number, number, ...number[]];
  for (const arc of [first * 40 + second, ...rest]) {
    const chunk = [arc % 128];
    for (let value = Math.floor(arc / 128); value > 0; value = Math.floor(value / 128)) chunk.unshift(0x80 | (value % 128));
    bytes.push(...chunk);
  }
  return tlv(0x06, Buffer.from(bytes));
}

export function utf8String(value: string): Buffer {
  return tlv(0x0c, Buffer.from(value, 'utf8'));
}

export function ia5String(value: string): Buffer {
  return tlv(0x16, Buffer.from(value, 'ascii'));
}

export function octetString(value: Uint8Array): Buffer {
  return tlv(0x04, value);
}

/** A BIT STRING of whole bytes (no unused bits): keys, signatures. */
export function bitString(value: Uint8Array): Buffer {
  return tlv(0x03, Buffer.from([0]), value);
}

/**
 * A named-bit BIT STRING (key usage): bit 0 is the most significant bit of the first byte; DER
 * drops trailing zero bits.
 */
export function namedBits(bits: readonly number[]): Buffer {
  const highest = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(highest / 8) + 1);
  for (const bit of bits) bytes[Math.floor(bit / 8)]! |= 0x80 >> (bit % 8);
  const unused = 7 - (highest % 8);
  return tlv(0x03, Buffer.from([unused]), bytes);
}

/** X.509 Time: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5). */
export function time(value: Date): Buffer {
  const iso = value.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  return value.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(digits.slice(2), 'ascii')) : tlv(0x18, Buffer.from(digits, 'ascii'));
}

/** [n] EXPLICIT: a constructed context-specific wrapper around the encoded items. */
export function explicit(tagNumber: number, ...items: Uint8Array[]): Buffer {
  return tlv(0xa0 | tagNumber, ...items);
}

/** [n] IMPLICIT primitive: the value bytes under a context-specific tag (GeneralName choices). */
export function implicitPrimitive(tagNumber: number, value: Uint8Array): Buffer {
  return tlv(0x80 | tagNumber, value);
}
