#!/usr/bin/env bash
# Prints a service-account key file (one line of JSON) with a fresh RSA key that signs nothing: the
# value `envoy --mode validate` gets for a Vertex AI provider's service_account_env, since
# llm_provider checks the key when it loads its configuration. Not a credential of anything.
set -euo pipefail
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null | python3 -c '
import json, sys
print(json.dumps({
    "type": "service_account",
    "project_id": "placeholder",
    "private_key_id": "placeholder",
    "private_key": sys.stdin.read(),
    "client_email": "validate@placeholder.iam.gserviceaccount.com",
    "token_uri": "https://oauth2.googleapis.com/token",
}))'
