#!/usr/bin/env python3
"""Mints a JWT for the demo gateway (envoy/demo.yaml's DEMO-ONLY HS256 key). Standard library only.

usage: scripts/demo-jwt.py SUBJECT [CLAIM=VALUE ...] [--ttl SECONDS]
e.g.   scripts/demo-jwt.py alice team=research
"""
import base64, hashlib, hmac, json, sys, time

DEMO_KEY_B64URL = "NsvDmypPnCwM3PBaZHlUIs_XqBMZQFCa_3HajoPjpoc"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main(argv):
    args = [a for a in argv if not a.startswith("--ttl")]
    ttl = 3600
    for a in argv:
        if a.startswith("--ttl="):
            ttl = int(a.split("=", 1)[1])
    if not args:
        sys.exit(__doc__)
    now = int(time.time())
    claims = {"iss": "llm-gateway-demo", "aud": "llm-gateway", "sub": args[0], "iat": now, "exp": now + ttl}
    for pair in args[1:]:
        name, _, value = pair.partition("=")
        claims[name] = value
    header = {"alg": "HS256", "typ": "JWT", "kid": "demo"}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    key = base64.urlsafe_b64decode(DEMO_KEY_B64URL + "=" * (-len(DEMO_KEY_B64URL) % 4))
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    print(signing_input + "." + b64url(signature))


if __name__ == "__main__":
    main(sys.argv[1:])
