// Fuzzing decodeDeviceMessage (core/messages.ts) with 10,000 messages, fixed seeds: it never throws,
// a refusal always carries one of the decoder's reasons and a detail, and what it accepts is
// well-formed and storable (valid ids, bounded numbers, no U+0000, no absurd nesting, serialisable).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { INBOUND_MESSAGE_TYPES, decodeDeviceMessage, isRefusal, type IncomingDeviceMessage, type RefusalReason } from '../../core/messages.ts';
import { findUnstorable } from '../../core/storable-json.ts';

const SEED = 7_031;
const ID = /^[A-Za-z0-9_.:-]{1,64}$/;
/** What the decoder itself refuses for; the other reasons are given later, by the message service. */
const DECODER_REASONS: RefusalReason[] = ['bad_json', 'invalid_message', 'unknown_topic', 'unknown_message_type'];

const nasty = fc.constantFrom(
  '', ' ', '\u0000', 'a\u0000b', '%00', '../../etc/passwd', '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty',
  'NaN', 'Infinity', '-1', '1e309', '9'.repeat(17), '😀', '\uD800', '\u202E', 'x'.repeat(5_000), 'dev 1', 'DEV-1', 'dev-1', 'prod-1',
);
const text = fc.oneof(fc.string({ maxLength: 80 }), fc.string({ unit: 'binary', maxLength: 40 }), nasty);
const validId = fc.stringMatching(/^[A-Za-z0-9_.:-]{1,64}$/);
const transportId = fc.option(fc.oneof({ weight: 4, arbitrary: validId }, { weight: 1, arbitrary: text }), { nil: undefined });
const messageType = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...INBOUND_MESSAGE_TYPES) },
  { weight: 1, arbitrary: fc.constantFrom('UPGRADE_FIRMWARE', 'READ_FIRMWARE', 'report_firmware', 'REPORT_FIRMWARE ', '__proto__', 'toString', 'constructor') },
  { weight: 1, arbitrary: text },
  { weight: 1, arbitrary: fc.constant(undefined) },
);

const number = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.constantFrom(0, 100, 100.4, -0, -1, 101, 2 ** 53, 2 ** 63, 1e20, 1e308, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER + 2, 0.5),
);
const anyJson = fc.oneof(fc.jsonValue({ maxDepth: 3 }), text, number, fc.boolean(), fc.constant(null), fc.constant({}), fc.constant([]));

/** A value nested `depth` levels deep, with a string (maybe holding U+0000) at the bottom. */
const deep = fc.tuple(fc.integer({ min: 1, max: 200 }), fc.boolean(), fc.constantFrom('x', 'a\u0000b')).map(([depth, arrays, leaf]) => {
  let value: unknown = leaf;
  for (let i = 0; i < depth; i += 1) value = arrays ? [value] : { k: value };
  return value;
});

const FIELDS = [
  'deviceId', 'productId', 'messageId', 'progress', 'complete', 'success', 'version', 'errorReason', 'message', 'code',
  'requestVersion', 'currentVersion', 'properties', 'timestamp', 'timestampe', 'messageType', '__proto__', 'constructor', 'extra',
];

const validBody = fc.record(
  {
    deviceId: validId,
    productId: validId,
    messageId: fc.string({ minLength: 1, maxLength: 128 }),
    progress: fc.oneof(fc.integer({ min: 0, max: 100 }), fc.double({ min: 0, max: 100, noNaN: true })),
    complete: fc.boolean(),
    success: fc.boolean(),
    version: fc.string({ minLength: 1, maxLength: 64 }),
    errorReason: fc.string({ maxLength: 1024 }),
    message: fc.string({ maxLength: 1024 }),
    code: fc.string({ maxLength: 128 }),
    requestVersion: fc.string({ maxLength: 64 }),
    currentVersion: fc.string({ maxLength: 64 }),
    properties: fc.dictionary(fc.string({ maxLength: 12 }), fc.oneof(fc.jsonValue({ maxDepth: 2 }), deep), { maxKeys: 5 }),
    timestamp: fc.oneof(fc.nat(), fc.stringMatching(/^[0-9]{1,16}$/)),
    timestampe: fc.oneof(fc.nat(), fc.stringMatching(/^[0-9]{1,16}$/)),
  },
  { requiredKeys: ['messageId', 'progress', 'complete', 'success', 'version'] },
);

/** Valid fields with a few replaced by anything: both the acceptance and refusal paths are taken. */
const nearValid = fc
  .tuple(validBody, fc.dictionary(fc.constantFrom(...FIELDS), fc.oneof(anyJson, deep), { maxKeys: 3 }))
  .map(([fields, replaced]) => ({ ...fields, ...replaced }));

/** Bodies as a connector hands them over: parsed JSON, or raw bytes/text that did not parse. */
const jsonBody = fc.oneof(
  { weight: 6, arbitrary: nearValid },
  { weight: 2, arbitrary: fc.dictionary(fc.constantFrom(...FIELDS), fc.oneof(anyJson, deep), { maxKeys: 8 }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 4 }) },
  { weight: 1, arbitrary: deep },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes)) },
  { weight: 1, arbitrary: text },
);

function incoming(type: string | undefined, productId: string | undefined, deviceId: string | undefined, body: unknown, transportError?: 'bad_json' | 'unknown_topic'): IncomingDeviceMessage {
  const message: IncomingDeviceMessage = { messageType: type, body, source: 'fuzz' };
  if (productId !== undefined) message.productId = productId;
  if (deviceId !== undefined) message.deviceId = deviceId;
  if (transportError !== undefined) message.transportError = transportError;
  return message;
}

describe('fuzzing decodeDeviceMessage', () => {
  it('7,000 messages as connectors hand them over: refusals with a known reason, acceptances storable', () => {
    const outcomes = new Map<string, number>();
    fc.assert(
      fc.property(
        messageType,
        transportId,
        transportId,
        jsonBody,
        fc.oneof(
          { weight: 18, arbitrary: fc.constant(undefined) },
          { weight: 1, arbitrary: fc.constantFrom('bad_json' as const, 'unknown_topic' as const) },
        ),
        (type, productId, deviceId, body, transportError) => {
          const message = incoming(type, productId, deviceId, body, transportError);
          let result: ReturnType<typeof decodeDeviceMessage> | undefined;
          expect(() => {
            result = decodeDeviceMessage(message);
          }).not.toThrow();
          if (isRefusal(result)) {
            outcomes.set(result.reason, (outcomes.get(result.reason) ?? 0) + 1);
            expect(DECODER_REASONS).toContain(result.reason);
            expect(typeof result.detail).toBe('string');
            expect(result.detail.length).toBeGreaterThan(0);
            if (transportError) expect(result.reason).toBe(transportError);
            return;
          }
          const decoded = result!;
          outcomes.set('accepted', (outcomes.get('accepted') ?? 0) + 1);
          expect(transportError).toBeUndefined();
          expect(INBOUND_MESSAGE_TYPES).toContain(decoded.messageType);
          expect(decoded.deviceId).toMatch(ID);
          if (decoded.productId !== undefined) expect(decoded.productId).toMatch(ID);
          // the transport's ids decide, whatever the payload says
          if (deviceId) expect(decoded.deviceId).toBe(deviceId);
          if (productId) expect(decoded.productId).toBe(productId);
          if (decoded.timestamp !== undefined) {
            expect(Number.isFinite(decoded.timestamp) && decoded.timestamp >= 0 && decoded.timestamp < 2 ** 63).toBe(true);
          }
          if (decoded.messageType === 'UPGRADE_FIRMWARE_PROGRESS') {
            expect(Number.isInteger(decoded.progress) && decoded.progress >= 0 && decoded.progress <= 100).toBe(true);
          }
          // what is accepted can be stored: no U+0000, no absurd nesting, serialisable
          expect(findUnstorable(decoded)).toBeUndefined();
          expect(() => JSON.stringify(decoded)).not.toThrow();
        },
      ),
      { seed: SEED, numRuns: 7_000 },
    );
    // every path is taken
    for (const outcome of ['accepted', 'invalid_message', 'unknown_message_type', 'bad_json', 'unknown_topic']) {
      expect(outcomes.get(outcome) ?? 0, `${outcome}: ${JSON.stringify([...outcomes])}`).toBeGreaterThan(20);
    }
  });

  // the body is `unknown` to the decoder: any value at all, beyond what JSON can express
  it('3,000 arbitrary JavaScript values as bodies: never throws', () => {
    const anything = fc.anything({
      maxDepth: 4,
      withBigInt: true,
      withBoxedValues: true,
      withDate: true,
      withMap: true,
      withSet: true,
      withNullPrototype: true,
      withObjectString: true,
      withSparseArray: true,
      withTypedArray: true,
      key: fc.oneof(fc.constantFrom(...FIELDS), fc.string({ maxLength: 8 })),
    });
    fc.assert(
      fc.property(messageType, transportId, transportId, fc.oneof(anything, nearValid), (type, productId, deviceId, body) => {
        const message = incoming(type, productId, deviceId, body);
        let result: unknown;
        expect(() => {
          result = decodeDeviceMessage(message);
        }).not.toThrow();
        if (isRefusal(result)) expect(DECODER_REASONS).toContain(result.reason);
        else expect(INBOUND_MESSAGE_TYPES).toContain((result as { messageType: string }).messageType);
      }),
      { seed: SEED, numRuns: 3_000 },
    );
  });
});
