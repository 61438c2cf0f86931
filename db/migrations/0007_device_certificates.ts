// Certificates Otter issued as the devices' CA: one row per serial, so a device's certificates can
// be revoked and the CRL rebuilt from here alone. No foreign key to devices: deleting a device
// revokes its certificates, and the revocations must outlive the device.
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE device_certificates (
      -- lower-case hex of the certificate's serial number
      serial text PRIMARY KEY CHECK (serial ~ '^[0-9a-f]{2,40}$'),
      device_id text NOT NULL,
      -- 'generated': Otter made the key pair; 'csr': the device keeps its own key
      origin text NOT NULL CHECK (origin IN ('generated', 'csr')),
      issued_at timestamptz NOT NULL DEFAULT now(),
      not_after timestamptz NOT NULL,
      revoked_at timestamptz
    )`.execute(db);
  await sql`CREATE INDEX device_certificates_device_idx ON device_certificates (device_id)`.execute(db);
  // the CRL lists the revoked certificates that have not expired yet
  await sql`CREATE INDEX device_certificates_revoked_idx ON device_certificates (not_after) WHERE revoked_at IS NOT NULL`.execute(db);
  // CRL numbers must increase with every CRL published, whichever process publishes it
  await sql`CREATE SEQUENCE device_crl_number`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP SEQUENCE IF EXISTS device_crl_number`.execute(db);
  await sql`DROP TABLE IF EXISTS device_certificates`.execute(db);
}
