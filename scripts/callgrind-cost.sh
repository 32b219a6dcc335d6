#!/usr/bin/env bash
# Envoy instructions per request, bare and through the full chain, counted by callgrind: unlike
# wall-clock or CPU time on a shared machine, the count repeats to within 0.1%, so a change of a few
# thousand instructions is visible. `make callgrind-cost` (needs valgrind; Envoy under it is ~50x slower).
# Usage: scripts/callgrind-cost.sh [requests]   (VARIANTS="..." to choose; see below)
#
# Under valgrind, Envoy cannot create the Wasm VMs of all five separate modules (each VM reserves V8's
# large guard regions, twice per module with one worker, and valgrind's address space runs out: the
# fifth module's VM fails and, with FAIL_OPEN, its filter is silently skipped). So the separate modules
# are measured without the upstream llm_provider (chain-downstream), next to llm_gateway with and without
# it, and every run is checked: each module on the request path must have counted every request.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-200}
variants=${VARIANTS:-bare chain-downstream single-downstream single native}
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
target/service/mock-provider --max-recorded 0 --listen "127.0.0.1:$mock_port" > "$work/mock.log" 2>&1 &
pids+=($!)
envoy=$(.venv/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))' 2>/dev/null || command -v envoy)
for variant in $variants; do
  admin=$(free_port); listener=$(free_port)
  target/release/throughput --print-config "$mock_port" "$variant" |
    sed "0,/port_value: 0 }/s//port_value: $admin }/; 0,/port_value: 0 }/s//port_value: $listener }/" > "$work/$variant.yaml"
  # The native module (variant `native`): found in target/native, provider keys from `# env` lines.
  mapfile -t native_env < <(scripts/native-env.sh "$work/$variant.yaml")
  env "${native_env[@]}" valgrind --tool=callgrind --smc-check=all-non-file --instr-atstart=no \
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
  stats=$(curl -s "127.0.0.1:$admin/stats/prometheus")
  modules=$(grep -o 'root_id: llm_[a-z]*\|filter_name: llm_[a-z]*' "$work/$variant.yaml" | sed 's/.*: llm_//' | sort -u || true)
  for module in $modules; do
    counted=$(grep -o "^\(envoy_\)\?llm_filter_requests_total{filter=\"$module\"} [0-9]*" <<<"$stats" | awk '{print $2}' || true)
    # The native module's llm_provider counts in its cluster's scope.
    [[ -z $counted ]] && counted=$(grep -o "^envoy_cluster_[a-z_]*_llm_filter_requests_total{filter=\"$module\"} [0-9]*" <<<"$stats" | awk '{s += $2} END {print s}' || true)
    if [[ ${counted:-0} -ne $((requests + 50)) ]]; then
      echo "$variant: llm_$module counted ${counted:-no} requests of $((requests + 50)): its VM did not run" \
        "them (Envoy log: $(grep -m1 -o 'Wasm VM failed.*\|Failed to create.*' "$work/$variant.log"))" >&2
      exit 1
    fi
  done
  echo "$variant: $((total / requests)) instructions/request ($requests sequential 2 KB chat requests)"
  declare "count_${variant//-/_}=$((total / requests))"
  [[ -n ${KEEP_CALLGRIND:-} ]] && cp "$work/$variant.out".* "$KEEP_CALLGRIND/" 2>/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
if [[ -n ${count_chain_downstream:-} && -n ${count_single_downstream:-} && -n ${count_single:-} ]]; then
  provider=$((count_single - count_single_downstream))
  echo "llm_provider (single - single-downstream): $provider instructions/request"
  echo "five modules (chain-downstream + llm_provider): $((count_chain_downstream + provider)) instructions/request"
fi
