// Types for cluster-key-slot (ioredis's own dependency, untyped): Redis Cluster's CRC16 key slot.
declare module 'cluster-key-slot' {
  /** The cluster slot (0–16383) of a key, honouring its {hash tag}. */
  export default function calculateSlot(key: string): number;
}
