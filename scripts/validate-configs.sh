#!/usr/bin/env bash
# Runs `envoy --mode validate` on every Envoy YAML under envoy/ (and the observability example's), two at a time (each load compiles the
# Wasm modules, which takes seconds of one core; the native module's config needs `make build-native`). Validation loads the Wasm filters and runs their
# configuration checks, so credentials read from the environment (host_env_keys) get a placeholder
# value when they are not set: the check is about the config, not about the secret.
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY_BIN=${ENVOY_BIN:-.venv/bin/envoy}
JOBS=${VALIDATE_JOBS:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A Vertex AI service account's variable (*SERVICE_ACCOUNT) needs a key file that parses.
service_account=$(scripts/placeholder-service-account.sh)
placeholder() { if [[ $1 == *SERVICE_ACCOUNT ]]; then echo "$1=$service_account"; else echo "$1=validate-placeholder"; fi; }

validate() {
  local config=$1 result=$2 placeholders=() name output
  for name in $(grep -v '^ *#' "$config" | grep -o 'host_env_keys: *\[[^]]*\]' | sed 's/.*\[//; s/\]//; s/,/ /g'); do
    [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    [[ -n ${!name:-} ]] || placeholders+=("$(placeholder "$name")")
  done
  # The native module's configs name the environment it reads in `# env NAME=value` lines, and
  # the keys it takes from Envoy's environment in `# env NAME` lines.
  for name in $(grep -o '^# env [A-Za-z_][A-Za-z0-9_]*$' "$config" | sed 's/^# env //'); do
    [[ -n ${!name:-} ]] || placeholders+=("$(placeholder "$name")")
  done
  mapfile -t -O "${#placeholders[@]}" placeholders < <(scripts/native-env.sh "$config")
  if output=$(env "${placeholders[@]}" "$ENVOY_BIN" --mode validate --use-dynamic-base-id -c "$config" 2>&1); then
    echo "valid: $config" > "$result"
  else
    { echo "INVALID: $config"; echo "$output" | grep -E 'critical|error' | tail -5; } > "$result"
  fi
}

# (*.gateway.yaml are llm-config's input, not Envoy's.)
mapfile -t configs < <({ find envoy -name '*.yaml' ! -name '*.gateway.yaml'; echo examples/observability/envoy.yaml; } | sort)
for i in "${!configs[@]}"; do
  while (($(jobs -rp | wc -l) >= JOBS)); do wait -n || true; done
  validate "${configs[$i]}" "$work/$i" &
done
wait
status=0
for i in "${!configs[@]}"; do
  cat "$work/$i"
  grep -q '^INVALID' "$work/$i" && status=1
done
exit $status
