// A private Mosquitto per test file (tools/broker.ts): the repository's tuned mosquitto.conf on a
// free local port, so tests share nothing with the machine's broker or with each other.
export { startBroker, type Broker as TestBroker } from '../../tools/broker.ts';
