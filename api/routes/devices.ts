// Device routes (docs/rest-api.md#devices): bulk upsert, list, detail with the active upgrade,
// delete, and the device's upgrade history. Thin handlers over db/queries.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { conflict, notFound, validationError } from '../../core/errors.ts';
import { deleteDevice, findDevice, listDevices, upsertDevices } from '../../db/queries/devices.ts';
import { findActiveRecordForDevice, listDeviceRecords } from '../../db/queries/records.ts';
import { EntityIdParams, ErrorReply, Page, PagingQuery, paging } from '../schemas/common.ts';
import {
  DeviceDetail,
  DeviceListQuery,
  DevicePage,
  UpsertDevicesBody,
  UpsertDevicesReply,
  deviceToJson,
  parseTagQuery,
} from '../schemas/devices.ts';
import { UpgradeRecord, recordToJson } from '../schemas/records.ts';

const tags = ['devices'];

const deviceRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.put('/devices', {
    schema: {
      tags,
      summary: 'Register or update up to 10,000 devices in one call',
      description: 'Upserts by id. An omitted name, firmwareVersion, gatewayId or tags keeps the stored one '
        + '(gatewayId null takes the device away from its gateway; tags given replace all of them, {} removes them); '
        + 'a device listed twice counts once, with its last entry.',
      body: UpsertDevicesBody,
      response: { 200: UpsertDevicesReply, 400: ErrorReply },
    },
  }, async (request) => {
    const index = request.body.devices.findIndex((device) => device.gatewayId === device.id);
    if (index >= 0) {
      throw validationError(`devices[${index}]: a device cannot be its own gateway`, [{ path: `/devices/${index}/gatewayId`, message: 'a device cannot be its own gateway' }]);
    }
    return { upserted: await upsertDevices(app.db, request.body.devices) };
  });

  app.get('/devices', {
    schema: {
      tags,
      summary: 'List devices, ordered by id',
      description: 'Filters combine: `tag=region:eu&tag=hw:rev2` lists the devices having both tags.',
      querystring: DeviceListQuery,
      response: { 200: DevicePage, 400: ErrorReply },
    },
  }, async (request) => {
    const { page, pageSize, offset } = paging(request.query);
    const { productId, firmwareVersion, tag } = request.query;
    const filter = { productId, firmwareVersion, tags: parseTagQuery(tag) };
    const { rows, total } = await listDevices(app.db, filter, { limit: pageSize, offset });
    return { items: rows.map(deviceToJson), total, page, pageSize };
  });

  app.get('/devices/:id', {
    schema: {
      tags,
      summary: 'One device, with its active upgrade record',
      params: EntityIdParams,
      response: { 200: DeviceDetail, 400: ErrorReply, 404: ErrorReply },
    },
  }, async (request) => {
    const { id } = request.params;
    const [device, active] = await Promise.all([findDevice(app.db, id), findActiveRecordForDevice(app.db, id)]);
    if (!device) throw notFound('device', id);
    return { ...deviceToJson(device), activeRecord: active ? recordToJson(active) : null };
  });

  app.delete('/devices/:id', {
    schema: {
      tags,
      summary: 'Delete a device',
      description: 'Refused with 409 device_busy while the device has a waiting or processing upgrade record: '
        + 'cancel that upgrade first. Its finished records stay in their tasks. Its device certificates are revoked.',
      params: EntityIdParams,
      response: {
        204: Type.Null({ description: 'deleted' }),
        400: ErrorReply,
        404: ErrorReply,
        409: ErrorReply,
      },
    },
  }, async (request, reply) => {
    const { id } = request.params;
    const outcome = await deleteDevice(app.db, id);
    if (outcome === 'not_found') throw notFound('device', id);
    if (outcome === 'busy') {
      throw conflict('device_busy', `device ${id} has an active upgrade; cancel it first`);
    }
    // a deleted device must not keep a way into the broker
    await app.deviceCredentials.revokeAll(id);
    return reply.code(204).send(null);
  });

  app.get('/devices/:id/records', {
    schema: {
      tags,
      summary: "The device's upgrade records, newest first",
      params: EntityIdParams,
      querystring: Type.Object({ ...PagingQuery }),
      response: { 200: Page(UpgradeRecord), 400: ErrorReply, 404: ErrorReply },
    },
  }, async (request) => {
    const { id } = request.params;
    const { page, pageSize, offset } = paging(request.query);
    const [device, { rows, total }] = await Promise.all([
      findDevice(app.db, id),
      listDeviceRecords(app.db, id, { limit: pageSize, offset }),
    ]);
    if (!device) throw notFound('device', id);
    return { items: rows.map(recordToJson), total, page, pageSize };
  });
};

export default deviceRoutes;
