#!/usr/bin/env bash
# Make sure a PostgreSQL answers on 127.0.0.1:5432 for the idempotency-store tests: use a
# running one, else start the local cluster, installing it from Debian's packages if missing.
set -euo pipefail

port_open() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }

if [ -n "${ESB_TEST_POSTGRES:-}" ] || port_open; then
  echo "PostgreSQL answers"
  exit 0
fi
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "no PostgreSQL on 127.0.0.1:5432 and no apt-get; start one or set ESB_TEST_POSTGRES" >&2
    exit 1
  fi
  echo "installing postgresql from Debian's packages"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
echo "starting PostgreSQL $version"
$sudo_cmd pg_ctlcluster --skip-systemctl-redirect "$version" main start
for _ in $(seq 1 30); do
  if port_open; then
    $sudo_cmd su postgres -c "psql -qc \"ALTER USER postgres PASSWORD NULL\"" >/dev/null 2>&1 || true
    $sudo_cmd su postgres -c "createdb test" >/dev/null 2>&1 || true
    echo "PostgreSQL answers"
    exit 0
  fi
  sleep 1
done
echo "PostgreSQL did not start within 30 s" >&2
exit 1
