// Device credentials as the API takes and gives them: a batch of device ids or one CSR in, PEM
// certificates (and, for a batch, private keys) out; the answer to a revocation.
import { Type } from 'typebox';
import { EntityId } from './common.ts';

export const MAX_DEVICES_PER_CREDENTIALS_CALL = 1_000;

const Pem = (description: string) => Type.String({ description });

export const IssueCredentialsBody = Type.Object({
  deviceIds: Type.Array(EntityId, {
    minItems: 1,
    maxItems: MAX_DEVICES_PER_CREDENTIALS_CALL,
    uniqueItems: true,
    description: 'registered devices; one unknown id refuses the whole call (422 unknown_device)',
  }),
}, { title: 'IssueCredentials' });

export const SignCsrBody = Type.Object({
  deviceId: EntityId,
  csr: Type.String({
    minLength: 1,
    maxLength: 16_384,
    description: 'PKCS#10 request (PEM) signed by the device\'s key: EC P-256/P-384/P-521, RSA ≥ 2048 bits or Ed25519. '
      + 'Its subject is ignored: the certificate\'s CN is the device id.',
  }),
}, { title: 'SignCsr' });

export const CredentialsBody = Type.Union([IssueCredentialsBody, SignCsrBody]);

export const IssuedCredentialsReply = Type.Object({
  items: Type.Array(Type.Object({
    deviceId: EntityId,
    certificate: Pem('X.509 certificate (PEM), CN = the device id, for TLS client authentication'),
    privateKey: Pem('EC P-256 private key (PKCS#8 PEM); Otter keeps no copy'),
  })),
}, { title: 'IssuedCredentials' });

export const SignedCsrReply = Type.Object({
  deviceId: EntityId,
  certificate: Pem('X.509 certificate (PEM), CN = the device id, for the CSR\'s key'),
}, { title: 'SignedCsr' });

export const CredentialsReply = Type.Union([IssuedCredentialsReply, SignedCsrReply]);

export const RevokeCredentialsReply = Type.Object({
  deviceId: EntityId,
  revoked: Type.Integer({ description: 'certificates revoked by this call (0 when none was valid)' }),
});
