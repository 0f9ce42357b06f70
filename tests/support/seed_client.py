"""The client flow of a Flask-JWT-Extended seed app, as its own client runs it: register,
log in, call /protected with the access token, refresh at /token/refresh with the refresh
token, call /protected again, and read the {"msg": ...} of a refusal. Standard library
only; prints one JSON line per step and exits non-zero at the first surprise.

    seed_client.py BASE_URL
"""
import json
import sys
import urllib.error
import urllib.request

BASE = sys.argv[1]


def call(method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    payload = json.loads(text) if text else None
    print(json.dumps({"step": f"{method} {path}", "status": status, "body": payload}), flush=True)
    return status, payload


def expect(condition, what):
    if not condition:
        print(json.dumps({"failed": what}), flush=True)
        sys.exit(1)


user = {"username": "seeduser", "password": "seed-password-1"}
status, _ = call("POST", "/register", user)
expect(status in (200, 201), "register")
status, tokens = call("POST", "/login", user)
expect(status == 200 and "access_token" in tokens and "refresh_token" in tokens, "login")
status, me = call("GET", "/protected", token=tokens["access_token"])
expect(status == 200 and me.get("logged_in_as") == "seeduser", "protected")
status, fresh = call("POST", "/token/refresh", token=tokens["refresh_token"])
expect(status == 200 and "access_token" in fresh, "refresh")
status, me = call("GET", "/protected", token=fresh["access_token"])
expect(status == 200 and me.get("logged_in_as") == "seeduser", "protected after refresh")
status, refused = call("GET", "/protected")
expect(status == 401 and isinstance(refused.get("msg"), str), "a refusal has msg")
print(json.dumps({"ok": True}), flush=True)
