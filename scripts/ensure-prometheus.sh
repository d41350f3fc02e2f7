#!/usr/bin/env bash
# What the tests of deploy/prometheus need: prometheus and promtool on PATH
# (from Debian's packages when missing), and the local RabbitMQ's Prometheus
# plugin for queue depths (skipped when AMQP_URL points at another broker).
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

if [ -z "${AMQP_URL:-}" ] && command -v rabbitmq-plugins >/dev/null 2>&1; then
  if ! (exec 3<>/dev/tcp/127.0.0.1/15692) 2>/dev/null; then
    rabbitmq-plugins enable rabbitmq_prometheus >/dev/null
  fi
  echo "RabbitMQ's Prometheus plugin answers on 127.0.0.1:15692"
fi
