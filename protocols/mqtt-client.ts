// An mqtt.js client whose packets written in one turn of the event loop leave in one socket
// write. mqtt.js writes every packet on its own (each PUBACK, each PUBLISH), and on a busy
// connection a syscall per packet — plus the broker waking up for each — cost more CPU than
// handling the messages. Holding the socket corked until setImmediate adds at most one loop turn.
// Optionally, what comes in passes a size filter first (mqtt-size-limit.ts).
import type { Duplex } from 'node:stream';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { limitIncoming } from './mqtt-size-limit.ts';

/** Corks `stream` on its first write in a loop turn and uncorks it once that turn's I/O is done. */
export function coalesceWrites<S extends Duplex>(stream: S): S {
  let corked = false;
  const uncork = () => {
    corked = false;
    stream.uncork();
  };
  const write = stream.write;
  stream.write = function coalescedWrite(this: S, ...args: Parameters<S['write']>) {
    if (!corked && !stream.destroyed) {
      corked = true;
      stream.cork();
      setImmediate(uncork);
    }
    return write.apply(this, args);
  } as S['write'];
  return stream;
}

type StreamBuilder = (client: MqttClient) => Duplex;

/**
 * mqtt.js logs every packet through `debug`, whose calls cost about 2 % of a busy worker's CPU even
 * when that log is off (measured in a CPU profile of the benchmark). Left to mqtt.js only when
 * DEBUG asks for its log.
 */
function packetLog(): IClientOptions['log'] {
  return /mqttjs/.test(process.env.DEBUG ?? '') ? undefined : () => {};
}

export interface IncomingLimits {
  /** A PUBLISH with a larger payload is replaced before mqtt.js reads it (see mqtt-size-limit.ts). */
  maxPayloadBytes: number;
}

/**
 * Like mqtt.connectAsync, with every connection (reconnects included) writing coalesced and, with
 * `limits`, reading through the size filter.
 */
export async function connectCoalesced(url: string, options: IClientOptions, limits?: IncomingLimits): Promise<MqttClient> {
  const client = mqtt.connect(url, { log: packetLog(), ...options, manualConnect: true });
  // the builder is how mqtt.js opens each new connection; it is not part of its typed API
  const internal = client as unknown as { streamBuilder: StreamBuilder };
  const build = internal.streamBuilder;
  const protocolVersion = options.protocolVersion ?? 4;
  internal.streamBuilder = (c) => {
    const stream = coalesceWrites(build(c));
    return limits ? limitIncoming(stream, { maxPayloadBytes: limits.maxPayloadBytes, protocolVersion }) : stream;
  };
  return new Promise<MqttClient>((resolve, reject) => {
    const onError = (error: Error) => {
      client.removeListener('connect', onConnect);
      client.end(true);
      reject(error);
    };
    const onConnect = () => {
      client.removeListener('error', onError);
      resolve(client);
    };
    client.once('connect', onConnect);
    client.once('error', onError);
    client.connect();
  });
}
