// Schemas of the firmware catalogue routes (docs/rest-api.md#firmware) and the mapping between the
// API's camelCase firmware object and the snake_case row.
import { Type, type Static, type TSchema } from 'typebox';
import type { FirmwareRow, FirmwareUpdate, NewFirmwareRow } from '../../db/database.ts';
import { EntityId, PagingQuery, Page, Timestamp, Uuid, iso } from './common.ts';

const Name = Type.String({ minLength: 1, maxLength: 128 });
const Version = Type.String({ minLength: 1, maxLength: 64, description: 'the version reported by devices, e.g. 1.2.0' });
const VersionOrder = Type.Integer({
  minimum: 0,
  maximum: 2 ** 31 - 1,
  description: 'orders the versions of a product; unique per product',
});
const DownloadUrl = Type.String({ maxLength: 3000, pattern: '^https?://\\S+$', description: 'http or https URL of the file' });
const Sign = Type.String({ pattern: '^[0-9a-fA-F]{0,128}$', maxLength: 128, description: 'hex digest of the file' });
export const SignMethod = Type.Unsafe<'md5' | 'sha256'>({ type: 'string', enum: ['md5', 'sha256'] });
const Size = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'file size in bytes' });
const Properties = Type.Record(Type.String(), Type.String({ maxLength: 1024 }), {
  maxProperties: 64,
  description: 'handed to devices as `parameters`',
});
const Description = Type.String({ maxLength: 2000 });

function nullable<T extends TSchema>(schema: T) {
  return Type.Union([schema, Type.Null()]);
}

export const CreateFirmwareBody = Type.Object({
  productId: EntityId,
  name: Name,
  version: Version,
  versionOrder: VersionOrder,
  url: Type.Optional(DownloadUrl),
  sign: Type.Optional(Sign),
  signMethod: Type.Optional(SignMethod),
  size: Type.Optional(Size),
  properties: Type.Optional(Properties),
  description: Type.Optional(Description),
}, { additionalProperties: false });
export type CreateFirmwareBody = Static<typeof CreateFirmwareBody>;

/** Any of the create fields; the optional ones may be cleared with null. */
export const UpdateFirmwareBody = Type.Object({
  productId: Type.Optional(EntityId),
  name: Type.Optional(Name),
  version: Type.Optional(Version),
  versionOrder: Type.Optional(VersionOrder),
  url: Type.Optional(nullable(DownloadUrl)),
  sign: Type.Optional(nullable(Sign)),
  signMethod: Type.Optional(nullable(SignMethod)),
  size: Type.Optional(nullable(Size)),
  properties: Type.Optional(Properties),
  description: Type.Optional(nullable(Description)),
}, { additionalProperties: false, minProperties: 1 });
export type UpdateFirmwareBody = Static<typeof UpdateFirmwareBody>;

export const FirmwareListQuery = Type.Object({
  productId: Type.Optional(EntityId),
  q: Type.Optional(Type.String({ maxLength: 128, description: 'part of the name or version, case-insensitive' })),
  ...PagingQuery,
});

export const UploadQuery = Type.Object({
  signMethod: Type.Optional(Type.Unsafe<'md5' | 'sha256'>({ type: 'string', enum: ['md5', 'sha256'], default: 'sha256' })),
});

/** The upload body as OpenAPI shows it; read as a stream, never validated as JSON. */
export const UploadBody = {
  content: {
    'application/octet-stream': { schema: Type.String({ format: 'binary', description: 'the firmware file' }) },
    'multipart/form-data': {
      schema: Type.Object({ file: Type.String({ format: 'binary', description: 'the firmware file' }) }),
    },
  },
};

export const Firmware = Type.Object({
  id: Uuid,
  productId: Type.String(),
  name: Type.String(),
  version: Type.String(),
  versionOrder: Type.Integer(),
  url: nullable(Type.String()),
  sign: nullable(Type.String()),
  signMethod: nullable(SignMethod),
  size: nullable(Type.Integer()),
  properties: Type.Record(Type.String(), Type.String()),
  description: nullable(Type.String()),
  hasFile: Type.Boolean({ description: 'a file was uploaded and is served at `url`' }),
  revision: Type.Integer({ description: 'raised by every change; the ETag is this number in quotes, for If-Match' }),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});
export type Firmware = Static<typeof Firmware>;

export const FirmwarePage = Page(Firmware);

export function toFirmware(row: FirmwareRow): Firmware {
  return {
    id: row.id,
    productId: row.product_id,
    name: row.name,
    version: row.version,
    versionOrder: row.version_order,
    url: row.url,
    sign: row.sign,
    signMethod: row.sign_method,
    size: row.size,
    properties: row.properties ?? {},
    description: row.description,
    hasFile: row.has_file,
    revision: row.revision,
    createdAt: iso(row.created_at)!,
    updatedAt: iso(row.updated_at)!,
  };
}

export function newFirmwareRow(body: CreateFirmwareBody): NewFirmwareRow {
  return {
    product_id: body.productId,
    name: body.name,
    version: body.version,
    version_order: body.versionOrder,
    url: body.url ?? null,
    sign: body.sign ?? null,
    sign_method: body.signMethod ?? null,
    size: body.size ?? null,
    properties: JSON.stringify(body.properties ?? {}),
    description: body.description ?? null,
  };
}

/** The columns a PATCH body changes; empty when it names none of the fields. */
export function firmwareChanges(body: UpdateFirmwareBody): FirmwareUpdate {
  const changes: FirmwareUpdate = {};
  if (body.productId !== undefined) changes.product_id = body.productId;
  if (body.name !== undefined) changes.name = body.name;
  if (body.version !== undefined) changes.version = body.version;
  if (body.versionOrder !== undefined) changes.version_order = body.versionOrder;
  if (body.url !== undefined) changes.url = body.url;
  if (body.sign !== undefined) changes.sign = body.sign;
  if (body.signMethod !== undefined) changes.sign_method = body.signMethod;
  if (body.size !== undefined) changes.size = body.size;
  if (body.properties !== undefined) changes.properties = JSON.stringify(body.properties);
  if (body.description !== undefined) changes.description = body.description;
  return changes;
}
