// Device credentials: certificates from Otter as the devices' CA, for a batch of devices or for one
// device's CSR, and their revocation. Also makes the service available to the device routes
// (`app.deviceCredentials`), since deleting a device revokes its certificates: register it first.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import fp from 'fastify-plugin';
import { ErrorReply, EntityIdParams } from '../schemas/common.ts';
import { CredentialsBody, CredentialsReply, RevokeCredentialsReply } from '../schemas/device-credentials.ts';
import { DeviceCredentials } from '../../services/device-credentials.ts';

declare module 'fastify' {
  interface FastifyInstance {
    deviceCredentials: DeviceCredentials;
  }
}

const tags = ['devices'];

const deviceCredentialRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const credentials = await DeviceCredentials.open({ config: app.config, db: app.db, logger: app.log });
  app.decorate('deviceCredentials', credentials);
  app.addHook('onClose', async () => credentials.close());

  app.post('/devices/credentials', {
    schema: {
      tags,
      summary: 'Issue device certificates (Otter as the devices\' CA)',
      description: 'Either `{ deviceIds }` (up to 1,000 registered devices): a new EC P-256 key pair and certificate '
        + 'for each; or `{ deviceId, csr }`: a certificate for the key of a device that keeps its own. '
        + 'The certificate\'s subject CN is the device id, which the broker uses as its user name. '
        + 'An unregistered device → 422 `unknown_device` (nothing is issued); a CSR that does not verify → 400 `invalid_csr`; '
        + 'no CA configured → 409 `device_ca_not_configured`. The answer is never cached (`Cache-Control: no-store`).',
      body: CredentialsBody,
      response: { 200: CredentialsReply, 400: ErrorReply, 409: ErrorReply, 422: ErrorReply },
    },
  }, async (request, reply) => {
    reply.header('cache-control', 'no-store');
    const body = request.body;
    if ('deviceIds' in body) return { items: await credentials.issue(body.deviceIds) };
    return credentials.signRequest(body.deviceId, body.csr);
  });

  app.post('/devices/:id/credentials/revoke', {
    schema: {
      tags,
      summary: 'Revoke every certificate of a device',
      description: 'Adds them to the CRL (DEVICE_CRL_FILE), which the broker reads: from the time the broker has '
        + 're-read it, the device can no longer connect. A connection already open stays until it closes. '
        + 'Deleting a device revokes its certificates too.',
      params: EntityIdParams,
      response: { 200: RevokeCredentialsReply, 400: ErrorReply, 404: ErrorReply, 409: ErrorReply },
    },
  }, async (request) => {
    const { id } = request.params;
    return { deviceId: id, revoked: await credentials.revoke(id) };
  });
};

export default fp(deviceCredentialRoutes, { name: 'device-credentials' });
