#!/usr/bin/env bash
# Make sure a RabbitMQ answers on 127.0.0.1:5672: use a running one, else start
# the local rabbitmq-server, installing it from Debian's packages if missing. Either way
# enable the plugins esb uses (partitioned sinks' consistent-hash exchange) when
# rabbitmq-plugins is here; a broker run elsewhere needs them enabled there.
set -euo pipefail

PLUGINS=(rabbitmq_consistent_hash_exchange)

port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

enable_plugins() {
  if command -v rabbitmq-plugins >/dev/null 2>&1; then
    as_root rabbitmq-plugins enable --quiet "${PLUGINS[@]}" >/dev/null
    echo "RabbitMQ plugins enabled: ${PLUGINS[*]}"
  else
    echo "no rabbitmq-plugins here: enable ${PLUGINS[*]} on the broker (rabbitmq-plugins enable)"
  fi
}

if port_open; then
  echo "RabbitMQ answers on 127.0.0.1:5672"
  enable_plugins
  exit 0
fi

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing rabbitmq-server from Debian's packages"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq rabbitmq-server >/dev/null
  else
    echo "no RabbitMQ on 127.0.0.1:5672 and no apt-get to install one; start RabbitMQ or set AMQP_URL" >&2
    exit 1
  fi
fi

echo "starting rabbitmq-server"
if [ "$(id -u)" -eq 0 ]; then
  rabbitmq-server -detached
else
  sudo rabbitmq-server -detached
fi
for _ in $(seq 1 60); do
  if port_open; then
    echo "RabbitMQ answers on 127.0.0.1:5672"
    enable_plugins
    exit 0
  fi
  sleep 1
done
echo "RabbitMQ did not start within 60 s; see /var/log/rabbitmq/" >&2
exit 1
