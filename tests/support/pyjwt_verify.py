#!/usr/bin/env python3
"""Verifies a JWT against a JWKS with PyJWT, independently of authgate's own code.

Usage: pyjwt_verify.py JWKS_JSON TOKEN [AUDIENCE ISSUER]

Picks the JWKS key whose `kid` equals the token header's `kid`, verifies the signature
with that key under the key's own algorithm, checks `exp`, `nbf`, `iat`, `aud` and `iss`,
and prints `{"header": ..., "claims": ..., "jwk_kid": ...}` as JSON on stdout.

Exit codes: 0 verified; 1 the token did not verify (the reason on stderr); 2 usage;
3 PyJWT (with its `crypto` extra) is not installed.
"""

import json
import sys

try:
    import jwt
    from jwt.algorithms import has_crypto
except ImportError as e:  # pragma: no cover - depends on the machine
    print(
        f"PyJWT is not installed ({e}); install it with: python3 -m pip install 'pyjwt[crypto]'",
        file=sys.stderr,
    )
    sys.exit(3)

if not has_crypto:
    print(
        "PyJWT is installed without its crypto extra; install it with: "
        "python3 -m pip install 'pyjwt[crypto]'",
        file=sys.stderr,
    )
    sys.exit(3)


def main() -> int:
    if len(sys.argv) not in (3, 5):
        print(__doc__, file=sys.stderr)
        return 2
    jwks = json.loads(sys.argv[1])
    token = sys.argv[2]
    audience = sys.argv[3] if len(sys.argv) == 5 else "authgate"
    issuer = sys.argv[4] if len(sys.argv) == 5 else "authgate"
    try:
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        candidates = [k for k in jwks.get("keys", []) if k.get("kid") == kid]
        if len(candidates) != 1:
            print(f"no single JWKS key with kid {kid!r}", file=sys.stderr)
            return 1
        jwk = jwt.PyJWK(candidates[0])
        alg = candidates[0]["alg"]
        claims = jwt.decode(
            token,
            key=jwk,
            algorithms=[alg],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
        )
    except jwt.PyJWTError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    json.dump({"header": header, "claims": claims, "jwk_kid": candidates[0]["kid"]}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
