// A private Mosquitto per test file (tools/broker.ts): the repository's mosquitto.conf, closed as in
// production, on free local ports with throwaway accounts and a throwaway device CA, so tests share
// nothing with the machine's broker or with each other. `url` carries the fleet simulator's account.
export { startBroker, type Broker as TestBroker } from '../../tools/broker.ts';
