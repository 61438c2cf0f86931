// The service's own connection to the broker over TLS (mqtts://): the CA that signed the broker's
// certificate (MQTT_CA_FILE; the system's CAs without it) and Otter's client certificate
// (MQTT_CERT_FILE, MQTT_KEY_FILE). A broker whose certificate does not verify is refused, and a
// broker the service cannot use at start is named in one clear error.
import { readFileSync } from 'node:fs';
import type { IClientOptions } from 'mqtt';
import { redactUrl, type Config } from '../core/config.ts';
import { DependencyError, OtterError } from '../core/errors.ts';

type TlsOptions = Pick<IClientOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized'>;

function readTlsFile(file: string, variable: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    throw new OtterError('mqtt_tls_file_unreadable', `cannot read ${variable} ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, 500);
  }
}

/** mqtt.js options for the configured TLS files; none for a plain connection. */
export function brokerTlsOptions(config: Pick<Config, 'mqttCaFile' | 'mqttCertFile' | 'mqttKeyFile'>): TlsOptions {
  const options: TlsOptions = {};
  if (config.mqttCaFile) options.ca = readTlsFile(config.mqttCaFile, 'MQTT_CA_FILE');
  if (config.mqttCertFile) options.cert = readTlsFile(config.mqttCertFile, 'MQTT_CERT_FILE');
  if (config.mqttKeyFile) options.key = readTlsFile(config.mqttKeyFile, 'MQTT_KEY_FILE');
  // Node verifies by default; said here so no option spread after this can quietly turn it off
  if (Object.keys(options).length > 0) options.rejectUnauthorized = true;
  return options;
}

// what Node's TLS reports when the broker's certificate chain or name does not verify
const CERTIFICATE_ERRORS = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|ERR_TLS|ERR_SSL/;

/** A failed first connection as an error naming the broker, its URL (without password) and what to do. */
export function brokerConnectError(url: string, error: unknown): DependencyError {
  const code = (error as { code?: unknown }).code;
  const message = error instanceof Error ? error.message : String(error);
  const where = redactUrl(url);
  if (typeof code === 'string' && CERTIFICATE_ERRORS.test(code)) {
    return new DependencyError(
      'MQTT broker',
      `${where} (its TLS certificate does not verify: ${message})`,
      'MQTT_CA_FILE must be the CA that signed the broker\'s certificate, and the host in MQTT_URL one the certificate names',
      error,
    );
  }
  if (/not authori[sz]ed|bad user ?name or password/i.test(message)) {
    return new DependencyError('MQTT broker', `${where} (${message})`, 'check MQTT_USERNAME and MQTT_PASSWORD (or the client certificate in MQTT_CERT_FILE)', error);
  }
  return new DependencyError('MQTT broker', `${where} (${typeof code === 'string' ? code : message})`, 'start it (e.g. `docker compose up -d mosquitto`) or correct MQTT_URL', error);
}
