#!/bin/sh
# The compose broker (eclipse-mosquitto:2): makes the password file from the environment
# (MQTT_PASSWORD for Otter's account `otter`, MQTT_SIMULATOR_PASSWORD for `simulator` when set),
# installs the TLS files from the secrets for Mosquitto's own user, runs Mosquitto with
# ./mosquitto.conf, and sends it SIGHUP whenever Otter rewrites the device CRL: Mosquitto reads its
# crlfile at start and on SIGHUP only, so this is how a revocation reaches the broker (within
# CRL_CHECK_SECONDS, default 5).
set -eu

dir="${MOSQUITTO_DIR:-/mosquitto}"
secrets="${SECRETS_DIR:-/run/secrets}"
conf="${MOSQUITTO_CONF:-$dir/config/mosquitto.conf}"
crl="${DEVICE_CRL_FILE:-$dir/crl/devices.crl.pem}"

: "${MQTT_PASSWORD:?set MQTT_PASSWORD (the password of Otter's broker account, user otter)}"
umask 077
mkdir -p "$dir/data" "$dir/certs"
mosquitto_passwd -c -b "$dir/data/passwd" otter "$MQTT_PASSWORD"
if [ -n "${MQTT_SIMULATOR_PASSWORD:-}" ]; then
  mosquitto_passwd -b "$dir/data/passwd" simulator "$MQTT_SIMULATOR_PASSWORD"
fi
for file in device-ca.crt broker.crt broker.key; do
  cp "$secrets/$file" "$dir/certs/$file"
done
# Mosquitto reads these after it drops root for its own user
if id mosquitto >/dev/null 2>&1; then chown -R mosquitto:mosquitto "$dir/data" "$dir/certs"; fi

mosquitto -c "$conf" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' TERM INT

# Otter replaces the file by a rename: a new inode, whatever the clock says
stamp() { stat -c '%i %Y %s' "$crl" 2>/dev/null || echo missing; }
last=$(stamp)
while kill -0 "$pid" 2>/dev/null; do
  sleep "${CRL_CHECK_SECONDS:-5}" &
  wait $! || true
  now=$(stamp)
  if [ "$now" != "$last" ]; then
    kill -HUP "$pid" 2>/dev/null || true
    last=$now
  fi
done
wait "$pid"
