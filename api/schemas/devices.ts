// Devices as the API takes and shows them (docs/rest-api.md#devices), and the row → JSON mapper.
import { Type, type Static } from 'typebox';
import type { DeviceRow } from '../../db/database.ts';
import { EntityId, NullableTimestamp, Page, PagingQuery, Timestamp, iso } from './common.ts';
import { UpgradeRecord } from './records.ts';

export const MAX_DEVICES_PER_UPSERT = 10_000;

export const DeviceName = Type.String({ maxLength: 128 });
export const FirmwareVersion = Type.String({ minLength: 1, maxLength: 64 });

export const DeviceUpsert = Type.Object({
  id: EntityId,
  productId: EntityId,
  name: Type.Optional(DeviceName),
  firmwareVersion: Type.Optional(FirmwareVersion),
  gatewayId: Type.Optional(Type.Union([EntityId, Type.Null()], {
    description: 'the gateway this child device talks through (its messages use the gateway\'s child topics); null: none. Omitted: unchanged.',
  })),
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
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}
