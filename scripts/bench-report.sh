#!/usr/bin/env bash
# Writes bench/filter-cost.md: the machine, Criterion's numbers (router, PII) and the Envoy CPU cost table.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/filter-cost.md
{
  echo "# Filter cost: each filter alone (llm_router, llm_pii, llm_auth, llm_usage)"
  echo
  echo "Measured $(date -u +%Y-%m-%d) by \`make bench\` on: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs),"
  echo "$(free -g | awk '/Mem:/ {print $2}') GiB RAM, Envoy $(${ENVOY_BIN:-.venv/bin/envoy} --version | grep -o '1\.[0-9.]*' | head -1). Noisy shared machine: trust ratios more than absolutes."
  echo
  echo "## Native (Criterion, llm-core, median time per call; PII with the default regex engine)"
  echo
  echo "| benchmark | time |"
  echo "|---|---|"
  for dir in target/criterion/router_on_body/*/*/ target/criterion/pii_mask_request_*/*/*/; do
    estimates="$dir/new/estimates.json"
    [[ -f $estimates ]] || continue
    name=${dir#target/criterion/}
    ns=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['median']['point_estimate'])" "$estimates")
    python3 -c "import sys; ns=float(sys.argv[2]); print(f'| {sys.argv[1].rstrip(\"/\")} | {ns/1000:.1f} µs |')" "$name" "$ns"
  done
  echo
  echo "## Inside Envoy (one worker, sequential keep-alive requests, medians of interleaved rounds)"
  echo
  target/release/envoy-cost "${BENCH_ROUNDS:-5}" "${BENCH_REQUESTS:-2000}"
} > "$out.tmp"
mv "$out.tmp" "$out"
cat "$out"

# bench/cache.md: llm_cache's own costs (issue 17's targets).
cache=bench/cache.md
{
  echo "# llm_cache: what a miss adds, what a hit saves, and the semantic search"
  echo
  echo "Measured $(date -u +%Y-%m-%d) by \`make bench\` on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)). Noisy shared"
  echo "machine (client, mock and Envoy on two cores): rows move by tens of µs between runs; compare within a run."
  echo
  echo "## Inside Envoy (one worker, sequential keep-alive 2 KB requests, medians of interleaved rounds)"
  echo
  target/release/cache-cost "${BENCH_ROUNDS:-5}" "${BENCH_REQUESTS:-2000}"
  echo
  echo "## llm-core (Criterion, median per call)"
  echo
  echo "| benchmark | size-optimized build (what the Wasm modules compile from) | opt-level 3 (the native module) |"
  echo "|---|---|---|"
  for name in exact_key_2KB semantic_search_10000x256 quantize_256; do
    s=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['median']['point_estimate'])" "target/criterion/cache/$name/new/estimates.json")
    o=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['median']['point_estimate'])" "target/criterion-opt3/cache/$name/new/estimates.json" 2>/dev/null || echo nan)
    python3 -c "import sys; f=lambda ns: f'{float(ns)/1000:.1f} µs' if ns!='nan' else '-'; print(f'| {sys.argv[1]} | {f(sys.argv[2])} | {f(sys.argv[3])} |')" "$name" "$s" "$o"
  done
} > "$cache.tmp"
mv "$cache.tmp" "$cache"
cat "$cache"

# bench/guard.md: llm_guard's local checks (issue 18's targets).
guard=bench/guard.md
{
  echo "# llm_guard: what its local checks cost"
  echo
  echo "Measured $(date -u +%Y-%m-%d) by \`make bench\` on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)). Noisy shared"
  echo "machine: compare within a run. Detection and false-positive rates: filters/guard/README.md (guard-eval)."
  echo
  echo "## Inside Envoy (one worker, sequential keep-alive 2 KB requests, medians of interleaved rounds)"
  echo
  target/release/guard-cost "${BENCH_ROUNDS:-5}" "${BENCH_REQUESTS:-2000}"
  echo
  echo "## llm-core (Criterion, median per call)"
  echo
  echo "| benchmark | size-optimized build (what the Wasm modules compile from) | opt-level 3 (the native module) |"
  echo "|---|---|---|"
  for name in local_checks_2KB local_checks_200KB detector_2KB detector_2KB_attack; do
    s=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['median']['point_estimate'])" "target/criterion/guard/$name/new/estimates.json")
    o=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['median']['point_estimate'])" "target/criterion-opt3/guard/$name/new/estimates.json" 2>/dev/null || echo nan)
    python3 -c "import sys; f=lambda ns: f'{float(ns)/1000:.1f} µs' if ns!='nan' else '-'; print(f'| {sys.argv[1]} | {f(sys.argv[2])} | {f(sys.argv[3])} |')" "$name" "$s" "$o"
  done
} > "$guard.tmp"
mv "$guard.tmp" "$guard"
cat "$guard"

# bench/results.md: the full chain against bare Envoy under load; its first line is the headline ratio.
results=bench/results.md
{
  target/release/throughput "${BENCH_THROUGHPUT_ROUNDS:-3}" "${BENCH_THROUGHPUT_SECONDS:-10}"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); wrk and the"
  echo "mock provider share the machine with Envoy, so absolute numbers are low: compare the ratio. Per-filter costs:"
  echo "[filter-cost.md](filter-cost.md)."
  echo
  echo "## Instructions per request (callgrind; about 0.5% from run to run, unlike the timings above)"
  echo
  echo '```'
  scripts/callgrind-cost.sh 200
  echo '```'
  echo
  echo "## Global limits: the added latency of a check by the rate-limit service"
  echo
  LLM_RATELIMIT_BIN=target/service/llm-ratelimit target/service/global-check "${BENCH_ROUNDS:-5}" "${BENCH_GLOBAL_REQUESTS:-1000}"
} > "$results.tmp"
mv "$results.tmp" "$results"
cat "$results"

# bench/tracing.md: what OpenTelemetry tracing adds (issue 21).
tracing=bench/tracing.md
{
  echo "# Tracing: what OpenTelemetry spans and records add to a request"
  echo
  echo "Measured $(date -u +%Y-%m-%d) by \`make bench\` on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)). The demo gateway"
  echo "(llm_auth, llm_router, llm_pii, llm_usage, llm_provider; separate Wasm modules), one Envoy worker,"
  echo "sequential keep-alive 2 KB chat requests, medians of interleaved rounds. Spans and records go to the"
  echo "test OTLP/gRPC receiver (tests/otel/collector.py), which shares the two cores with Envoy: the wall"
  echo "column counts its CPU too."
  echo
  target/release/trace-cost "${BENCH_ROUNDS:-5}" "${BENCH_REQUESTS:-1000}"
} > "$tracing.tmp"
mv "$tracing.tmp" "$tracing"
cat "$tracing"
