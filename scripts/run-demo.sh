#!/usr/bin/env bash
# Starts the demo gateway in the foreground: five mock providers and Envoy with envoy/demo.yaml (or
# DEMO_CONFIG, e.g. envoy/demo-single-module.yaml or envoy/demo-native.yaml).
# Ctrl-C (or any of them exiting) stops all of them. Run through `make run`, which builds first.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_BIN=${ENVOY_BIN:-.venv/bin/envoy}
DEMO_CONFIG=${DEMO_CONFIG:-envoy/demo.yaml}
MOCK=target/service/mock-provider
for needed in "$ENVOY_BIN" "$MOCK" "$DEMO_CONFIG" target/wasm32-wasip1/release/llm_auth.wasm; do
  [[ -x $needed || -f $needed ]] || { echo "missing $needed: run 'make run' (it builds first)" >&2; exit 1; }
done

port_in_use() { { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null && exec 3>&-; }
for port in 10000 9901 18080 18081 18082 18083 18084; do
  if port_in_use "$port"; then
    echo "port 127.0.0.1:$port is already in use (another 'make run'?); stop that first" >&2
    exit 1
  fi
done

pids=()
stop_all() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'stop_all; echo "demo stopped" >&2; exit 0' INT TERM
trap stop_all EXIT

# The mocks require the provider keys that llm_provider injects (envoy/demo.yaml), like real providers.
"$MOCK" --listen 127.0.0.1:18080 --name openai --api openai --require-key sk-mock-openai-key & pids+=($!)
"$MOCK" --listen 127.0.0.1:18081 --name anthropic --api anthropic --require-key sk-mock-anthropic-key & pids+=($!)
"$MOCK" --listen 127.0.0.1:18082 --name unavailable --always-status 503 & pids+=($!)
"$MOCK" --listen 127.0.0.1:18083 --name gemini --api gemini --require-key sk-mock-gemini-key & pids+=($!)
# Bedrock checks each request's SigV4 signature against the demo AWS key pair, as AWS does.
"$MOCK" --listen 127.0.0.1:18084 --name bedrock --api bedrock --aws-region us-east-1 \
  --aws-credentials AKIAMOCKDEMOKEY00000:mock-demo-aws-secret-access-key & pids+=($!)
# The native module (envoy/demo-native.yaml) is found in target/native and reads the provider keys
# from Envoy's environment: its config lists them in `# env NAME=value` lines (demo keys only).
mapfile -t native_env < <(scripts/native-env.sh "$DEMO_CONFIG")
# Envoy's own log at warning level keeps the terminal for the JSON access log (one line per request).
env "${native_env[@]}" "$ENVOY_BIN" -c "$DEMO_CONFIG" --concurrency 2 --use-dynamic-base-id --log-level warning \
  --file-flush-interval-msec 200 & pids+=($!)

is_ready() {
  "${PYTHON:-python3}" - <<'PY' 2>/dev/null
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen("http://127.0.0.1:9901/ready", timeout=1).status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}
ready=
for _ in $(seq 1 300); do
  if is_ready; then ready=1; break; fi
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || { echo "a demo process exited during startup" >&2; exit 1; }; done
  sleep 0.1
done
[[ -n $ready ]] || { echo "Envoy did not become ready within 30 s" >&2; exit 1; }

cat <<'BANNER'

  LLM gateway demo is up.
    API          http://127.0.0.1:10000   (OpenAI: /v1/chat/completions /v1/responses /v1/completions
                                           /v1/embeddings /v1/models; Anthropic: /v1/messages
                                           /v1/messages/count_tokens; every model on every API)
    Envoy admin  http://127.0.0.1:9901    (metrics: /stats/prometheus)
    Upstreams    mock providers on 127.0.0.1:18080 (OpenAI format), :18081 (Anthropic format),
                 :18082 (always 503), :18083 (Gemini API), :18084 (Bedrock Converse, SigV4);
                 what they received:
                 curl 127.0.0.1:18080/mock/requests

  Demo API keys
    sk-demo-team-a   every model, generous limits
    sk-demo-team-b   only gpt-4o-mini and fast
    sk-demo-tiny     5 requests a minute, 2,000 tokens a minute
  Demo models: gpt-4o-mini, fast, claude-sonnet-4-5, gpt-4o (failover pool), text-embedding-3-small,
               gemini-2.5-flash, bedrock-claude-sonnet-4-5
  JWT: scripts/demo-jwt.py alice team=research   (prints a token for the demo jwt_authn)
  Guardrails: prompt injections get 400 for everyone; text marked [flag:violence] is blocked for
    team-b and only flagged (x-llm-guard: flagged) for team-a (filters/guard/README.md)

  Try:
    curl -s 127.0.0.1:10000/v1/chat/completions -H 'authorization: Bearer sk-demo-team-a' \
      -H 'content-type: application/json' \
      -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'

  Claude Code on an OpenAI model (headless; the last variable keeps it off api.anthropic.com):
    ANTHROPIC_BASE_URL=http://127.0.0.1:10000 ANTHROPIC_API_KEY=sk-demo-team-a \
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 claude -p hello --model gpt-4o-mini

  Ctrl-C stops everything. Access log (JSON) follows.

BANNER

# Exit (and stop the rest) as soon as any process ends.
wait -n "${pids[@]}" || true
echo "a demo process exited; stopping the others" >&2
exit 1
