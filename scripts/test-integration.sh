#!/usr/bin/env bash
# The integration tests in their three packagings side by side: the five separate Wasm modules,
# llm_gateway in place of the four downstream ones (LLM_SINGLE_MODULE=1 makes the harness merge them),
# and the native module libllm_gateway.so in place of every Wasm filter (LLM_NATIVE=1).
# Most of a test's time is spent waiting on Envoy and the mocks, so the three runs overlap well on two
# cores. Each run's output is printed whole when all are done; the exit status fails if any did.
# usage: test-integration.sh TEST_NAME... (the test files that also run against llm_gateway)
set -uo pipefail
cd "$(dirname "$0")/.."
logs=target/test-logs
mkdir -p "$logs"
# The rate-limit service the global-limit tests start (target/debug/llm-ratelimit) and the mock
# provider (target/debug/mock-provider) are built by the unit tests' build (`make test-host`, whose
# arguments come in HOST_TEST_ARGS): their crates have integration tests, so cargo builds their
# binaries. Repeated here with the same arguments, it costs nothing after test-host and builds them
# when this script runs alone. (A plain `cargo build -p llm-ratelimit` would resolve other features
# and rebuild their dependencies.)
read -r -a host_test_args <<< "${HOST_TEST_ARGS:---workspace --exclude integration --exclude llm-bench}"
cargo test "${host_test_args[@]}" --no-run || exit 1
cargo test -p integration --no-run || exit 1

# The native module as `make build-fault` builds it for tests (no LTO; see the Makefile).
export LLM_NATIVE_DIR="${LLM_NATIVE_DIR:-target/native-test}"

single_args=()
for name in "$@"; do single_args+=(--test "$name"); done

echo "integration tests: separate modules, llm_gateway and the native module side by side (logs: $logs/)"
cargo test -p integration -- --test-threads 2 > "$logs/modules.log" 2>&1 &
modules=$!
LLM_SINGLE_MODULE=1 cargo test -p integration "${single_args[@]}" -- --test-threads 2 > "$logs/gateway.log" 2>&1 &
gateway=$!
LLM_NATIVE=1 cargo test -p integration "${single_args[@]}" -- --test-threads 2 > "$logs/native.log" 2>&1 &
native=$!
wait "$modules"; modules_status=$?
wait "$gateway"; gateway_status=$?
wait "$native"; native_status=$?

echo "=== separate modules (exit $modules_status) ==="
cat "$logs/modules.log"
echo "=== llm_gateway, LLM_SINGLE_MODULE=1 (exit $gateway_status) ==="
cat "$logs/gateway.log"
echo "=== libllm_gateway.so, LLM_NATIVE=1 (exit $native_status) ==="
cat "$logs/native.log"
((modules_status == 0 && gateway_status == 0 && native_status == 0))
