#!/usr/bin/env bash
# The example integrations of routes/, end to end on the local RabbitMQ: a shop's
# orders and a CRM's won deals flow through the router and transformers into
# six target systems (JSON-lines stand-ins until the real adapters land).
set -euo pipefail

out="${DEMO_DIR:-demo-out}"
rm -rf "$out"
mkdir -p "$out"
export ESB_BROKER__EXCHANGE="esb.demo.events"
export ESB_BROKER__PREFIX="esb.demo"
export ESB_SERVICE__LOG_LEVEL=WARNING
sinks=(shipping-api inventory-db customer-email accounting-db marketing-api audit-log)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

ready() { python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$1/readyz', timeout=1)" 2>/dev/null; }
start() {  # port, log name, command...
  local port=$1 name=$2; shift 2
  ESB_SERVICE__HEALTH_PORT=$port "$@" 2>"$out/$name.log" &
  pids+=($!)
}

python scripts/demo_data.py "$out" > "$out/expected.txt"
echo "1. the shop exported orders and the CRM exported won deals:"
sed 's/^/     /' "$out/expected.txt" | head -n 2

start 18100 router esb run router --routes routes
start 18101 transformer esb run transformer --routes routes
port=18102
for sink in "${sinks[@]}"; do
  ESB_SERVICE__NAME=$sink ESB_ADAPTER__PATH="$out/$sink.jsonl" start $port "$sink" esb run sink jsonl
  port=$((port + 1))
done
for p in $(seq 18100 $((port - 1))); do
  for _ in $(seq 1 150); do ready "$p" && break; sleep 0.1; done
  ready "$p" || { echo "service on port $p did not become ready; see $out/*.log" >&2; exit 1; }
done
echo "2. router, transformer and ${#sinks[@]} sinks are running (metrics: http://127.0.0.1:18100/metrics ...)"

started=$(date +%s.%N)
ESB_SERVICE__HEALTH_PORT=18120 ESB_ADAPTER__PATH="$out/shop-orders.jsonl" esb run source jsonl 2>"$out/shop-source.log"
ESB_SERVICE__HEALTH_PORT=18121 ESB_ADAPTER__PATH="$out/crm-deals.jsonl" esb run source jsonl 2>"$out/crm-source.log"
echo "3. both sources published everything, confirmed by the broker"

python scripts/demo_wait.py "$out" "$started"
esb routes graph routes > "$out/flows.mmd"
echo "   the flows as a Mermaid graph: $out/flows.mmd"
echo "demo done: each system's file, the logs and the graph are in $out/"
