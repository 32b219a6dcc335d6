#!/usr/bin/env bash
# Runs `envoy --mode validate` on every Envoy YAML under envoy/. Validation loads the Wasm filters and
# runs their configuration checks, so credentials read from the environment (host_env_keys) get a
# placeholder value when they are not set: the check is about the config, not about the secret.
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY_BIN=${ENVOY_BIN:-.venv/bin/envoy}
status=0
while IFS= read -r config; do
  placeholders=()
  for name in $(grep -v '^ *#' "$config" | grep -o 'host_env_keys: *\[[^]]*\]' | sed 's/.*\[//; s/\]//; s/,/ /g'); do
    [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    [[ -n ${!name:-} ]] || placeholders+=("$name=validate-placeholder")
  done
  if output=$(env "${placeholders[@]}" "$ENVOY_BIN" --mode validate --use-dynamic-base-id -c "$config" 2>&1); then
    echo "valid: $config"
  else
    echo "INVALID: $config"
    echo "$output" | grep -E 'critical|error' | tail -5
    status=1
  fi
done < <(find envoy -name '*.yaml' | sort)
exit $status
