#!/usr/bin/env bash
# Make sure an MQTT broker answers on 127.0.0.1:1883 for the mqtt adapter's
# tests: use a running one, else start Mosquitto, installing it from
# Debian's packages if missing. ESB_TEST_MQTT points the tests elsewhere.
set -euo pipefail

port_open() { (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; }

if [ -n "${ESB_TEST_MQTT:-}" ] || port_open; then
  echo "MQTT broker: ${ESB_TEST_MQTT:-127.0.0.1:1883}"
  exit 0
fi
if ! command -v mosquitto >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "no MQTT broker on 127.0.0.1:1883: install and start Mosquitto, or set ESB_TEST_MQTT" >&2
    exit 1
  fi
  echo "installing mosquitto from Debian's packages"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq mosquitto >/dev/null
fi
config=/etc/mosquitto/mosquitto.conf
if [ -f "$config" ]; then mosquitto -d -c "$config"; else mosquitto -d -p 1883; fi
for _ in $(seq 1 50); do
  port_open && { echo "Mosquitto started on 127.0.0.1:1883"; exit 0; }
  sleep 0.1
done
echo "Mosquitto did not start on 127.0.0.1:1883" >&2
exit 1
