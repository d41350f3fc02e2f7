#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on this machine, to try esb on a cluster (docs/scaling.md).
#
#   scripts/cluster.sh start|stop|status [DIR]      (make cluster, make cluster-stop)
#
# Nodes esb-1@localhost .. esb-3@localhost listen for AMQP on 127.0.0.1:5681-5683 and
# talk to each other on 25681-25683; of the plugins only the consistent-hash exchange is on
# (partitioned sinks; no management or Prometheus ports).
# They share one Erlang cookie and keep their data and logs under DIR (default .cluster/),
# so a stopped cluster starts again with its queues and messages. `start` is idempotent: it
# starts only the nodes that are down and joins only the nodes not yet clustered.
# CLUSTER_NAME (esb), CLUSTER_PORT (5681) and CLUSTER_DIST_PORT (25681) move the names and
# ports, to run a second cluster beside the first. Never 5672: that is `make broker`'s node.
set -euo pipefail

command=${1:-}
dir=${2:-.cluster}
name=${CLUSTER_NAME:-esb}
port=${CLUSTER_PORT:-5681}
dist_port=${CLUSTER_DIST_PORT:-25681}
nodes=(1 2 3)
timeout=180

# Debian's /usr/sbin wrappers switch to the rabbitmq user; the scripts behind them do not.
bin() {
  if [ -x "/usr/lib/rabbitmq/bin/$1" ]; then
    echo "/usr/lib/rabbitmq/bin/$1"
  elif command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
  else
    echo "$1 not found: install rabbitmq-server (make broker does)" >&2
    exit 1
  fi
}

node_name() { echo "$name-$1@localhost"; }

# Run a command in the environment of node N: its name, ports and files, and DIR as HOME
# for the cookie the nodes and the CLI tools share.
as_node() {
  local n=$1 base="$dir/node$1"
  shift
  env HOME="$dir" \
    RABBITMQ_NODENAME="$(node_name "$n")" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT=$((port + n - 1)) \
    RABBITMQ_DIST_PORT=$((dist_port + n - 1)) \
    RABBITMQ_MNESIA_BASE="$base/mnesia" \
    RABBITMQ_LOG_BASE="$base/log" \
    RABBITMQ_CONFIG_FILE="$base/rabbitmq.conf" \
    RABBITMQ_CONF_ENV_FILE="$base/rabbitmq-env.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins" \
    RABBITMQ_PID_FILE="$base/pid" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    "$@"
}

ctl() {
  local n=$1
  shift
  as_node "$n" "$(bin rabbitmqctl)" -n "$(node_name "$n")" "$@"
}

running() { ctl "$1" -q ping >/dev/null 2>&1; }

urls() {
  local n list=()
  for n in "${nodes[@]}"; do list+=("\"amqp://guest:guest@127.0.0.1:$((port + n - 1))/\""); done
  echo "export ESB_BROKER__URL=amqp://guest:guest@127.0.0.1:$port/"
  echo "export ESB_BROKER__FAILOVER_URLS='[${list[1]}, ${list[2]}]'"
}

start_node() {
  local n=$1 base="$dir/node$1"
  mkdir -p "$base"
  echo "[rabbitmq_consistent_hash_exchange]." >"$base/enabled_plugins"
  : >"$base/rabbitmq.conf"
  : >"$base/rabbitmq-env.conf"
  as_node "$n" setsid "$(bin rabbitmq-server)" >>"$base/server.out" 2>&1 </dev/null &
}

await_node() {
  local n=$1 waited=0
  until running "$n"; do
    if [ "$waited" -ge "$timeout" ]; then
      echo "$(node_name "$n") did not start in ${timeout}s; see $dir/node$n/server.out" >&2
      tail -20 "$dir/node$n/server.out" >&2
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  ctl "$n" -q await_startup --timeout "$timeout"
  # await_startup can return while the rabbit app is still booting on a loaded machine
  # (cluster_status then fails with rabbit_is_not_running): wait until it says it runs.
  until as_node "$n" "$(bin rabbitmq-diagnostics)" -n "$(node_name "$n")" -q check_running \
    >/dev/null 2>&1; do
    if [ "$waited" -ge "$timeout" ]; then
      echo "$(node_name "$n") did not finish booting in ${timeout}s; see $dir/node$n/server.out" >&2
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

running_nodes() {
  ctl "$1" -q cluster_status --formatter json | grep -o '"running_nodes":\[[^]]*\]' | tr -d '"[]' |
    sed 's/running_nodes://; s/,/ /g'
}

clustered() { ctl 1 -q cluster_status --formatter json | grep -q "\"$(node_name "$1")\""; }

start() {
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ ! -f "$dir/.erlang.cookie" ]; then
    (umask 077 && head -c 30 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/.erlang.cookie")
    chmod 400 "$dir/.erlang.cookie"
  fi
  local n starting=()
  # Nodes of a cluster that was stopped wait for each other at boot: start them all at once.
  for n in "${nodes[@]}"; do
    if running "$n"; then
      echo "$(node_name "$n") is already running"
    else
      echo "starting $(node_name "$n") on 127.0.0.1:$((port + n - 1))"
      start_node "$n"
      starting+=("$n")
    fi
  done
  for n in "${starting[@]}"; do await_node "$n"; done
  for n in "${nodes[@]:1}"; do
    if ! clustered "$n"; then
      echo "joining $(node_name "$n") to $(node_name 1)"
      # join_cluster logs harmless errors about tables of the node it stopped; keep them aside.
      if ! { ctl "$n" -q stop_app && ctl "$n" -q join_cluster "$(node_name 1)" &&
        ctl "$n" -q start_app; } 2>"$dir/node$n/join.err"; then
        cat "$dir/node$n/join.err" >&2
        exit 1
      fi
    fi
  done
  ctl 1 -q await_online_nodes "${#nodes[@]}" --timeout "$timeout"
  echo "cluster of ${#nodes[@]} nodes running (data and logs in $dir); give every esb process these addresses:"
  urls
}

stop() {
  local n
  # The last node to stop is the first whose data the others wait for: node 1, as started.
  for ((i = ${#nodes[@]} - 1; i >= 0; i--)); do
    n=${nodes[$i]}
    if running "$n"; then
      echo "stopping $(node_name "$n")"
      ctl "$n" -q stop "$dir/node$n/pid" >/dev/null
    else
      echo "$(node_name "$n") is not running"
    fi
  done
}

status() {
  local n up=0
  for n in "${nodes[@]}"; do
    if running "$n"; then
      echo "$(node_name "$n") running on 127.0.0.1:$((port + n - 1))"
      up=$n
    else
      echo "$(node_name "$n") stopped"
    fi
  done
  if [ "$up" -eq 0 ]; then
    return 3
  fi
  echo "running, as node $(node_name "$up") sees the cluster: $(running_nodes "$up")"
  urls
}

[ -d "$dir" ] || [ "$command" = start ] || { echo "no cluster in $dir" >&2; exit 3; }
[ "$command" = start ] || dir=$(cd "$dir" && pwd)
case "$command" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: $0 start|stop|status [DIR]" >&2
    exit 2
    ;;
esac
