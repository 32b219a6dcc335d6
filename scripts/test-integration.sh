#!/usr/bin/env bash
# The integration tests in their three packagings side by side (the separate modules in two halves):
# llm_gateway in place of the four downstream ones (LLM_SINGLE_MODULE=1 makes the harness merge them),
# and the native module libllm_gateway.so in place of every Wasm filter (LLM_NATIVE=1).
# Most of a test's time is spent waiting on Envoy and the mocks, so the three runs overlap well on two
# cores. Each run's output is printed whole when all are done; the exit status fails if any did.
# usage: test-integration.sh TEST_NAME... (the test files that also run against llm_gateway)
set -uo pipefail
cd "$(dirname "$0")/.."
logs=target/test-logs
mkdir -p "$logs"
# The rate-limit service the global-limit tests start (target/debug/llm-ratelimit) is built by the unit
# tests' build (`make test-host`, whose arguments come in HOST_TEST_ARGS); repeated here with the same
# arguments, it costs nothing after test-host and builds it when this script runs alone. (A plain
# `cargo build -p llm-ratelimit` would resolve other features and rebuild its dependencies.)
read -r -a host_test_args <<< "${HOST_TEST_ARGS:---workspace --exclude integration --exclude llm-bench}"
cargo test "${host_test_args[@]}" --no-run || exit 1
cargo test -p integration --no-run || exit 1

single_args=()
for name in "$@"; do single_args+=(--test "$name"); done

# The separate modules run every test file, twice as many as the other two: split in two halves of
# about equal time (measured in a CI run), so the four runs end together.
first_half=(cache usage router provider gateway examples observability)
second_half=()
for file in tests/integration/tests/*.rs; do
  name=$(basename "$file" .rs)
  [[ " ${first_half[*]} " == *" $name "* ]] || second_half+=("$name")
done
args_of() { local name; for name in "$@"; do printf -- '--test %s ' "$name"; done; }

echo "integration tests: separate modules (two halves), llm_gateway and the native module side by side (logs: $logs/)"
# shellcheck disable=SC2046
cargo test -p integration $(args_of "${first_half[@]}") -- --test-threads 2 > "$logs/modules.log" 2>&1 &
modules=$!
# shellcheck disable=SC2046
cargo test -p integration $(args_of "${second_half[@]}") -- --test-threads 2 > "$logs/modules-2.log" 2>&1 &
modules_2=$!
LLM_SINGLE_MODULE=1 cargo test -p integration "${single_args[@]}" -- --test-threads 2 > "$logs/gateway.log" 2>&1 &
gateway=$!
LLM_NATIVE=1 cargo test -p integration "${single_args[@]}" -- --test-threads 2 > "$logs/native.log" 2>&1 &
native=$!
wait "$modules"; modules_status=$?
wait "$modules_2"; modules_2_status=$?
wait "$gateway"; gateway_status=$?
wait "$native"; native_status=$?

echo "=== separate modules, first half (exit $modules_status) ==="
cat "$logs/modules.log"
echo "=== separate modules, second half (exit $modules_2_status) ==="
cat "$logs/modules-2.log"
echo "=== llm_gateway, LLM_SINGLE_MODULE=1 (exit $gateway_status) ==="
cat "$logs/gateway.log"
echo "=== libllm_gateway.so, LLM_NATIVE=1 (exit $native_status) ==="
cat "$logs/native.log"
((modules_status == 0 && modules_2_status == 0 && gateway_status == 0 && native_status == 0))
