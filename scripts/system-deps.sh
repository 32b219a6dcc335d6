#!/usr/bin/env bash
# Debian packages the tests need beyond Rust and Python: redis-server (global-limit tests and the
# rate-limit service's own tests) and openssl (its TLS test makes a CA). Installs what is missing.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || [[ -x /usr/bin/redis-server ]] || missing+=(redis-server)
command -v openssl >/dev/null || missing+=(openssl)
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
