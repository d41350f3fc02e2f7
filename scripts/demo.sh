#!/usr/bin/env bash
# The example integration, end to end on the local RabbitMQ: a shop's order
# export (JSON lines) flows through the bus into a fulfilment file.
set -euo pipefail

out_dir="${DEMO_DIR:-demo-out}"
rm -rf "$out_dir"
mkdir -p "$out_dir"
export ESB_BROKER__EXCHANGE="esb.demo.events"
export ESB_CONSUME__QUEUE="esb.demo.fulfilment"
export ESB_CONSUME__BINDINGS='["shop.order.*"]'

python - "$out_dir/orders.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as out:
    for n in range(1, 1001):
        out.write(json.dumps({"order_id": f"SO-{n:05d}", "customer": f"C-{n % 97:03d}",
                              "total": round(n * 1.37, 2), "currency": "EUR"}) + "\n")
PY
echo "1. a shop exported 1000 orders to $out_dir/orders.jsonl"

ESB_ADAPTER__PATH="$out_dir/fulfilment.jsonl" ESB_SERVICE__HEALTH_PORT=9101 \
  esb run sink jsonl 2>"$out_dir/sink.log" &
sink_pid=$!
trap 'kill $sink_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:9101/readyz', timeout=1)" \
    2>/dev/null && break
  sleep 0.1
done
echo "2. the fulfilment sink is consuming $ESB_CONSUME__QUEUE (metrics: http://127.0.0.1:9101/metrics)"

started=$(date +%s.%N)
ESB_ADAPTER__PATH="$out_dir/orders.jsonl" ESB_ADAPTER__EVENT_TYPE=shop.order.created \
  ESB_ADAPTER__EVENT_SOURCE=urn:demo:shop ESB_ADAPTER__ID_FIELD=order_id ESB_SERVICE__HEALTH_PORT=9102 \
  esb run source jsonl 2>"$out_dir/source.log"
echo "3. the source published them all; the broker confirmed every one"

for _ in $(seq 1 300); do
  [ "$(wc -l <"$out_dir/fulfilment.jsonl" 2>/dev/null || echo 0)" -ge 1000 ] && break
  sleep 0.1
done
elapsed=$(python -c "import time,sys; print(f'{time.time()-float(sys.argv[1]):.2f}')" "$started")
delivered=$(wc -l <"$out_dir/fulfilment.jsonl")
echo "4. fulfilment received $delivered orders in ${elapsed}s; the first one:"
head -n 1 "$out_dir/fulfilment.jsonl"
echo
python -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9101/metrics').read().decode())" \
  | grep -E '^esb_consumed_total' || true
kill -TERM $sink_pid
wait $sink_pid || true
trap - EXIT
[ "$delivered" -eq 1000 ] || { echo "demo failed: $delivered of 1000 delivered; see $out_dir/*.log" >&2; exit 1; }
echo "demo done: files and logs in $out_dir/"
