// The MQTT size filter: whatever way the broker's bytes are cut into chunks, every packet comes
// out as it went in, except a PUBLISH whose payload is over the limit, which comes out as a small
// PUBLISH with the same topic, QoS and packet id and a marker payload naming the dropped size.
import fc from 'fast-check';
import mqttPacket, { type IPublishPacket, type Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { MqttSizeFilter, droppedPayloadBytes } from '../../protocols/mqtt-size-limit.ts';

const LIMIT = 100;

function encode(packet: Packet, protocolVersion: number): Buffer {
  return mqttPacket.generate(packet, { protocolVersion });
}

function parseAll(bytes: Buffer, protocolVersion: number): Packet[] {
  const parser = mqttPacket.parser({ protocolVersion });
  const packets: Packet[] = [];
  const errors: Error[] = [];
  parser.on('packet', (packet) => packets.push(packet));
  parser.on('error', (error) => errors.push(error));
  parser.parse(bytes);
  if (errors.length > 0) throw errors[0];
  return packets;
}

/** Runs the bytes through a fresh filter, cut at the given offsets. */
function run(bytes: Buffer, cuts: number[], protocolVersion = 5, limit = LIMIT): { out: Buffer; filter: MqttSizeFilter; largestPiece: number } {
  const filter = new MqttSizeFilter({ maxPayloadBytes: limit, protocolVersion });
  const points = [...new Set(cuts.filter((c) => c > 0 && c < bytes.length))].sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let start = 0;
  for (const end of [...points, bytes.length]) {
    pieces.push(...filter.filter(bytes.subarray(start, end)));
    start = end;
  }
  return { out: Buffer.concat(pieces), filter, largestPiece: Math.max(0, ...pieces.map((p) => p.length)) };
}

function publish(topic: string, payloadBytes: number, qos: 0 | 1, messageId: number, properties?: IPublishPacket['properties']): IPublishPacket {
  return {
    cmd: 'publish',
    topic,
    payload: Buffer.alloc(payloadBytes, 0x61),
    qos,
    dup: false,
    retain: false,
    ...(qos > 0 ? { messageId } : {}),
    ...(properties ? { properties } : {}),
  };
}

/** What the filter should hand on for `packet`. */
function expected(packet: Packet, limit = LIMIT): Packet {
  if (packet.cmd !== 'publish' || packet.payload.length <= limit) return packet;
  const marker = Buffer.from(`\0otter:too_large:${packet.payload.length}`, 'latin1');
  const replaced: IPublishPacket = { ...packet, payload: marker };
  delete replaced.properties;
  return replaced;
}

const packetArbitrary = (protocolVersion: number): fc.Arbitrary<Packet> =>
  fc.oneof(
    fc
      .record({
        topic: fc.string({ minLength: 1, maxLength: 40 }).map((t) => t.replace(/[+#\0]/g, 'x') || 't'),
        // around the limit, and some far beyond it
        size: fc.oneof(fc.integer({ min: 0, max: 2 * LIMIT }), fc.integer({ min: LIMIT - 2, max: LIMIT + 2 }), fc.integer({ min: 1_000, max: 40_000 })),
        qos: fc.constantFrom<0 | 1>(0, 1),
        messageId: fc.integer({ min: 1, max: 65_535 }),
        userProperty: fc.option(fc.string({ maxLength: 300 }), { nil: undefined }),
      })
      .map(({ topic, size, qos, messageId, userProperty }) =>
        publish(topic, size, qos, messageId, protocolVersion === 5 && userProperty !== undefined ? { userProperties: { k: userProperty } } : undefined),
      ),
    fc.integer({ min: 1, max: 65_535 }).map((messageId): Packet => ({ cmd: 'puback', messageId })),
    fc.constant<Packet>({ cmd: 'pingresp' }),
    fc.integer({ min: 1, max: 65_535 }).map((messageId): Packet => ({ cmd: 'suback', messageId, granted: [1] })),
  );

describe('MqttSizeFilter', () => {
  for (const protocolVersion of [4, 5]) {
    it(`MQTT ${protocolVersion}: any packets, cut anywhere, come out as expected`, () => {
      fc.assert(
        fc.property(
          fc.array(packetArbitrary(protocolVersion), { minLength: 1, maxLength: 12 }),
          fc.array(fc.nat(), { maxLength: 30 }),
          (packets, rawCuts) => {
            const bytes = Buffer.concat(packets.map((p) => encode(p, protocolVersion)));
            const cuts = rawCuts.map((c) => c % (bytes.length + 1));
            const { out, filter } = run(bytes, cuts, protocolVersion);
            // byte for byte: what mqtt-packet would encode for the expected packets
            const want = Buffer.concat(packets.map((p) => encode(expected(p), protocolVersion)));
            expect(out.toString('hex')).toBe(want.toString('hex'));
            expect(filter.dropped).toBe(packets.filter((p) => p.cmd === 'publish' && p.payload.length > LIMIT).length);
          },
        ),
        { numRuns: 400 },
      );
    });
  }

  it('every single cut point of a mixed stream, and one byte at a time', () => {
    const packets: Packet[] = [
      { cmd: 'pingresp' },
      publish('/p/d1/firmware/progress', 20, 1, 7),
      publish('/p/d2/firmware/progress', 500, 1, 8, { userProperties: { a: 'b'.repeat(50) }, contentType: 'application/json' }),
      { cmd: 'puback', messageId: 3 },
      publish('/p/d3/firmware/report', LIMIT, 0, 0),
      publish('/p/d4/firmware/report', LIMIT + 1, 1, 9),
      publish('', 200, 1, 10),
    ];
    const bytes = Buffer.concat(packets.map((p) => encode(p, 5)));
    const want = Buffer.concat(packets.map((p) => encode(expected(p), 5))).toString('hex');
    for (let cut = 0; cut <= bytes.length; cut += 1) {
      expect(run(bytes, [cut]).out.toString('hex'), `cut at ${cut}`).toBe(want);
    }
    for (let a = 0; a <= bytes.length; a += 5) {
      for (let b = a; b <= bytes.length; b += 7) expect(run(bytes, [a, b]).out.toString('hex'), `cuts at ${a}, ${b}`).toBe(want);
    }
    const everyByte = Array.from({ length: bytes.length }, (_, i) => i);
    expect(run(bytes, everyByte).out.toString('hex')).toBe(want);
    // and mqtt.js's parser reads it: the oversized one as the marker
    const parsed = parseAll(Buffer.from(want, 'hex'), 5) as IPublishPacket[];
    expect(parsed.map((p) => (p.cmd === 'publish' ? droppedPayloadBytes(Buffer.from(p.payload)) ?? 'as sent' : p.cmd))).toEqual([
      'pingresp', 'as sent', 500, 'puback', 'as sent', LIMIT + 1, 200,
    ]);
  });

  it('a stream of small packets comes out as the very chunks that went in', () => {
    const bytes = Buffer.concat(Array.from({ length: 50 }, (_, i) => encode(publish(`/p/d${i}/firmware/progress`, 60, 1, i + 1), 5)));
    const filter = new MqttSizeFilter({ maxPayloadBytes: LIMIT, protocolVersion: 5 });
    const out = filter.filter(bytes);
    expect(out).toHaveLength(1);
    // no copy: a view of the same memory
    expect(out[0]!.buffer).toBe(bytes.buffer);
    expect(out[0]!.equals(bytes)).toBe(true);
  });

  it('a huge payload is dropped as it streams by, never held', () => {
    const size = 20 * 1024 * 1024;
    const header = encode(publish('/p/big/firmware/report', 0, 1, 42), 5);
    // the same packet with a 20 MB payload, fed in 64 KiB chunks without building it whole
    const packet = publish('/p/big/firmware/report', size, 1, 42);
    const full = encode(packet, 5);
    expect(full.length).toBeGreaterThan(size);
    const filter = new MqttSizeFilter({ maxPayloadBytes: 65_536, protocolVersion: 5 });
    const pieces: Buffer[] = [];
    for (let offset = 0; offset < full.length; offset += 65_536) pieces.push(...filter.filter(full.subarray(offset, offset + 65_536)));
    const total = pieces.reduce((sum, piece) => sum + piece.length, 0);
    expect(total).toBeLessThan(header.length + 64);
    const [parsed] = parseAll(Buffer.concat(pieces), 5) as IPublishPacket[];
    expect(parsed).toMatchObject({ cmd: 'publish', topic: '/p/big/firmware/report', qos: 1, messageId: 42 });
    expect(droppedPayloadBytes(Buffer.from(parsed!.payload))).toBe(size);
  });

  it('a PUBLISH made large by its properties is refused too', () => {
    const packet = publish('/p/d/firmware/report', 10, 1, 5, { userProperties: { big: 'x'.repeat(20_000) } });
    const [parsed] = parseAll(run(encode(packet, 5), []).out, 5) as IPublishPacket[];
    expect(parsed).toMatchObject({ topic: '/p/d/firmware/report', messageId: 5 });
    expect(droppedPayloadBytes(Buffer.from(parsed!.payload))).toBe(10);
  });

  it('a long topic with a small payload passes', () => {
    const packet = publish(`/p/${'d'.repeat(60_000)}/firmware/report`, 50, 1, 6);
    const [parsed] = parseAll(run(encode(packet, 5), [3, 70, 30_000]).out, 5) as IPublishPacket[];
    expect(Buffer.from(parsed!.payload).equals(packet.payload as Buffer)).toBe(true);
  });

  it('bytes that are not MQTT are handed on unchanged', () => {
    const garbage = Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02, 0x03]);
    for (let cut = 0; cut <= garbage.length; cut += 1) expect(run(garbage, [cut]).out.equals(garbage)).toBe(true);
  });

  it('droppedPayloadBytes knows only its own marker', () => {
    expect(droppedPayloadBytes(Buffer.from('{"a":1}'))).toBeUndefined();
    expect(droppedPayloadBytes(Buffer.from('\0otter:too_large:'))).toBeUndefined();
    expect(droppedPayloadBytes(Buffer.from('\0otter:too_large:123'))).toBe(123);
  });
});
