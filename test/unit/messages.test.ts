// decodeDeviceMessage against docs/device-protocol.md: the five inbound messages decoded, and every refusal
// with its stable reason; plus a property test that no input makes it throw.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  INBOUND_MESSAGE_TYPES,
  decodeDeviceMessage,
  isRefusal,
  parseJson,
  refusal,
  type DeviceMessage,
  type IncomingDeviceMessage,
  type Refusal,
} from '../../core/messages.ts';

const ID = /^[A-Za-z0-9_.:-]{1,64}$/;

/** As the MQTT connector hands it over: ids from the topic. */
function fromTopic(messageType: string | undefined, body: unknown, extra: Partial<IncomingDeviceMessage> = {}): IncomingDeviceMessage {
  return { messageType, productId: 'prod-1', deviceId: 'dev-1', body, source: `/prod-1/dev-1/${messageType}`, ...extra };
}

function decoded(incoming: IncomingDeviceMessage): DeviceMessage {
  const result = decodeDeviceMessage(incoming);
  if (isRefusal(result)) throw new Error(`refused: ${result.reason}: ${result.detail}`);
  return result;
}

function refused(incoming: IncomingDeviceMessage): Refusal {
  const result = decodeDeviceMessage(incoming);
  if (!isRefusal(result)) throw new Error(`accepted: ${JSON.stringify(result)}`);
  return result;
}

const VALID_BODIES: Record<(typeof INBOUND_MESSAGE_TYPES)[number], Record<string, unknown>> = {
  UPGRADE_FIRMWARE_PROGRESS: { progress: 50, complete: false, success: true, version: '2.0.0' },
  UPGRADE_FIRMWARE_REPLY: { messageId: 'm-1', success: true },
  REQUEST_FIRMWARE: { messageId: 'r-1' },
  REPORT_FIRMWARE: { version: '1.0.0' },
  READ_FIRMWARE_REPLY: { messageId: 'read-1', version: '1.0.0' },
};

describe('valid messages', () => {
  it('UPGRADE_FIRMWARE_PROGRESS', () => {
    const body = { progress: 42, complete: false, success: true, version: '2.0.0', timestamp: 1_767_268_800_000, messageId: 'x' };
    expect(decoded(fromTopic('UPGRADE_FIRMWARE_PROGRESS', body))).toEqual({
      messageType: 'UPGRADE_FIRMWARE_PROGRESS',
      productId: 'prod-1',
      deviceId: 'dev-1',
      timestamp: 1_767_268_800_000,
      progress: 42,
      complete: false,
      success: true,
      version: '2.0.0',
      errorReason: undefined,
    });
  });

  it('progress is cut to a whole percentage, as Java reads a fraction into an int; 0 and 100 are in range', () => {
    const at = (progress: number) =>
      (decoded(fromTopic('UPGRADE_FIRMWARE_PROGRESS', { progress, complete: false, success: true, version: '2' })) as { progress: number }).progress;
    expect([0, 12.4, 12.5, 99.2, 99.9, 100, 100.5].map(at)).toEqual([0, 12, 12, 99, 99, 100, 100]);
  });

  it('a failure report carries errorReason, falling back to message', () => {
    const failure = { progress: 10, complete: false, success: false, version: '2.0.0' };
    expect(decoded(fromTopic('UPGRADE_FIRMWARE_PROGRESS', { ...failure, errorReason: 'crc', message: 'disk full' }))).toMatchObject({ success: false, errorReason: 'crc' });
    expect(decoded(fromTopic('UPGRADE_FIRMWARE_PROGRESS', { ...failure, message: 'disk full' }))).toMatchObject({ success: false, errorReason: 'disk full' });
    expect(decoded(fromTopic('UPGRADE_FIRMWARE_PROGRESS', failure))).toMatchObject({ success: false, errorReason: undefined });
  });

  it('UPGRADE_FIRMWARE_REPLY, acknowledgement and rejection', () => {
    expect(decoded(fromTopic('UPGRADE_FIRMWARE_REPLY', { messageId: 'm-1', success: true }))).toEqual({
      messageType: 'UPGRADE_FIRMWARE_REPLY',
      productId: 'prod-1',
      deviceId: 'dev-1',
      timestamp: undefined,
      messageId: 'm-1',
      success: true,
      code: undefined,
      message: undefined,
    });
    expect(decoded(fromTopic('UPGRADE_FIRMWARE_REPLY', { messageId: 'm-1', success: false, code: 'busy', message: 'low battery' }))).toMatchObject({
      success: false,
      code: 'busy',
      message: 'low battery',
    });
  });

  it('REQUEST_FIRMWARE without a messageId (or an empty one) gets one made by the platform', () => {
    const made = decoded(fromTopic('REQUEST_FIRMWARE', { requestVersion: '' })) as { messageId: string };
    expect(made.messageId).toMatch(/^[0-9a-f-]{36}$/);
    expect((decoded(fromTopic('REQUEST_FIRMWARE', { messageId: '' })) as { messageId: string }).messageId).toMatch(/^[0-9a-f-]{36}$/);
    expect((decoded(fromTopic('REQUEST_FIRMWARE', { messageId: null })) as { messageId: string }).messageId).toMatch(/^[0-9a-f-]{36}$/);
    expect((decoded(fromTopic('REQUEST_FIRMWARE', {})) as { messageId: string }).messageId).not.toBe(made.messageId);
  });

  it('REQUEST_FIRMWARE, empty versions read as absent', () => {
    expect(decoded(fromTopic('REQUEST_FIRMWARE', { messageId: 'r-1', requestVersion: '2.0.0', currentVersion: '1.0.0', timestamp: 5 }))).toEqual({
      messageType: 'REQUEST_FIRMWARE',
      productId: 'prod-1',
      deviceId: 'dev-1',
      timestamp: 5,
      messageId: 'r-1',
      requestVersion: '2.0.0',
      currentVersion: '1.0.0',
    });
    expect(decoded(fromTopic('REQUEST_FIRMWARE', { messageId: 'r-1', requestVersion: '', currentVersion: '' }))).toMatchObject({
      requestVersion: undefined,
      currentVersion: undefined,
    });
  });

  it('REPORT_FIRMWARE with properties', () => {
    expect(decoded(fromTopic('REPORT_FIRMWARE', { version: '1.0.0', properties: { bootloader: '3', slot: 1 } }))).toEqual({
      messageType: 'REPORT_FIRMWARE',
      productId: 'prod-1',
      deviceId: 'dev-1',
      timestamp: undefined,
      version: '1.0.0',
      properties: { bootloader: '3', slot: 1 },
    });
  });

  it('READ_FIRMWARE_REPLY', () => {
    expect(decoded(fromTopic('READ_FIRMWARE_REPLY', { messageId: 'read-1', version: '1.0.0', properties: { a: 'b' } }))).toEqual({
      messageType: 'READ_FIRMWARE_REPLY',
      productId: 'prod-1',
      deviceId: 'dev-1',
      timestamp: undefined,
      messageId: 'read-1',
      version: '1.0.0',
      properties: { a: 'b' },
    });
  });

  it('`timestampe` (the seed\'s spelling) is read as timestamp', () => {
    expect(decoded(fromTopic('REPORT_FIRMWARE', { version: '1', timestampe: 1_700_000_000_000 })).timestamp).toBe(1_700_000_000_000);
    expect(decoded(fromTopic('REPORT_FIRMWARE', { version: '1', timestampe: '1700000000001' })).timestamp).toBe(1_700_000_000_001);
  });

  it('timestamp wins over timestampe when both are sent', () => {
    expect(decoded(fromTopic('REPORT_FIRMWARE', { version: '1', timestamp: 7, timestampe: 9 })).timestamp).toBe(7);
  });

  it('numeric-string timestamps are read as numbers', () => {
    expect(decoded(fromTopic('REPORT_FIRMWARE', { version: '1', timestamp: '1767268800000' })).timestamp).toBe(1_767_268_800_000);
    expect(decoded(fromTopic('REPORT_FIRMWARE', { version: '1', timestamp: '0' })).timestamp).toBe(0);
  });

  it('ids may come from the payload when the transport has none (HTTP), productId included', () => {
    const message = decoded({ messageType: 'REPORT_FIRMWARE', body: { deviceId: 'dev:9', productId: 'p.x_1', version: '1' } });
    expect(message.deviceId).toBe('dev:9');
    expect(message.productId).toBe('p.x_1');
  });

  it('a payload repeating the transport ids is accepted', () => {
    const message = decoded(fromTopic('REPORT_FIRMWARE', { deviceId: 'dev-1', productId: 'prod-1', version: '1' }));
    expect(message.deviceId).toBe('dev-1');
    expect(message.productId).toBe('prod-1');
  });

  it('the transport ids decide: a payload deviceId or productId that differs is ignored, malformed or not', () => {
    for (const ids of [{ deviceId: 'dev-2' }, { productId: 'prod-2' }, { deviceId: 'DEV-1', productId: 'p r o d' }, { deviceId: 17, productId: null }, { deviceId: '' }]) {
      const message = decoded(fromTopic('REPORT_FIRMWARE', { version: '1', ...ids }));
      expect(message).toMatchObject({ deviceId: 'dev-1', productId: 'prod-1' });
    }
  });

  it('the transport deviceId is used when the payload has only a productId, and vice versa', () => {
    expect(decoded({ messageType: 'REPORT_FIRMWARE', deviceId: 'dev-2', body: { productId: 'prod-2', version: '1' } })).toMatchObject({
      deviceId: 'dev-2',
      productId: 'prod-2',
    });
    expect(decoded({ messageType: 'REPORT_FIRMWARE', productId: 'prod-3', body: { deviceId: 'dev-3', version: '1' } })).toMatchObject({
      deviceId: 'dev-3',
      productId: 'prod-3',
    });
  });

  it('unknown extra fields and a payload messageType are tolerated and not passed on', () => {
    const message = decoded(fromTopic('REPORT_FIRMWARE', { version: '1', messageType: 'SOMETHING_ELSE', extra: true }));
    expect(message.messageType).toBe('REPORT_FIRMWARE');
    expect(message).not.toHaveProperty('extra');
  });

  it('does not modify the body it was given', () => {
    const body = { version: '1', timestampe: 5, messageType: 'REPORT_FIRMWARE' };
    decoded(fromTopic('REPORT_FIRMWARE', body));
    expect(body).toEqual({ version: '1', timestampe: 5, messageType: 'REPORT_FIRMWARE' });
  });

  it('accepts the longest allowed strings', () => {
    const id = 'a'.repeat(64);
    expect(decoded({ messageType: 'REPORT_FIRMWARE', body: { deviceId: id, version: 'v'.repeat(64) } }).deviceId).toBe(id);
    expect(decoded(fromTopic('UPGRADE_FIRMWARE_REPLY', { messageId: 'm'.repeat(128), success: false, message: 'x'.repeat(1024) }))).toMatchObject({
      message: 'x'.repeat(1024),
    });
  });
});

describe('read as JetLinks reads it (Jackson, unknown fields ignored)', () => {
  const progress = (body: Record<string, unknown>) => decoded(fromTopic('UPGRADE_FIRMWARE_PROGRESS', { version: '2.0.0', ...body }));

  it('numbers and booleans sent as strings are read as numbers and booleans', () => {
    expect(progress({ progress: '60', complete: 'false', success: 'true', timestamp: '1601196762389' })).toMatchObject({
      progress: 60,
      complete: false,
      success: true,
      timestamp: 1_601_196_762_389,
    });
    expect(progress({ progress: ' +7 ', complete: ' TRUE ', success: 'True' })).toMatchObject({ progress: 7, complete: true, success: true });
    expect(progress({ progress: '0', complete: 'False', success: 'FALSE' })).toMatchObject({ progress: 0, complete: false, success: false });
  });

  it('an integer is read as a boolean: 0 is false, anything else true', () => {
    expect(progress({ progress: 5, complete: 0, success: 1 })).toMatchObject({ complete: false, success: true });
    expect(progress({ progress: 5, complete: 2, success: -1 })).toMatchObject({ complete: true, success: true });
  });

  it('a field left out takes its Java default: progress 0, complete false, and a reply is a success', () => {
    expect(progress({ success: true })).toMatchObject({ progress: 0, complete: false, success: true });
    expect(progress({ success: true, complete: true })).toMatchObject({ progress: 0, complete: true });
    expect(decoded(fromTopic('UPGRADE_FIRMWARE_REPLY', { messageId: 'm-1' }))).toMatchObject({ success: true });
    expect(decoded(fromTopic('UPGRADE_FIRMWARE_REPLY', { messageId: 'm-1', success: 'false', code: 'busy' }))).toMatchObject({ success: false, code: 'busy' });
  });

  it('JetLinks\' error() helper: success false, complete false, the reason in errorReason', () => {
    expect(progress({ success: false, errorReason: 'flash write error' })).toMatchObject({ success: false, complete: false, progress: 0, errorReason: 'flash write error' });
  });

  it('a number or boolean sent where text belongs is read as its text', () => {
    expect(decoded(fromTopic('REPORT_FIRMWARE', { version: 2 }))).toMatchObject({ version: '2' });
    expect(decoded(fromTopic('UPGRADE_FIRMWARE_REPLY', { messageId: 1_551_807_719, success: false, code: 404 }))).toMatchObject({ messageId: '1551807719', code: '404' });
    expect(progress({ success: false, errorReason: false })).toMatchObject({ errorReason: 'false' });
  });

  it('null is an absent value', () => {
    expect(decoded(fromTopic('REQUEST_FIRMWARE', { messageId: 'r', requestVersion: null, currentVersion: null, timestamp: null }))).toMatchObject({
      requestVersion: undefined,
      currentVersion: undefined,
      timestamp: undefined,
    });
    expect(decoded(fromTopic('REPORT_FIRMWARE', { version: '1', properties: null }))).toMatchObject({ properties: undefined });
    expect(progress({ success: false, errorReason: null, message: 'disk full', progress: null })).toMatchObject({ errorReason: 'disk full', progress: 0 });
  });

  it('a fractional number is cut to the Java long or int it is read into', () => {
    expect(decoded(fromTopic('REPORT_FIRMWARE', { version: '1', timestamp: 1_601_196_762_389.9 })).timestamp).toBe(1_601_196_762_389);
  });

  it('fields JetLinks\' classes have and Otter does not use are ignored, whatever they hold', () => {
    const request = decoded(fromTopic('REQUEST_FIRMWARE', { messageId: 'r', headers: { force: true, latest: true }, requestVersion: '', firmwareId: 'x\u0000y' }));
    expect(request).toEqual({ messageType: 'REQUEST_FIRMWARE', productId: 'prod-1', deviceId: 'dev-1', timestamp: undefined, messageId: 'r', requestVersion: undefined, currentVersion: undefined });
    expect(progress({ success: true, progress: 50, firmwareId: 7, messageType: 'X', extra: { deep: [1] } })).not.toHaveProperty('firmwareId');
  });
});

describe('refusals: transport', () => {
  it('bad JSON → bad_json, whatever the body', () => {
    expect(refused(fromTopic('REPORT_FIRMWARE', '{"version": ', { transportError: 'bad_json' }))).toEqual({
      refused: true,
      reason: 'bad_json',
      detail: 'payload is not valid JSON',
      messageType: 'REPORT_FIRMWARE',
      deviceId: 'dev-1',
    });
    // even a body that would be valid: the transport said it could not parse it
    expect(refused(fromTopic('REPORT_FIRMWARE', { version: '1' }, { transportError: 'bad_json' })).reason).toBe('bad_json');
  });

  it('unknown topic → unknown_topic naming the source', () => {
    expect(refused({ messageType: undefined, body: undefined, transportError: 'unknown_topic', source: '/p/d/firmware/nope' })).toEqual({
      refused: true,
      reason: 'unknown_topic',
      detail: 'unknown topic /p/d/firmware/nope',
    });
    expect(refused({ messageType: undefined, body: undefined, transportError: 'unknown_topic' }).detail).toBe('unknown topic');
  });

  it('unknown_topic is checked before bad_json', () => {
    expect(refused({ messageType: 'REPORT_FIRMWARE', body: '{', transportError: 'unknown_topic' }).reason).toBe('unknown_topic');
  });
});

describe('refusals: message type', () => {
  it.each([
    ['FOO', '"FOO"'],
    ['UPGRADE_FIRMWARE', '"UPGRADE_FIRMWARE"'],
    ['READ_FIRMWARE', '"READ_FIRMWARE"'],
    ['report_firmware', '"report_firmware"'],
    ['', '""'],
    [undefined, 'null'],
  ])('%j → unknown_message_type', (messageType, shown) => {
    expect(refused(fromTopic(messageType, { version: '1' }))).toEqual({
      refused: true,
      reason: 'unknown_message_type',
      detail: `unknown messageType ${shown}`,
      deviceId: 'dev-1',
    });
  });
});

describe('refusals: invalid_message', () => {
  it.each([
    ['null', null],
    ['an array', [{ version: '1' }]],
    ['a string', '{"version":"1"}'],
    ['a number', 42],
    ['a boolean', true],
    ['undefined', undefined],
  ])('a body that is %s is not an object', (_name, body) => {
    expect(refused(fromTopic('REPORT_FIRMWARE', body))).toEqual({
      refused: true,
      reason: 'invalid_message',
      detail: 'payload must be a JSON object',
      messageType: 'REPORT_FIRMWARE',
      deviceId: 'dev-1',
    });
  });

  const progress = VALID_BODIES.UPGRADE_FIRMWARE_PROGRESS;
  const cases: Array<[string, string, Record<string, unknown>, string]> = [
    ['success missing', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, success: undefined }, 'success: required'],
    ['success null', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, success: null }, 'success: must be boolean'],
    ['version missing', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, version: undefined }, 'version: required'],
    ['progress above 100', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, progress: 101 }, 'progress: must be <= 100'],
    ['progress above 100 as a string', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, progress: '101' }, 'progress: must be <= 100'],
    ['progress below 0', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, progress: -1 }, 'progress: must be >= 0'],
    ['progress a word', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, progress: 'fifty' }, 'progress: must be number'],
    ['progress a fraction as a string', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, progress: '60.5' }, 'progress: must be number'],
    ['progress in exponent notation as a string', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, progress: '6e1' }, 'progress: must be number'],
    ['progress an empty string', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, progress: '' }, 'progress: must be number'],
    ['progress a boolean', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, progress: true }, 'progress: must be number'],
    ['complete a word', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, complete: 'yes' }, 'complete: must be boolean'],
    ['complete null', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, complete: null }, 'complete: must be boolean'],
    ['success "tRuE" (Jackson reads only true, True, TRUE)', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, success: 'tRuE' }, 'success: must be boolean'],
    ['success a fraction', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, success: 1.5 }, 'success: must be boolean'],
    ['version empty', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, version: '' }, 'version: must not have fewer than 1 characters'],
    ['version too long', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, version: 'v'.repeat(65) }, 'version: must not have more than 64 characters'],
    ['errorReason an object', 'UPGRADE_FIRMWARE_PROGRESS', { ...progress, errorReason: { code: 5 } }, 'errorReason: must be string'],
    ['reply without messageId', 'UPGRADE_FIRMWARE_REPLY', {}, 'messageId: required'],
    ['reply success null', 'UPGRADE_FIRMWARE_REPLY', { messageId: 'm', success: null }, 'success: must be boolean'],
    ['reply messageId empty', 'UPGRADE_FIRMWARE_REPLY', { messageId: '', success: true }, 'messageId: must not have fewer than 1 characters'],
    ['reply messageId too long', 'UPGRADE_FIRMWARE_REPLY', { messageId: 'm'.repeat(129), success: true }, 'messageId: must not have more than 128 characters'],
    ['reply success a string', 'UPGRADE_FIRMWARE_REPLY', { messageId: 'm', success: 'yes' }, 'success: must be boolean'],
    ['reply code too long', 'UPGRADE_FIRMWARE_REPLY', { messageId: 'm', success: false, code: 'c'.repeat(129) }, 'code: must not have more than 128 characters'],
    ['request messageId too long', 'REQUEST_FIRMWARE', { messageId: 'm'.repeat(129) }, 'messageId: must not have more than 128 characters'],
    ['request requestVersion a list', 'REQUEST_FIRMWARE', { messageId: 'r', requestVersion: [2] }, 'requestVersion: must be string'],
    ['request currentVersion too long', 'REQUEST_FIRMWARE', { messageId: 'r', currentVersion: 'v'.repeat(65) }, 'currentVersion: must not have more than 64 characters'],
    ['report without version', 'REPORT_FIRMWARE', {}, 'version: required'],
    ['report version an object', 'REPORT_FIRMWARE', { version: { major: 1 } }, 'version: must be string'],
    ['report version a fraction (its text is lost in JSON.parse)', 'REPORT_FIRMWARE', { version: 1.5 }, 'version: must be string'],
    ['report properties an array', 'REPORT_FIRMWARE', { version: '1', properties: ['a'] }, 'properties: must be object'],
    ['report properties a string', 'REPORT_FIRMWARE', { version: '1', properties: 'a=b' }, 'properties: must be object'],
    ['report messageId too long', 'REPORT_FIRMWARE', { version: '1', messageId: 'm'.repeat(129) }, 'messageId: must not have more than 128 characters'],
    ['read reply without messageId', 'READ_FIRMWARE_REPLY', { version: '1' }, 'messageId: required'],
    ['read reply without version', 'READ_FIRMWARE_REPLY', { messageId: 'r' }, 'version: required'],
    ['read reply messageId a list', 'READ_FIRMWARE_REPLY', { messageId: [5], version: '1' }, 'messageId: must be string'],
    ['read reply messageId beyond 2^53 (a snowflake sent as a number)', 'READ_FIRMWARE_REPLY', { messageId: 2 ** 60, version: '1' }, 'messageId: must be string'],
    ['negative timestamp', 'REPORT_FIRMWARE', { version: '1', timestamp: -1 }, 'timestamp: must be >= 0'],
    ['non-numeric timestamp string', 'REPORT_FIRMWARE', { version: '1', timestamp: '12a' }, 'timestamp: must be number'],
    ['17-digit timestamp string', 'REPORT_FIRMWARE', { version: '1', timestamp: '1'.repeat(17) }, 'timestamp: must be <= 9007199254740991'],
    ['timestamp a boolean', 'REPORT_FIRMWARE', { version: '1', timestamp: true }, 'timestamp: must be number'],
    ['bad timestampe', 'REPORT_FIRMWARE', { version: '1', timestampe: 'yesterday' }, 'timestamp: must be number'],
  ];

  it.each(cases)('%s', (_name, messageType, body, detail) => {
    const withoutUndefined = Object.fromEntries(Object.entries(body).filter(([, value]) => value !== undefined));
    expect(refused(fromTopic(messageType, withoutUndefined))).toEqual({
      refused: true,
      reason: 'invalid_message',
      detail,
      messageType,
      deviceId: 'dev-1',
    });
  });

  // without transport ids (the REST API), the payload's are the message's, and checked as strictly
  const payloadIds: Array<[string, Record<string, unknown>, string]> = [
    ['payload deviceId not an id', { version: '1', deviceId: 'dev 1' }, 'deviceId: must match pattern "^[A-Za-z0-9_.:-]{1,64}$"'],
    ['payload deviceId too long', { version: '1', deviceId: 'd'.repeat(65) }, 'deviceId: must match pattern "^[A-Za-z0-9_.:-]{1,64}$"'],
    ['payload deviceId empty', { version: '1', deviceId: '' }, 'deviceId: must match pattern "^[A-Za-z0-9_.:-]{1,64}$"'],
    ['payload deviceId a number', { version: '1', deviceId: 17 }, 'deviceId: must be string'],
    ['payload productId not an id', { version: '1', deviceId: 'dev-1', productId: 'prod/1' }, 'productId: must match pattern "^[A-Za-z0-9_.:-]{1,64}$"'],
  ];

  it.each(payloadIds)('without transport ids: %s', (_name, body, detail) => {
    expect(refused({ messageType: 'REPORT_FIRMWARE', body })).toEqual({ refused: true, reason: 'invalid_message', detail, messageType: 'REPORT_FIRMWARE' });
  });

  it.each(INBOUND_MESSAGE_TYPES)('%s without a deviceId anywhere → invalid_message "deviceId: required"', (messageType) => {
    expect(refused({ messageType, productId: 'prod-1', body: VALID_BODIES[messageType] })).toEqual({
      refused: true,
      reason: 'invalid_message',
      detail: 'deviceId: required',
      messageType,
    });
  });

  it('an empty transport deviceId counts as missing', () => {
    expect(refused({ messageType: 'REPORT_FIRMWARE', deviceId: '', body: { version: '1' } }).detail).toBe('deviceId: required');
  });
});

describe('helpers', () => {
  it('parseJson parses text and buffers, and says when it cannot', () => {
    expect(parseJson('{"a":1}')).toEqual({ ok: true, body: { a: 1 } });
    expect(parseJson(Buffer.from('[1,"x"]'))).toEqual({ ok: true, body: [1, 'x'] });
    expect(parseJson('null')).toEqual({ ok: true, body: null });
    expect(parseJson('{"a":')).toEqual({ ok: false });
    expect(parseJson('')).toEqual({ ok: false });
    expect(parseJson(Buffer.from([0xff, 0xfe]))).toEqual({ ok: false });
  });

  it('refusal and isRefusal', () => {
    const r = refusal('stale_report', 'older', { deviceId: 'd' });
    expect(r).toEqual({ refused: true, reason: 'stale_report', detail: 'older', deviceId: 'd' });
    expect(isRefusal(r)).toBe(true);
    expect(isRefusal({ refused: false })).toBe(false);
    expect(isRefusal({ refused: 'true' })).toBe(false);
    expect(isRefusal(null)).toBe(false);
    expect(isRefusal('refused')).toBe(false);
    expect(isRefusal(decodeDeviceMessage(fromTopic('REPORT_FIRMWARE', { version: '1' })))).toBe(false);
  });
});

describe('property: decodeDeviceMessage never throws and never lets a bad id through', () => {
  const validId = fc.stringMatching(/^[A-Za-z0-9_.:-]{1,64}$/);
  const messageType = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...INBOUND_MESSAGE_TYPES) },
    { weight: 1, arbitrary: fc.string() },
    { weight: 1, arbitrary: fc.constant(undefined) },
  );
  const anyValue = fc.oneof(fc.jsonValue(), fc.string(), fc.integer(), fc.double(), fc.boolean(), fc.constant(null));
  const millis = fc.oneof(fc.nat(), fc.stringMatching(/^[0-9]{1,16}$/));
  // bodies made of valid fields, with a few fields then replaced by anything: both the acceptance
  // and the refusal paths are exercised
  const validFields = fc.record(
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
      properties: fc.dictionary(fc.string({ maxLength: 12 }), fc.jsonValue(), { maxKeys: 5 }),
      timestamp: millis,
      timestampe: millis,
    },
    { requiredKeys: ['messageId', 'progress', 'complete', 'success', 'version'] },
  );
  const FIELDS = ['deviceId', 'productId', 'messageId', 'progress', 'complete', 'success', 'version', 'errorReason', 'message', 'timestamp', 'timestampe', 'properties'];
  const nearBody = fc
    .tuple(validFields, fc.dictionary(fc.constantFrom(...FIELDS), anyValue, { maxKeys: 2 }))
    .map(([fields, replaced]) => ({ ...fields, ...replaced }));
  const body = fc.oneof(
    { weight: 1, arbitrary: fc.jsonValue() },
    { weight: 1, arbitrary: fc.anything() },
    { weight: 1, arbitrary: fc.dictionary(fc.constantFrom(...FIELDS), anyValue) },
    { weight: 5, arbitrary: nearBody },
  );

  function check(incoming: IncomingDeviceMessage): void {
    const result = decodeDeviceMessage(incoming);
    if (isRefusal(result)) {
      expect(typeof result.reason).toBe('string');
      expect(typeof result.detail).toBe('string');
      return;
    }
    expect(result.deviceId).toMatch(ID);
    if (result.productId !== undefined) expect(result.productId).toMatch(ID);
    expect(INBOUND_MESSAGE_TYPES).toContain(result.messageType);
    if (result.timestamp !== undefined) expect(Number.isFinite(result.timestamp) && result.timestamp >= 0).toBe(true);
    if (result.messageType === 'UPGRADE_FIRMWARE_PROGRESS') {
      expect(Number.isInteger(result.progress) && result.progress >= 0 && result.progress <= 100).toBe(true);
    }
  }

  it('with ids from the transport (valid or absent) and any body', () => {
    let accepted = 0;
    fc.assert(
      fc.property(messageType, fc.option(validId, { nil: undefined }), fc.option(validId, { nil: undefined }), body, (type, productId, deviceId, payload) => {
        const incoming: IncomingDeviceMessage = { messageType: type, body: payload };
        if (productId !== undefined) incoming.productId = productId;
        if (deviceId !== undefined) incoming.deviceId = deviceId;
        check(incoming);
        if (!isRefusal(decodeDeviceMessage(incoming))) accepted += 1;
      }),
      { seed: 42, numRuns: 2000 },
    );
    // the generators do reach the acceptance paths
    expect(accepted).toBeGreaterThan(20);
  });

  it('with a transport error set, always the transport refusal', () => {
    fc.assert(
      fc.property(messageType, body, fc.constantFrom('bad_json' as const, 'unknown_topic' as const, 'too_large' as const), (type, payload, transportError) => {
        const result = decodeDeviceMessage({ messageType: type, deviceId: 'dev-1', body: payload, transportError });
        expect(isRefusal(result) && result.reason).toBe(transportError);
      }),
      { seed: 42, numRuns: 500 },
    );
  });

  // docs/rest-api.md#conventions: "Device, product and gateway ids are 1–64 characters of A-Z a-z 0-9 _ - . :". The MQTT
  // connector passes the topic's levels through unchecked, and the decoder validates only payload
  // ids, so `/prod-1/dev 1/firmware/report` is accepted for device "dev 1" (and a report registers it).
  it('ids taken from the transport are validated like payload ids', () => {
    fc.assert(
      fc.property(messageType, fc.string({ maxLength: 80 }), fc.string({ maxLength: 80 }), body, (type, productId, deviceId, payload) => {
        check({ messageType: type, productId, deviceId, body: payload });
      }),
      { seed: 42, numRuns: 2000 },
    );
  });

  it('a report from a topic whose device id is not an id is refused', () => {
    const result = decodeDeviceMessage({ messageType: 'REPORT_FIRMWARE', productId: 'prod-1', deviceId: 'dev 1', body: { version: '1' } });
    expect(isRefusal(result)).toBe(true);
  });
});

describe('size limits', () => {
  const manyProperties = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i]));

  it.each(['REPORT_FIRMWARE', 'READ_FIRMWARE_REPLY'])('%s: 64 properties are taken, 65 or 10,000 are too_large', (type) => {
    const base = type === 'REPORT_FIRMWARE' ? { version: '1' } : { messageId: 'r', version: '1' };
    expect(decoded(fromTopic(type, { ...base, properties: manyProperties(64) }))).toMatchObject({ properties: manyProperties(64) });
    for (const n of [65, 10_000]) {
      expect(refused(fromTopic(type, { ...base, properties: manyProperties(n) }))).toMatchObject({
        reason: 'too_large',
        detail: `properties: ${n} entries, at most 64 are taken`,
        deviceId: 'dev-1',
      });
    }
  });

  it('properties over 8 KiB as JSON are too_large, whatever else is wrong with them', () => {
    const big = { a: 'x'.repeat(8 * 1024) };
    expect(refused(fromTopic('REPORT_FIRMWARE', { version: '1', properties: big })).reason).toBe('too_large');
    // keys longer than allowed, but too many of them first: too_large, not invalid_message
    const longKeys = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`${'k'.repeat(200)}${i}`, i]));
    expect(refused(fromTopic('REPORT_FIRMWARE', { version: '1', properties: longKeys })).reason).toBe('too_large');
    const justUnder = { a: 'x'.repeat(8 * 1024 - 8) };
    expect(Buffer.byteLength(JSON.stringify(justUnder))).toBe(8 * 1024);
    expect(decoded(fromTopic('REPORT_FIRMWARE', { version: '1', properties: justUnder }))).toMatchObject({ properties: justUnder });
  });

  it('errorReason and message are cut to 1,024 characters, not refused', () => {
    const progress = decoded(fromTopic('UPGRADE_FIRMWARE_PROGRESS', { ...VALID_BODIES.UPGRADE_FIRMWARE_PROGRESS, errorReason: 'e'.repeat(100_000) }));
    expect(progress).toMatchObject({ errorReason: 'e'.repeat(1024) });
    const fromMessage = decoded(fromTopic('UPGRADE_FIRMWARE_PROGRESS', { ...VALID_BODIES.UPGRADE_FIRMWARE_PROGRESS, message: 'm'.repeat(2000) }));
    expect(fromMessage).toMatchObject({ errorReason: 'm'.repeat(1024) });
    const reply = decoded(fromTopic('UPGRADE_FIRMWARE_REPLY', { messageId: 'm', success: false, message: 'x'.repeat(1025) }));
    expect(reply).toMatchObject({ message: 'x'.repeat(1024) });
    // never through a surrogate pair: PostgreSQL cannot store half of one
    const emoji = decoded(fromTopic('UPGRADE_FIRMWARE_REPLY', { messageId: 'm', success: false, message: 'x'.repeat(1023) + '😀'.repeat(10) }));
    expect((emoji as { message: string }).message).toBe('x'.repeat(1023));
  });

  it('a payload the MQTT filter dropped is too_large, with its size', () => {
    expect(refused(fromTopic('REPORT_FIRMWARE', undefined, { transportError: 'too_large', payloadBytes: 10_485_760 }))).toEqual({
      refused: true,
      reason: 'too_large',
      detail: 'payload of 10485760 bytes is larger than the limit (DEVICE_MESSAGE_MAX_BYTES)',
      messageType: 'REPORT_FIRMWARE',
      deviceId: 'dev-1',
    });
  });
});
