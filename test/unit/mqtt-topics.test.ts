// The MQTT topics of docs/device-protocol.md#topics: inbound topics parsed into ids and message type, outbound topics
// built, and the shared subscriptions the service makes.
import { describe, expect, it } from 'vitest';
import { inboundSubscriptions, isOutboundTopic, outboundTopic, parseInboundTopic } from '../../protocols/mqtt-topics.ts';

/** MQTT topic-filter matching: `+` is one level, a trailing `#` is that level and all below it. */
function matches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i += 1) {
    if (f[i] === '#') return i === f.length - 1 && t.length >= i;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

/** The topic filter of a shared subscription `$share/{group}/{filter}`. */
function unshared(subscription: string, group: string): string {
  const prefix = `$share/${group}/`;
  expect(subscription.startsWith(prefix)).toBe(true);
  return subscription.slice(prefix.length);
}

const INBOUND_TOPICS = [
  '/prod-1/dev-1/firmware/upgrade/reply',
  '/prod-1/dev-1/firmware/upgrade/progress',
  '/prod-1/dev-1/firmware/pull',
  '/prod-1/dev-1/firmware/report',
  '/prod-1/dev-1/firmware/read/reply',
];

describe('parseInboundTopic', () => {
  it.each([
    ['/prod-1/dev-1/firmware/upgrade/reply', 'UPGRADE_FIRMWARE_REPLY'],
    ['/prod-1/dev-1/firmware/upgrade/progress', 'UPGRADE_FIRMWARE_PROGRESS'],
    ['/prod-1/dev-1/firmware/pull', 'REQUEST_FIRMWARE'],
    ['/prod-1/dev-1/firmware/report', 'REPORT_FIRMWARE'],
    ['/prod-1/dev-1/firmware/read/reply', 'READ_FIRMWARE_REPLY'],
  ])('%s → %s', (topic, messageType) => {
    expect(parseInboundTopic(topic)).toEqual({ productId: 'prod-1', deviceId: 'dev-1', messageType });
  });

  it('keeps ids with the other allowed characters', () => {
    expect(parseInboundTopic('/P.x_1:a/d-9.Z:0/firmware/report')).toEqual({ productId: 'P.x_1:a', deviceId: 'd-9.Z:0', messageType: 'REPORT_FIRMWARE' });
  });

  it.each([
    // the platform's own outbound topics are not inbound
    '/prod-1/dev-1/firmware/upgrade',
    '/prod-1/dev-1/firmware/pull/reply',
    '/prod-1/dev-1/firmware/read',
    // unknown suffixes
    '/prod-1/dev-1/firmware/unknown',
    '/prod-1/dev-1/firmware/report/extra',
    '/prod-1/dev-1/firmware/report/',
    '/prod-1/dev-1/firmware/Report',
    '/prod-1/dev-1/properties/report',
    '/prod-1/dev-1/x/firmware/report',
    '/prod-1/firmware/report',
  ])('unknown suffix: %s → undefined', (topic) => {
    expect(parseInboundTopic(topic)).toBeUndefined();
  });

  it.each([
    '//dev-1/firmware/report',
    '/prod-1//firmware/report',
    '///firmware/report',
    '/prod-1/dev-1/firmware',
    '/prod-1/dev-1',
    '/',
    '',
  ])('missing parts: %j → undefined', (topic) => {
    expect(parseInboundTopic(topic)).toBeUndefined();
  });

  it.each(['prod-1/dev-1/firmware/report', 'x/prod-1/dev-1/firmware/report', ' /prod-1/dev-1/firmware/report', '$share/otter//prod-1/dev-1/firmware/report'])(
    'not starting with "/": %j → undefined',
    (topic) => {
      expect(parseInboundTopic(topic)).toBeUndefined();
    },
  );
});

describe('outboundTopic', () => {
  it.each([
    ['UPGRADE_FIRMWARE', '/prod-1/dev-1/firmware/upgrade'],
    ['REQUEST_FIRMWARE_REPLY', '/prod-1/dev-1/firmware/pull/reply'],
    ['READ_FIRMWARE', '/prod-1/dev-1/firmware/read'],
  ] as const)('%s → %s', (messageType, topic) => {
    expect(outboundTopic(messageType, 'prod-1', 'dev-1')).toBe(topic);
  });

  it('no outbound topic parses as an inbound one', () => {
    for (const type of ['UPGRADE_FIRMWARE', 'REQUEST_FIRMWARE_REPLY', 'READ_FIRMWARE'] as const) {
      expect(parseInboundTopic(outboundTopic(type, 'p', 'd'))).toBeUndefined();
    }
  });

  it('a reply topic parses back to the ids the request went to', () => {
    const upgrade = outboundTopic('UPGRADE_FIRMWARE', 'prod:7', 'dev.7');
    expect(parseInboundTopic(`${upgrade}/reply`)).toEqual({ productId: 'prod:7', deviceId: 'dev.7', messageType: 'UPGRADE_FIRMWARE_REPLY' });
    const read = outboundTopic('READ_FIRMWARE', 'prod:7', 'dev.7');
    expect(parseInboundTopic(`${read}/reply`)).toEqual({ productId: 'prod:7', deviceId: 'dev.7', messageType: 'READ_FIRMWARE_REPLY' });
  });
});

describe('inboundSubscriptions', () => {
  it('are shared subscriptions of the group: the two one-level inbound topics, and every deeper firmware topic, direct and under gateways', () => {
    expect(inboundSubscriptions('otter')).toEqual([
      '$share/otter//+/+/firmware/report',
      '$share/otter//+/+/firmware/pull',
      '$share/otter//+/+/firmware/+/+/#',
      '$share/otter//+/+/child/+/firmware/report',
      '$share/otter//+/+/child/+/firmware/pull',
      '$share/otter//+/+/child/+/firmware/+/+/#',
      '$share/otter//+/+/child-reply/+/firmware/report',
      '$share/otter//+/+/child-reply/+/firmware/pull',
      '$share/otter//+/+/child-reply/+/firmware/+/+/#',
    ]);
    expect(inboundSubscriptions('workers-b')[0]).toBe('$share/workers-b//+/+/firmware/report');
  });

  it("do not bring the platform's own pushes and reads back to it", () => {
    const filters = inboundSubscriptions('otter').map((s) => unshared(s, 'otter'));
    for (const topic of ['/prod-1/dev-1/firmware/upgrade', '/prod-1/dev-1/firmware/read']) {
      expect(filters.some((filter) => matches(filter, topic)), topic).toBe(false);
    }
  });

  it('its filters match every inbound topic, with any ids', () => {
    const filters = inboundSubscriptions('otter').map((s) => unshared(s, 'otter'));
    for (const topic of [...INBOUND_TOPICS, ...INBOUND_TOPICS.map((t) => t.replace('prod-1/dev-1', 'P:x/d.9'))]) {
      expect(filters.some((filter) => matches(filter, topic))).toBe(true);
    }
  });

  it('they also catch unknown firmware topics, so those are refused rather than never seen', () => {
    const filters = inboundSubscriptions('otter').map((s) => unshared(s, 'otter'));
    expect(filters.some((filter) => matches(filter, '/prod-1/dev-1/firmware/upgrade/status'))).toBe(true);
    expect(filters.some((filter) => matches(filter, '/prod-1/dev-1/firmware/a/b/c'))).toBe(true);
    expect(filters.some((filter) => matches(filter, '/prod-1/dev-1/properties/report'))).toBe(false);
    expect(filters.some((filter) => matches(filter, 'prod-1/dev-1/firmware/report'))).toBe(false);
  });

  it('the matcher used here follows MQTT', () => {
    expect(matches('/+/+/firmware/#', '/p/d/firmware')).toBe(true);
    expect(matches('/+/+/firmware/#', '/p/d/firmware/a/b')).toBe(true);
    expect(matches('/+/+/firmware/#', '/p/firmware/x')).toBe(false);
    expect(matches('/+/+/firmware/report', '/p/d/firmware/report')).toBe(true);
    expect(matches('/+/+/firmware/report', '/p/d/firmware/report/x')).toBe(false);
  });
});

describe('isOutboundTopic', () => {
  it.each(['/prod-1/dev-1/firmware/upgrade', '/prod-1/dev-1/firmware/pull/reply', '/prod-1/dev-1/firmware/read'])('%s is the platform\'s own', (topic) => {
    expect(isOutboundTopic(topic)).toBe(true);
  });

  it('every topic outboundTopic builds is outbound', () => {
    for (const type of ['UPGRADE_FIRMWARE', 'REQUEST_FIRMWARE_REPLY', 'READ_FIRMWARE'] as const) {
      expect(isOutboundTopic(outboundTopic(type, 'P:x', 'd.9'))).toBe(true);
    }
  });

  it.each([...INBOUND_TOPICS, '/prod-1/dev-1/firmware/upgrade/x', '/prod-1/dev-1/firmware/unknown', 'prod-1/dev-1/firmware/upgrade', 'x/prod-1/dev-1/firmware/upgrade', '/prod-1/firmware/upgrade', '/prod-1/dev-1/x/firmware/read', ''])(
    '%j is not',
    (topic) => {
      expect(isOutboundTopic(topic)).toBe(false);
    },
  );
});

describe('child devices behind a gateway', () => {
  const gateway = { gatewayId: 'gw-1', gatewayProductId: 'gw-prod' };

  it.each([
    ['child', 'upgrade/reply', 'UPGRADE_FIRMWARE_REPLY'],
    ['child', 'upgrade/progress', 'UPGRADE_FIRMWARE_PROGRESS'],
    ['child', 'pull', 'REQUEST_FIRMWARE'],
    ['child', 'report', 'REPORT_FIRMWARE'],
    ['child', 'read/reply', 'READ_FIRMWARE_REPLY'],
    ['child-reply', 'upgrade/reply', 'UPGRADE_FIRMWARE_REPLY'],
    ['child-reply', 'upgrade/progress', 'UPGRADE_FIRMWARE_PROGRESS'],
    ['child-reply', 'read/reply', 'READ_FIRMWARE_REPLY'],
  ])('/gw-prod/gw-1/%s/c-1/firmware/%s → %s for the child, through the gateway', (level, suffix, messageType) => {
    const parsed = parseInboundTopic(`/gw-prod/gw-1/${level}/c-1/firmware/${suffix}`);
    expect(parsed).toEqual({ deviceId: 'c-1', messageType, gateway });
    // the topic names the gateway's product, never the child's
    expect(parsed?.productId).toBeUndefined();
  });

  it.each([
    '/gw-prod/gw-1/child/c-1/firmware/upgrade',
    '/gw-prod/gw-1/child/c-1/firmware/unknown',
    '/gw-prod/gw-1/child//firmware/report',
    '/gw-prod/gw-1/child/c-1/report',
    '/gw-prod/gw-1/children/c-1/firmware/report',
    '/gw-prod/gw-1/child/c-1/x/firmware/report',
  ])('%j is not an inbound topic', (topic) => {
    expect(parseInboundTopic(topic)).toBeUndefined();
  });

  it("a child's messages go to the gateway's child topics, with the child's id", () => {
    expect(outboundTopic('UPGRADE_FIRMWARE', 'child-prod', 'c-1', gateway)).toBe('/gw-prod/gw-1/child/c-1/firmware/upgrade');
    expect(outboundTopic('REQUEST_FIRMWARE_REPLY', 'child-prod', 'c-1', gateway)).toBe('/gw-prod/gw-1/child/c-1/firmware/pull/reply');
    expect(outboundTopic('READ_FIRMWARE', 'child-prod', 'c-1', gateway)).toBe('/gw-prod/gw-1/child/c-1/firmware/read');
    expect(outboundTopic('UPGRADE_FIRMWARE', 'child-prod', 'c-1', null)).toBe('/child-prod/c-1/firmware/upgrade');
  });

  it("the platform's own child messages are outbound, do not parse as inbound, and its pushes and reads are not subscribed to", () => {
    const filters = inboundSubscriptions('otter').map((s) => unshared(s, 'otter'));
    for (const type of ['UPGRADE_FIRMWARE', 'REQUEST_FIRMWARE_REPLY', 'READ_FIRMWARE'] as const) {
      const topic = outboundTopic(type, 'child-prod', 'c-1', gateway);
      expect(isOutboundTopic(topic), topic).toBe(true);
      expect(parseInboundTopic(topic), topic).toBeUndefined();
    }
    for (const topic of ['/gw-prod/gw-1/child/c-1/firmware/upgrade', '/gw-prod/gw-1/child/c-1/firmware/read']) {
      expect(filters.some((filter) => matches(filter, topic)), topic).toBe(false);
    }
  });

  it("a device's reply on child-reply is not taken for the platform's own", () => {
    expect(isOutboundTopic('/gw-prod/gw-1/child-reply/c-1/firmware/pull/reply')).toBe(false);
    expect(isOutboundTopic('/gw-prod/gw-1/child/c-1/firmware/upgrade/reply')).toBe(false);
  });

  it('every inbound child topic is subscribed to by exactly one filter (nothing arrives twice)', () => {
    const filters = inboundSubscriptions('otter').map((s) => unshared(s, 'otter'));
    const topics = [
      ...INBOUND_TOPICS,
      ...INBOUND_TOPICS.map((t) => t.replace('/prod-1/dev-1/', '/gw-prod/gw-1/child/c-1/')),
      ...INBOUND_TOPICS.map((t) => t.replace('/prod-1/dev-1/', '/gw-prod/gw-1/child-reply/c-1/')),
      '/p/d/firmware/child/x/firmware/report',
      '/p/d/child/x/firmware/a/b/c',
    ];
    for (const topic of topics) {
      expect(filters.filter((filter) => matches(filter, topic)), topic).toHaveLength(1);
    }
  });
});
