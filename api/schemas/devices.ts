// Devices as the API takes and shows them (docs/rest-api.md#devices), and the row → JSON mapper.
import { Type, type Static } from 'typebox';
import type { DeviceRow } from '../../db/database.ts';
import { EntityId, NullableTimestamp, Page, PagingQuery, Timestamp, iso } from './common.ts';
import { UpgradeRecord } from './records.ts';

export const MAX_DEVICES_PER_UPSERT = 10_000;

export const DeviceName = Type.String({ maxLength: 128 });
export const FirmwareVersion = Type.String({ minLength: 1, maxLength: 64 });

export const MAX_TAGS = 32;
/** A tag key: no ':' (the `tag=k:v` query splits on the first one) and no spaces. */
export const TAG_KEY_PATTERN = '^[A-Za-z0-9_.-]{1,64}$';
const TAG_QUERY_PATTERN = '^[A-Za-z0-9_.-]{1,64}:';
// jsonb refuses a lone UTF-16 surrogate (valid JSON, not valid Unicode): a 400 here, not a 500 there
export const TagValue = Type.String({ maxLength: 256, pattern: '^[^\\uD800-\\uDFFF]*$' });

// A map, so left open by api/plugins/validation.ts: propertyNames judges its keys, the pattern
// property its values (docs/rest-api.md#devices).
function tagMap(options: { minProperties?: number; description: string }) {
  return Type.Record(Type.String(), TagValue, { propertyNames: { pattern: TAG_KEY_PATTERN }, maxProperties: MAX_TAGS, ...options });
}

export const Tags = tagMap({
  description: `labels to select devices by, e.g. { "region": "eu" }: at most ${MAX_TAGS}, keys 1–64 of A–Z a–z 0–9 _ . -, values up to 256 characters`,
});
/** A release's selection by tags; `{}` would be every device, which `allDevices` says. */
export const TagSelection = tagMap({ minProperties: 1, description: 'the devices of the product having all these tags' });
export type TagsJson = Static<typeof Tags>;

export const DeviceUpsert = Type.Object({
  id: EntityId,
  productId: EntityId,
  name: Type.Optional(DeviceName),
  firmwareVersion: Type.Optional(FirmwareVersion),
  gatewayId: Type.Optional(Type.Union([EntityId, Type.Null()], {
    description: 'the gateway this child device talks through (its messages use the gateway\'s child topics); null: none. Omitted: unchanged.',
  })),
  // given: replaces all of the device's tags ({} removes them); omitted: unchanged
  tags: Type.Optional(Tags),
}, { additionalProperties: false });
export type DeviceUpsertJson = Static<typeof DeviceUpsert>;

export const UpsertDevicesBody = Type.Object({
  devices: Type.Array(DeviceUpsert, { minItems: 1, maxItems: MAX_DEVICES_PER_UPSERT }),
});

export const UpsertDevicesReply = Type.Object({
  upserted: Type.Integer({ description: 'distinct devices inserted or updated' }),
});

export const DeviceListQuery = Type.Object({
  productId: Type.Optional(EntityId),
  firmwareVersion: Type.Optional(FirmwareVersion),
  tag: Type.Optional(Type.Array(Type.String({ pattern: TAG_QUERY_PATTERN, maxLength: 64 + 1 + 256 }), {
    maxItems: MAX_TAGS,
    description: 'key:value, split on the first \':\' (the value may hold more); repeated: a device must have all of them',
  })),
  ...PagingQuery,
});

export const Device = Type.Object({
  id: EntityId,
  productId: EntityId,
  name: Type.Union([Type.String(), Type.Null()]),
  firmwareVersion: Type.Union([Type.String(), Type.Null()]),
  firmwareProperties: Type.Union([
    Type.Object({}, { additionalProperties: true, description: 'as last reported by the device' }),
    Type.Null(),
  ]),
  firmwareReportedAt: NullableTimestamp,
  gatewayId: Type.Union([EntityId, Type.Null()], { description: 'the gateway this child device talks through, or null' }),
  tags: Type.Record(Type.String(), Type.String(), { description: 'the device\'s tags; {} when none' }),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});
export type DeviceJson = Static<typeof Device>;

export const DeviceDetail = Type.Object({
  ...Device.properties,
  activeRecord: Type.Union([UpgradeRecord, Type.Null()], {
    description: 'the waiting or processing upgrade record of the device, if any',
  }),
});

export const DevicePage = Page(Device);

export function deviceToJson(row: DeviceRow): DeviceJson {
  return {
    id: row.id,
    productId: row.product_id,
    name: row.name,
    firmwareVersion: row.firmware_version,
    firmwareProperties: row.firmware_properties,
    firmwareReportedAt: iso(row.firmware_reported_at),
    gatewayId: row.gateway_id,
    tags: row.tags,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}

/** `tag=k:v` query values as key/value pairs, split on the first ':' (keys hold none). */
export function parseTagQuery(values: readonly string[] | undefined): Array<[string, string]> | undefined {
  if (values === undefined) return undefined;
  return values.map((value) => {
    const colon = value.indexOf(':');
    return [value.slice(0, colon), value.slice(colon + 1)];
  });
}
