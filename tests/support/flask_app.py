#!/usr/bin/env python3
"""A Flask-JWT-Extended service for the interop tests (tests/interop.rs).

It sits behind authgate (`forward_authorization = true`) and verifies authgate's access
tokens itself, exactly as an application using Flask-JWT-Extended with the same key
would. Configured only through the environment:

    FLASK_PORT            port to listen on (127.0.0.1 only)
    JWT_ALGORITHM         HS256 | ES256 | ...
    JWT_SECRET_KEY        the HMAC secret (HS*)
    JWT_PUBLIC_KEY        the public key as PEM (asymmetric algorithms), or
    JWT_PUBLIC_KEY_FILE   a file holding it
    JWT_DECODE_AUDIENCE   expected `aud` (authgate)
    JWT_DECODE_ISSUER     expected `iss` (authgate)
    JWT_IDENTITY_CLAIM    default "sub"
    JWT_TOKEN_LOCATION    JSON list, default ["headers"]

Routes:
    GET /api/whoami   @jwt_required()            -> {"identity", "claims", "x_auth_user"}
    GET /api/fresh    @jwt_required(fresh=True)  -> {"identity"}
    GET /_seen        (no auth; the tests call it directly, not through authgate)
                      -> {"paths": [every other path this process has served]}

Needs: python3 -m pip install flask flask-jwt-extended "pyjwt[crypto]"
"""

import json
import os
import sys
import threading

try:
    from flask import Flask, jsonify, request
    from flask_jwt_extended import JWTManager, get_jwt, get_jwt_identity, jwt_required
    import jwt as pyjwt  # noqa: F401  (PyJWT, used by flask-jwt-extended)
    import cryptography  # noqa: F401  (pyjwt[crypto]: needed for ES256/RS256)
except ImportError as error:  # pragma: no cover - reported by the Rust test
    sys.stderr.write(
        "flask_app.py: a Python package is missing (%s); install them with:\n"
        '    python3 -m pip install flask flask-jwt-extended "pyjwt[crypto]"\n' % error
    )
    sys.exit(3)


def env(name, default=None):
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            sys.stderr.write("flask_app.py: %s is not set\n" % name)
            sys.exit(2)
        return default
    return value


app = Flask(__name__)
algorithm = env("JWT_ALGORITHM")
app.config["JWT_ALGORITHM"] = algorithm
if algorithm.startswith("HS"):
    app.config["JWT_SECRET_KEY"] = env("JWT_SECRET_KEY")
else:
    public = os.environ.get("JWT_PUBLIC_KEY")
    if not public:
        with open(env("JWT_PUBLIC_KEY_FILE"), encoding="ascii") as f:
            public = f.read()
    app.config["JWT_PUBLIC_KEY"] = public
app.config["JWT_DECODE_AUDIENCE"] = env("JWT_DECODE_AUDIENCE", "authgate")
app.config["JWT_DECODE_ISSUER"] = env("JWT_DECODE_ISSUER", "authgate")
app.config["JWT_IDENTITY_CLAIM"] = env("JWT_IDENTITY_CLAIM", "sub")
app.config["JWT_TOKEN_LOCATION"] = json.loads(env("JWT_TOKEN_LOCATION", '["headers"]'))
jwt_manager = JWTManager(app)

seen_lock = threading.Lock()
seen_paths = []


@app.before_request
def record():
    if request.path != "/_seen":
        with seen_lock:
            seen_paths.append(request.path)


@app.after_request
def report_refusal(response):
    # Flask-JWT-Extended's reason for a refusal, for the test's failure message.
    if response.status_code >= 400:
        sys.stderr.write(
            "flask_app.py: %s %s -> %d %s\n"
            % (request.method, request.path, response.status_code, response.get_data(as_text=True).strip())
        )
        sys.stderr.flush()
    return response


@app.get("/_seen")
def seen():
    with seen_lock:
        return jsonify({"paths": list(seen_paths)})


@app.get("/api/whoami")
@jwt_required()
def whoami():
    return jsonify(
        {
            "identity": get_jwt_identity(),
            "claims": get_jwt(),
            "x_auth_user": request.headers.get("X-Auth-User"),
        }
    )


@app.get("/api/fresh")
@jwt_required(fresh=True)
def fresh_only():
    return jsonify({"identity": get_jwt_identity()})


if __name__ == "__main__":
    port = int(env("FLASK_PORT"))
    sys.stderr.write("flask_app.py: serving on 127.0.0.1:%d (%s)\n" % (port, algorithm))
    sys.stderr.flush()
    app.run(host="127.0.0.1", port=port, debug=False, use_reloader=False, threaded=True)
