#!/usr/bin/env bash
# What the tests of deploy/prometheus need: prometheus and promtool on PATH
# (from Debian's packages when missing), and the local RabbitMQ's Prometheus
# plugin for queue depths (left alone when AMQP_URL points at another host).
set -euo pipefail

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install Prometheus so that prometheus and promtool are on PATH" >&2
    exit 1
  fi
  echo "installing prometheus from Debian's packages"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || { $sudo_cmd apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
fi
promtool --version 2>&1 | head -n 1

# The plugin of the local node only: an AMQP_URL pointing at another host is that broker's job.
case "${AMQP_URL:-amqp://127.0.0.1}" in
  *@127.0.0.1[:/]* | *@localhost[:/]* | amqp://127.0.0.1* | amqp://localhost*) local_broker=1 ;;
  *) local_broker=0 ;;
esac
plugin_open() { (exec 3<>/dev/tcp/127.0.0.1/15692) 2>/dev/null; }
if [ "$local_broker" = 1 ] && command -v rabbitmq-plugins >/dev/null 2>&1; then
  plugin_open || rabbitmq-plugins enable rabbitmq_prometheus >/dev/null
  for _ in $(seq 1 50); do plugin_open && break; sleep 0.1; done
  if plugin_open; then
    echo "RabbitMQ's Prometheus plugin answers on 127.0.0.1:15692"
  else
    echo "RabbitMQ's Prometheus plugin does not answer on 127.0.0.1:15692" >&2
    exit 1
  fi
fi
