#!/usr/bin/env bash
# Envoy instructions per request, bare and through the full chain, counted by callgrind: unlike
# wall-clock or CPU time on a shared machine, the count repeats to within 0.1%, so a change of a few
# thousand instructions is visible. `make callgrind-cost` (needs valgrind; Envoy under it is ~50x slower).
# Usage: scripts/callgrind-cost.sh [requests]
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-200}
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
body=$(python3 -c 'import json; s="The quick brown fox jumps over the lazy dog while the gateway counts tokens. "; print(json.dumps({"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":(s*30)[:1850]}],"temperature":0.2,"max_tokens":256}))')
send() { # port count: sequential keep-alive requests; fails unless every answer is 200
  python3 - "$1" "$2" "$body" <<'PY'
import http.client, sys
port, n, body = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):
    c.request("POST", "/v1/chat/completions", body, {"content-type": "application/json", "authorization": "Bearer sk-bench-key"})
    r = c.getresponse(); r.read()
    if r.status != 200: sys.exit(f"status {r.status}")
PY
}
mock_port=$(free_port)
target/release/mock-provider --max-recorded 0 --listen "127.0.0.1:$mock_port" > "$work/mock.log" 2>&1 &
pids+=($!)
envoy=$(.venv/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))' 2>/dev/null || command -v envoy)
for variant in bare chain; do
  admin=$(free_port); listener=$(free_port)
  target/release/throughput --print-config "$mock_port" "$variant" |
    sed "0,/port_value: 0 }/s//port_value: $admin }/; 0,/port_value: 0 }/s//port_value: $listener }/" > "$work/$variant.yaml"
  valgrind --tool=callgrind --smc-check=all-non-file --instr-atstart=no \
    --callgrind-out-file="$work/$variant.out" "$envoy" -c "$work/$variant.yaml" --concurrency 1 \
    -l warning --base-id "$listener" > "$work/$variant.log" 2>&1 &
  pid=$!; pids+=("$pid")
  for _ in $(seq 1 300); do curl -sf "127.0.0.1:$admin/ready" > /dev/null && break; sleep 1; done
  send "$listener" 50  # warm-up: connections, first-use metrics, V8 tiering
  callgrind_control -i on "$pid" > /dev/null 2>&1
  callgrind_control -z "$pid" > /dev/null 2>&1
  send "$listener" "$requests"
  callgrind_control -d "$pid" > /dev/null 2>&1
  sleep 1
  total=$(grep -ah '^totals:\|^summary:' "$work/$variant.out".* | grep -o '[0-9]*' | sort -n | tail -1)
  echo "$variant: $((total / requests)) instructions/request ($requests sequential 2 KB chat requests)"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
