// An mqtt.js client whose packets written in one turn of the event loop leave in one socket
// write. mqtt.js writes every packet on its own (each PUBACK, each PUBLISH), and on a busy
// connection a syscall per packet — plus the broker waking up for each — cost more CPU than
// handling the messages. Holding the socket corked until setImmediate adds at most one loop turn.
import type { Duplex } from 'node:stream';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';

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

/** Like mqtt.connectAsync, with every connection (reconnects included) writing coalesced. */
export async function connectCoalesced(url: string, options: IClientOptions): Promise<MqttClient> {
  const client = mqtt.connect(url, { ...options, manualConnect: true });
  // the builder is how mqtt.js opens each new connection; it is not part of its typed API
  const internal = client as unknown as { streamBuilder: StreamBuilder };
  const build = internal.streamBuilder;
  internal.streamBuilder = (c) => coalesceWrites(build(c));
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
