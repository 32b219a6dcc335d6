#!/usr/bin/env bash
# Prints the SHA-256 digest of an API key for llm_auth's config. Reads the key from stdin (or prompts
# without echo), so it never lands in shell history or a process list.
set -euo pipefail
if [[ -t 0 ]]; then
  read -rsp "API key: " key; echo >&2
else
  IFS= read -r key || true
fi
[[ -n $key ]] || { echo "no key given" >&2; exit 1; }
printf '%s' "$key" | sha256sum | cut -d' ' -f1
