#!/usr/bin/env bash
# The environment Envoy needs for a config of the native module, one NAME=value a line: where
# libllm_gateway.so is (target/native), and the `# env NAME=value` lines the config lists (the
# provider keys the module reads from Envoy's environment; demo keys only).
# usage: scripts/native-env.sh CONFIG
set -euo pipefail
echo "ENVOY_DYNAMIC_MODULES_SEARCH_PATH=$(cd "$(dirname "$0")/.." && pwd)/target/native"
grep '^# env [A-Za-z_][A-Za-z0-9_]*=' "$1" | sed 's/^# env //' || true
