//! The account endpoints through the real gateway on a real SQLite store: register, login,
//! refresh (rotation and reuse detection), logout, me and the JWKS; the tokens checked by
//! an independent JWT library (PyJWT); the `authgate user …` commands run as real
//! processes against the store of a running gateway; login rate limits; and the store
//! failing under a lock held by another process.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use authgate::jwt::Algorithm;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::process::run_cli;
use common::{Gateway, REVOKED, Setup, Tokens};
use http::HeaderMap;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
/// Login limits high enough never to matter, for the tests that are not about them.
const OPEN_LIMITS: &str = "login_rate_per_ip = \"1000/m\"\nlogin_rate_per_user = \"1000/m\"";
/// `access_ttl` and `refresh_ttl` configured below.
const ACCESS_TTL: i64 = 600;
const REFRESH_TTL: i64 = 3600;
/// The product promises that a revocation made from the command line is enforced within
/// one second; the tests wait a little longer before they call it a failure.
const REVOCATION_DEADLINE: Duration = Duration::from_secs(1);
const POLL_LIMIT: Duration = Duration::from_millis(1500);

const REUSED: &str = "the refresh token has already been used";
const USERNAME_RULE: &str =
    "a username is 3 to 64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit";

/// The config text: the harness head with 10 min access and 1 h refresh tokens, a SQLite
/// store next to it, the given `[accounts]` lines, an admin-only route and a catch-all.
fn config(setup: &Setup, accounts: &str) -> String {
    let head = setup.head();
    assert!(head.contains("leeway = \"5s\""), "the harness head changed");
    let head = head.replace(
        "leeway = \"5s\"",
        "leeway = \"5s\"\naccess_ttl = \"10m\"\nrefresh_ttl = \"1h\"",
    );
    format!(
        "{head}\n[store]\nurl = \"sqlite://authgate.db\"\n\n[accounts]\n{accounts}\n\n\
         [[route]]\npath = \"/admin\"\nupstream = \"app\"\nrequire = {{ roles = [\"admin\"] }}\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n"
    )
}

/// One response, read whole.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    text: String,
    /// The body as JSON; `Null` when it is empty.
    json: Value,
}

impl Reply {
    async fn read(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("response body");
        let text = String::from_utf8(bytes.to_vec()).expect("utf-8 body");
        let json = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("a non-JSON body ({e}) with status {status}: {text:?}"))
        };
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    /// Asserts an exact error body `{"error", "error_description"}` and its status.
    #[track_caller]
    fn assert_error(&self, status: u16, code: &str, description: &str) {
        assert_eq!(
            (self.status, &self.json),
            (
                status,
                &json!({ "error": code, "error_description": description })
            ),
            "full response: {self:?}"
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
    }

    /// A 401 `invalid_token` with the RFC 6750 challenge naming the reason.
    #[track_caller]
    fn assert_invalid_token(&self, description: &str) {
        self.assert_error(401, "invalid_token", description);
        assert_eq!(
            self.header("www-authenticate"),
            Some(
                format!(
                    "Bearer realm=\"authgate\", error=\"invalid_token\", error_description=\"{description}\""
                )
                .as_str()
            ),
            "{self:?}"
        );
    }

    /// A 401 for a request without credentials: the bare challenge (RFC 6750 §3).
    #[track_caller]
    fn assert_missing_token(&self) {
        self.assert_error(401, "missing_token", "this route requires a bearer token");
        assert_eq!(
            self.header("www-authenticate"),
            Some("Bearer realm=\"authgate\""),
            "{self:?}"
        );
    }

    #[track_caller]
    fn assert_invalid_credentials(&self) {
        self.assert_error(
            401,
            "invalid_credentials",
            "the username or password is wrong",
        );
        assert_eq!(
            self.header("www-authenticate"),
            Some("Bearer realm=\"authgate\""),
            "{self:?}"
        );
    }

    /// The two tokens of a 200 from login or refresh, after checking the body's shape.
    #[track_caller]
    fn tokens(&self) -> Tokens {
        assert_eq!(self.status, 200, "{self:?}");
        let object = self.json.as_object().expect("a JSON object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["access_token", "expires_in", "refresh_token", "token_type"],
            "{self:?}"
        );
        assert_eq!(self.json["token_type"], "Bearer");
        assert_eq!(self.json["expires_in"], ACCESS_TTL);
        assert_eq!(self.header("cache-control"), Some("no-store"));
        Tokens {
            access: self.json["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            refresh: self.json["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
        }
    }
}

/// A running gateway with accounts on, and a client for it.
struct Env {
    // Dropped first: the gateway stops before its folder goes.
    gw: Option<Gateway>,
    http: reqwest::Client,
    setup: Setup,
}

impl Env {
    async fn start(accounts: &str) -> Env {
        let setup = Setup::new(Algorithm::ES256).await;
        let gw = setup.start_with(&config(&setup, accounts)).await;
        Env {
            gw: Some(gw),
            http: setup.client(),
            setup,
        }
    }

    fn gw(&self) -> &Gateway {
        self.gw.as_ref().expect("a running gateway")
    }

    /// Stops the gateway (after closing the client's connections, so the drain is
    /// immediate) and starts a new one on the same folder and store with `accounts`.
    async fn restart(&mut self, accounts: &str) {
        self.http = self.setup.client();
        if let Some(gw) = self.gw.take() {
            gw.stop().await;
        }
        let config = config(&self.setup, accounts);
        self.gw = Some(self.setup.start_with(&config).await);
    }

    fn url(&self, path: &str) -> String {
        self.gw().url(path)
    }

    fn config_path(&self) -> PathBuf {
        self.setup.dir.path().join("gateway.toml")
    }

    fn db_path(&self) -> PathBuf {
        self.setup.dir.path().join("authgate.db")
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        Reply::read(request.send().await.expect("send")).await
    }

    async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    async fn post_raw(&self, path: &str, content_type: &str, body: &str) -> Reply {
        self.send(
            self.http
                .post(self.url(path))
                .header("content-type", content_type)
                .body(body.to_owned()),
        )
        .await
    }

    async fn post_bearer(&self, path: &str, token: &str) -> Reply {
        self.send(self.http.post(self.url(path)).bearer_auth(token))
            .await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }

    async fn register(&self, username: &str, password: &str) -> Reply {
        self.post_json(
            "/auth/register",
            &json!({ "username": username, "password": password }),
        )
        .await
    }

    async fn login(&self, username: &str, password: &str) -> Reply {
        self.post_json(
            "/auth/login",
            &json!({ "username": username, "password": password }),
        )
        .await
    }

    /// Registers `username` with [`PASSWORD`] and logs in.
    async fn user_with_tokens(&self, username: &str) -> Tokens {
        let reply = self.register(username, PASSWORD).await;
        assert_eq!(reply.status, 201, "{reply:?}");
        self.login(username, PASSWORD).await.tokens()
    }

    async fn refresh(&self, refresh_token: &str) -> Reply {
        self.post_bearer("/auth/refresh", refresh_token).await
    }

    /// Asserts that `access` reaches the upstream through the catch-all route.
    async fn assert_accepted(&self, access: &str) {
        let reply = self.get("/app/x", Some(access)).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }

    /// Polls a protected route with `access` until it is refused as revoked; returns how
    /// long that took, or fails after [`POLL_LIMIT`].
    async fn refused_after(&self, access: &str, since: Instant) -> Duration {
        loop {
            let reply = self.get("/app/x", Some(access)).await;
            if reply.status == 401 {
                reply.assert_invalid_token(REVOKED);
                return since.elapsed();
            }
            assert_eq!(reply.status, 200, "{reply:?}");
            assert!(
                since.elapsed() < POLL_LIMIT,
                "the access token was still accepted {:?} after the revocation",
                since.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Runs `authgate --config <gateway.toml> ARGS` (with `stdin`) off the runtime.
    async fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let config = self.config_path();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let stdin = stdin.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_cli(&config, &args, stdin.as_deref())
        })
        .await
        .expect("the CLI task")
    }

    /// As [`Env::cli`], asserting exit code 0; the standard output.
    async fn cli_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let output = self.cli(args, stdin).await;
        assert!(
            output.status.success(),
            "authgate {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 stdout")
    }

    /// A connection of our own to the gateway's SQLite file.
    fn db(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.db_path()).expect("open the store");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        conn
    }

    fn count_users(&self, name: Option<&str>) -> i64 {
        let conn = self.db();
        match name {
            Some(name) => conn.query_row(
                "SELECT count(*) FROM users WHERE name = ?1",
                [name],
                |row| row.get(0),
            ),
            None => conn.query_row("SELECT count(*) FROM users", [], |row| row.get(0)),
        }
        .expect("count users")
    }
}

/// The claims of a JWT, decoded without verification (for values the gateway chose).
fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWS payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
        })
}

/// What PyJWT made of a token: `Ok({"header", "claims", "jwk_kid"})` when it verified,
/// `Err(reason)` when PyJWT refused it, run by the test Python (`common::python()`, which
/// installs PyJWT). Panics (never skips) when that fails.
async fn pyjwt_verify(jwks: &str, token: &str) -> Result<Value, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/pyjwt_verify.py");
    let (jwks, token) = (jwks.to_owned(), token.to_owned());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(common::python())
            .arg(&script)
            .arg(&jwks)
            .arg(&token)
            .output()
    })
    .await
    .expect("the python task");
    let output = output.unwrap_or_else(|e| panic!("the test Python could not be started ({e})"));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    match output.status.code() {
        Some(0) => Ok(serde_json::from_slice(&output.stdout).expect("the script's JSON")),
        Some(1) => Err(stderr),
        Some(3) => panic!("PyJWT is missing from the test Python: {stderr}"),
        other => panic!("the PyJWT script failed (exit {other:?}): {stderr}"),
    }
}

// ------------------------------------------------------------------------------------------
// 1. Each endpoint's statuses and exact bodies
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_answers_201_409_400_with_exact_bodies() {
    let env = Env::start(OPEN_LIMITS).await;

    let created = env.register("alice", PASSWORD).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.json, json!({ "username": "alice" }));
    assert_eq!(created.header("cache-control"), Some("no-store"));
    assert_eq!(created.header("content-type"), Some("application/json"));

    env.register("alice", "another long password")
        .await
        .assert_error(409, "username_taken", "this username is taken");

    for bad in ["a b", "ab", "-alice", "al/ice", &"a".repeat(65)] {
        env.register(bad, PASSWORD)
            .await
            .assert_error(400, "invalid_request", USERNAME_RULE);
    }
    // min_password_length defaults to 10: nine characters are refused, ten accepted.
    env.register("bob", "123456789").await.assert_error(
        400,
        "invalid_request",
        "the password is too short",
    );
    let ten = env.register("carol", "1234567890").await;
    assert_eq!(ten.status, 201, "{ten:?}");

    let malformed = "the body must be JSON (or a form) with the expected fields";
    env.post_raw("/auth/register", "application/json", "{\"username\": ")
        .await
        .assert_error(400, "invalid_request", malformed);
    env.post_json("/auth/register", &json!({ "username": "dave" }))
        .await
        .assert_error(400, "invalid_request", malformed);

    let wrong_method = env.get("/auth/register", None).await;
    wrong_method.assert_error(
        405,
        "method_not_allowed",
        "this endpoint does not take this method",
    );
    assert_eq!(wrong_method.header("allow"), Some("POST"));

    assert_eq!(env.count_users(None), 2, "alice and carol, nobody else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_answers_200_401_400_405_with_exact_bodies() {
    let env = Env::start(OPEN_LIMITS).await;
    assert_eq!(env.register("alice", PASSWORD).await.status, 201);

    let tokens = env.login("alice", PASSWORD).await.tokens();
    assert_eq!(payload(&tokens.access)["type"], "access");
    assert_eq!(payload(&tokens.refresh)["type"], "refresh");
    env.assert_accepted(&tokens.access).await;

    // A form post works too, whatever its content type says.
    let form = env
        .post_raw(
            "/auth/login",
            "application/x-www-form-urlencoded",
            "username=alice&password=correct+horse+battery",
        )
        .await
        .tokens();
    env.assert_accepted(&form.access).await;

    env.login("alice", "wrong password!")
        .await
        .assert_invalid_credentials();
    env.login("nobody", PASSWORD)
        .await
        .assert_invalid_credentials();

    let malformed = "the body must be JSON (or a form) with the expected fields";
    env.post_raw(
        "/auth/login",
        "application/json",
        "{\"username\": \"alice\",",
    )
    .await
    .assert_error(400, "invalid_request", malformed);
    env.post_json("/auth/login", &json!({ "username": "alice" }))
        .await
        .assert_error(400, "invalid_request", malformed);
    env.post_json("/auth/login", &json!(["alice", PASSWORD]))
        .await
        .assert_error(400, "invalid_request", malformed);

    let get = env.get("/auth/login", None).await;
    get.assert_error(
        405,
        "method_not_allowed",
        "this endpoint does not take this method",
    );
    assert_eq!(get.header("allow"), Some("POST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_and_jwks_answer_with_exact_bodies() {
    let env = Env::start(OPEN_LIMITS).await;
    let tokens = env.user_with_tokens("alice").await;

    let me = env.get("/auth/me", Some(&tokens.access)).await;
    assert_eq!(me.status, 200, "{me:?}");
    let exp = payload(&tokens.access)["exp"].as_i64().expect("exp");
    assert_eq!(
        me.json,
        json!({ "logged_in_as": "alice", "roles": [], "exp": exp })
    );
    assert_eq!(me.header("cache-control"), Some("no-store"));

    env.get("/auth/me", None).await.assert_missing_token();
    env.get("/auth/me", Some(&tokens.refresh))
        .await
        .assert_invalid_token("the token is not an access token");
    env.get("/auth/me", Some("not.a.token"))
        .await
        .assert_invalid_token("the token is malformed");
    let post_me = env.post_bearer("/auth/me", &tokens.access).await;
    post_me.assert_error(
        405,
        "method_not_allowed",
        "this endpoint does not take this method",
    );
    assert_eq!(post_me.header("allow"), Some("GET"));

    let jwks = env.get("/.well-known/jwks.json", None).await;
    assert_eq!(jwks.status, 200, "{jwks:?}");
    assert_eq!(jwks.header("content-type"), Some("application/json"));
    let keys = jwks.json["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "{jwks:?}");
    let key = &keys[0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["kid"], env.setup.key.key.kid.as_str());
    assert!(key["x"].is_string() && key["y"].is_string(), "{key}");
    assert!(key.get("d").is_none(), "the private key leaked: {key}");

    let post = env.post_json("/.well-known/jwks.json", &json!({})).await;
    post.assert_error(
        405,
        "method_not_allowed",
        "this endpoint does not take this method",
    );
    let allow = post.header("allow").expect("an Allow header");
    assert!(
        allow.split(',').any(|m| m.trim() == "GET"),
        "Allow: {allow}"
    );
}

// ------------------------------------------------------------------------------------------
// 2. The tokens, verified by an independent library
// ------------------------------------------------------------------------------------------

/// When a token was issued: the clock read before and after the call that issued it. PyJWT runs
/// later (its first call may build the venv), so `iat` is checked against this, not the clock.
struct Issued(i64, i64);

/// Checks what PyJWT verified; returns the claims.
#[track_caller]
fn assert_verified(
    verified: &Value,
    kid: &str,
    token_type: &str,
    fresh: bool,
    ttl: i64,
    Issued(before, after): &Issued,
) -> Value {
    let header = &verified["header"];
    assert_eq!(header["alg"], "ES256", "{verified}");
    assert_eq!(header["kid"], kid, "{verified}");
    assert_eq!(verified["jwk_kid"], kid, "{verified}");
    let claims = verified["claims"].clone();
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(claims["type"], token_type, "{claims}");
    assert_eq!(claims["fresh"], fresh, "{claims}");
    assert_eq!(claims["iss"], "authgate", "{claims}");
    assert_eq!(claims["aud"], "authgate", "{claims}");
    assert_eq!(claims["roles"], json!([]), "{claims}");
    let jti = claims["jti"].as_str().expect("jti");
    assert!(is_uuid(jti), "jti {jti:?} is not a UUID");
    let iat = claims["iat"].as_i64().expect("iat");
    assert_eq!(claims["nbf"].as_i64(), Some(iat), "{claims}");
    assert_eq!(claims["exp"].as_i64(), Some(iat + ttl), "{claims}");
    assert!(
        (before - 1..=after + 1).contains(&iat),
        "iat {iat} is not between {before} and {after}, when the token was issued"
    );
    claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_verify_with_pyjwt_against_the_jwks() {
    // The test Python first: building it may take minutes, and the tokens must not age meanwhile.
    tokio::task::spawn_blocking(common::python)
        .await
        .expect("the test Python");
    let env = Env::start(OPEN_LIMITS).await;
    let before = common::now();
    let login = env.user_with_tokens("alice").await;
    let logged_in = Issued(before, common::now());
    let jwks = env.get("/.well-known/jwks.json", None).await;
    assert_eq!(jwks.status, 200, "{jwks:?}");
    let kid = jwks.json["keys"][0]["kid"]
        .as_str()
        .expect("kid")
        .to_owned();
    assert_eq!(kid, env.setup.key.key.kid);

    // A password login: a fresh access token.
    let verified = pyjwt_verify(&jwks.text, &login.access)
        .await
        .unwrap_or_else(|e| panic!("PyJWT refused the access token from login: {e}"));
    let access = assert_verified(&verified, &kid, "access", true, ACCESS_TTL, &logged_in);

    let verified = pyjwt_verify(&jwks.text, &login.refresh)
        .await
        .unwrap_or_else(|e| panic!("PyJWT refused the refresh token: {e}"));
    let refresh = assert_verified(&verified, &kid, "refresh", false, REFRESH_TTL, &logged_in);
    assert_ne!(access["jti"], refresh["jti"]);

    // A refresh: the new access token is not fresh.
    let before = common::now();
    let rotated = env.refresh(&login.refresh).await.tokens();
    let refreshed_at = Issued(before, common::now());
    let verified = pyjwt_verify(&jwks.text, &rotated.access)
        .await
        .unwrap_or_else(|e| panic!("PyJWT refused the access token from refresh: {e}"));
    let refreshed = assert_verified(&verified, &kid, "access", false, ACCESS_TTL, &refreshed_at);
    assert_ne!(refreshed["jti"], access["jti"]);
    let verified = pyjwt_verify(&jwks.text, &rotated.refresh)
        .await
        .unwrap_or_else(|e| panic!("PyJWT refused the rotated refresh token: {e}"));
    assert_verified(
        &verified,
        &kid,
        "refresh",
        false,
        REFRESH_TTL,
        &refreshed_at,
    );

    // The script really verifies: a token whose claims were altered is refused.
    let mut parts: Vec<String> = login.access.split('.').map(str::to_owned).collect();
    let mut claims = payload(&login.access);
    claims["sub"] = json!("mallory");
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    let forged = parts.join(".");
    let refused = pyjwt_verify(&jwks.text, &forged)
        .await
        .expect_err("PyJWT accepted a token with altered claims");
    assert!(refused.contains("InvalidSignature"), "{refused}");
}

// ------------------------------------------------------------------------------------------
// 3. Rotation, reuse detection and concurrent refreshes
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_a_reused_token_revokes_its_family() {
    let env = Env::start(OPEN_LIMITS).await;
    let first = env.user_with_tokens("alice").await;

    // Rotation with the token as a bearer header.
    let second = env.refresh(&first.refresh).await.tokens();
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    env.assert_accepted(&second.access).await;
    let me = env.get("/auth/me", Some(&second.access)).await;
    assert_eq!(me.json["logged_in_as"], "alice", "{me:?}");

    // Rotation with the token in the JSON body.
    let third = env
        .post_json("/auth/refresh", &json!({ "refresh_token": second.refresh }))
        .await
        .tokens();
    env.assert_accepted(&third.access).await;

    // The same token in both places is one token.
    let both = env
        .send(
            env.http
                .post(env.url("/auth/refresh"))
                .bearer_auth(&third.refresh)
                .json(&json!({ "refresh_token": third.refresh })),
        )
        .await;
    let fourth = both.tokens();

    // Failures that leave the family alone.
    env.post_bearer("/auth/refresh", &fourth.access)
        .await
        .assert_invalid_token("the token is not a refresh token");
    env.post_json("/auth/refresh", &json!({}))
        .await
        .assert_missing_token();
    env.post_bearer("/auth/refresh", "garbage")
        .await
        .assert_invalid_token("the token is malformed");
    let two = env
        .send(
            env.http
                .post(env.url("/auth/refresh"))
                .bearer_auth(&fourth.refresh)
                .json(&json!({ "refresh_token": first.refresh })),
        )
        .await;
    two.assert_error(
        400,
        "invalid_request",
        "the request carries more than one credential",
    );
    let get = env.get("/auth/refresh", Some(&fourth.refresh)).await;
    get.assert_error(
        405,
        "method_not_allowed",
        "this endpoint does not take this method",
    );
    assert_eq!(get.header("allow"), Some("POST"));

    // A spent token presented again: refused, and the whole family dies with it.
    env.refresh(&first.refresh)
        .await
        .assert_invalid_token(REUSED);
    env.refresh(&fourth.refresh)
        .await
        .assert_invalid_token(REVOKED);
    // The family stays dead: the spent token again is "revoked" now.
    env.refresh(&second.refresh)
        .await
        .assert_invalid_token(REVOKED);

    // Another session of the same user is a different family, untouched.
    let other = env.login("alice", PASSWORD).await.tokens();
    let next = env.refresh(&other.refresh).await.tokens();
    env.assert_accepted(&next.access).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_refreshes_get_one_200_and_one_401_and_kill_the_family() {
    let env = Env::start(OPEN_LIMITS).await;
    assert_eq!(env.register("alice", PASSWORD).await.status, 201);
    for round in 0..3 {
        let tokens = env.login("alice", PASSWORD).await.tokens();
        // Two connections, so the requests really run side by side.
        let other_client = env.setup.client();
        let (a, b) = tokio::join!(
            env.send(
                env.http
                    .post(env.url("/auth/refresh"))
                    .bearer_auth(&tokens.refresh)
            ),
            env.send(
                other_client
                    .post(env.url("/auth/refresh"))
                    .bearer_auth(&tokens.refresh)
            ),
        );
        let (won, lost) = match (a.status, b.status) {
            (200, 401) => (a, b),
            (401, 200) => (b, a),
            _ => panic!("round {round}: expected one 200 and one 401, got {a:?} and {b:?}"),
        };
        lost.assert_invalid_token(REUSED);
        let winner = won.tokens();
        // The loser's refusal revoked the family: the winner's new refresh token is dead.
        env.refresh(&winner.refresh)
            .await
            .assert_invalid_token(REVOKED);
    }
}

// ------------------------------------------------------------------------------------------
// 4. Logout
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_refuses_both_tokens_and_other_sessions_go_on() {
    let mut env = Env::start(OPEN_LIMITS).await;
    let tokens = env.user_with_tokens("alice").await;
    env.assert_accepted(&tokens.access).await;

    let logout = env
        .post_json(
            "/auth/logout",
            &json!({ "refresh_token": tokens.refresh, "access_token": tokens.access }),
        )
        .await;
    assert_eq!(logout.status, 204, "{logout:?}");
    assert_eq!(logout.text, "", "a 204 has no body");

    env.get("/app/x", Some(&tokens.access))
        .await
        .assert_invalid_token(REVOKED);
    env.get("/auth/me", Some(&tokens.access))
        .await
        .assert_invalid_token(REVOKED);
    env.refresh(&tokens.refresh)
        .await
        .assert_invalid_token(REVOKED);

    // A second login of the same user is a new session and works.
    let again = env.login("alice", PASSWORD).await.tokens();
    env.assert_accepted(&again.access).await;
    let rotated = env.refresh(&again.refresh).await.tokens();
    env.assert_accepted(&rotated.access).await;

    // Just an access token as the bearer: it alone is refused afterwards.
    let bearer_logout = env.post_bearer("/auth/logout", &rotated.access).await;
    assert_eq!(bearer_logout.status, 204, "{bearer_logout:?}");
    env.get("/app/x", Some(&rotated.access))
        .await
        .assert_invalid_token(REVOKED);
    // Its refresh token was not named, so it still works.
    let last = env.refresh(&rotated.refresh).await.tokens();

    // The refresh token as the bearer: its family is revoked.
    let refresh_logout = env.post_bearer("/auth/logout", &last.refresh).await;
    assert_eq!(refresh_logout.status, 204, "{refresh_logout:?}");
    env.refresh(&last.refresh)
        .await
        .assert_invalid_token(REVOKED);

    // No token at all, or a bad one.
    env.post_raw("/auth/logout", "application/json", "")
        .await
        .assert_missing_token();
    env.post_json("/auth/logout", &json!({}))
        .await
        .assert_missing_token();
    env.post_bearer("/auth/logout", "garbage")
        .await
        .assert_invalid_token("the token is malformed");

    // An acknowledged logout survives a restart of the gateway.
    env.restart(OPEN_LIMITS).await;
    env.get("/app/x", Some(&tokens.access))
        .await
        .assert_invalid_token(REVOKED);
    env.get("/app/x", Some(&rotated.access))
        .await
        .assert_invalid_token(REVOKED);
    env.refresh(&tokens.refresh)
        .await
        .assert_invalid_token(REVOKED);
    env.assert_accepted(&last.access).await;
}

// ------------------------------------------------------------------------------------------
// 5. The `authgate user …` commands against a running gateway
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_revoke_from_the_command_line_is_enforced_within_a_second() {
    let env = Env::start(OPEN_LIMITS).await;
    let alice = env.user_with_tokens("alice").await;
    let bob = env.user_with_tokens("bob").await;
    env.assert_accepted(&alice.access).await;

    let out = env.cli_ok(&["user", "revoke", "alice"], None).await;
    let revoked_at = Instant::now();
    assert!(out.contains("alice"), "{out}");

    let took = env.refused_after(&alice.access, revoked_at).await;
    assert!(
        took <= REVOCATION_DEADLINE,
        "the revocation took {took:?} to be enforced"
    );
    env.refresh(&alice.refresh)
        .await
        .assert_invalid_token(REVOKED);

    // Only alice: bob's tokens are untouched.
    env.assert_accepted(&bob.access).await;
    env.refresh(&bob.refresh).await.tokens();

    let unknown = env.cli(&["user", "revoke", "nobody"], None).await;
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_list_disable_and_enable_from_the_command_line() {
    let env = Env::start(OPEN_LIMITS).await;

    // `user add` with a role; the password on standard input.
    let out = env
        .cli_ok(
            &["user", "add", "root", "--role", "admin"],
            Some(&format!("{PASSWORD}\n")),
        )
        .await;
    assert!(out.contains("root"), "{out}");
    let root = env.login("root", PASSWORD).await.tokens();
    assert_eq!(payload(&root.access)["roles"], json!(["admin"]));
    let me = env.get("/auth/me", Some(&root.access)).await;
    assert_eq!(me.json["roles"], json!(["admin"]), "{me:?}");
    env.setup.upstream.clear();
    let admin = env.get("/admin/panel", Some(&root.access)).await;
    assert_eq!(admin.status, 200, "{admin:?}");
    let received = env.setup.upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].headers["x-auth-user"], "root");
    assert_eq!(received[0].headers["x-auth-roles"], "admin");

    // A registered user has no roles: the admin route refuses it.
    let alice = env.user_with_tokens("alice").await;
    env.get("/admin/panel", Some(&alice.access))
        .await
        .assert_error(
            403,
            "insufficient_scope",
            "the token lacks a role this route requires",
        );

    let list = env.cli_ok(&["user", "list"], None).await;
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(
        lines,
        [
            "alice\troles=\tenabled\tlogin=password",
            "root\troles=admin\tenabled\tlogin=password"
        ],
        "{list}"
    );

    // `user disable`: no login, and the tokens it holds are refused.
    env.cli_ok(&["user", "disable", "alice"], None).await;
    let disabled_at = Instant::now();
    let disabled_second = common::now();
    env.login("alice", PASSWORD)
        .await
        .assert_invalid_credentials();
    let took = env.refused_after(&alice.access, disabled_at).await;
    assert!(
        took <= REVOCATION_DEADLINE,
        "disabling took {took:?} to be enforced"
    );
    env.refresh(&alice.refresh)
        .await
        .assert_invalid_token(REVOKED);
    let list = env.cli_ok(&["user", "list"], None).await;
    assert!(list.contains("alice\troles=\tdisabled"), "{list}");

    // `user enable`: logins work again, and so do the tokens they give. (A login in the
    // very second of the disable is the case of
    // `a_login_right_after_a_revocation_gets_tokens_that_work`; here the clock moves on.)
    wait_until_second(disabled_second + 1).await;
    env.cli_ok(&["user", "enable", "alice"], None).await;
    let enabled = env.login("alice", PASSWORD).await.tokens();
    env.assert_accepted(&enabled.access).await;
    let rotated = env.refresh(&enabled.refresh).await.tokens();
    env.assert_accepted(&rotated.access).await;
    let list = env.cli_ok(&["user", "list"], None).await;
    assert!(list.contains("alice\troles=\tenabled"), "{list}");

    // Root was never touched.
    env.assert_accepted(&root.access).await;
}

/// Sleeps until the clock (seconds, as tokens count them) reads at least `second`.
async fn wait_until_second(second: i64) {
    while common::now() < second {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `user revoke` refuses "all access tokens issued before now": a login after the command
/// returned is issued after that, so its tokens must work, even within the same second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_right_after_a_revocation_gets_tokens_that_work() {
    let env = Env::start(OPEN_LIMITS).await;
    assert_eq!(env.register("alice", PASSWORD).await.status, 201);

    // Start at the beginning of a second, so the revocation and the login share it.
    wait_until_second(common::now() + 1).await;
    let started = Instant::now();
    env.cli_ok(&["user", "revoke", "alice"], None).await;
    let revoked_in = common::now();
    let tokens = env.login("alice", PASSWORD).await.tokens();
    let issued_at = payload(&tokens.access)["iat"].as_i64().expect("iat");
    let took = started.elapsed();
    // Give the gateway time to read the revocation from the store (it polls every 250 ms).
    tokio::time::sleep(Duration::from_millis(600)).await;

    let reply = env.get("/app/x", Some(&tokens.access)).await;
    assert_eq!(
        reply.status, 200,
        "an access token from a login made after `user revoke` returned is refused \
         (revocation returned in second {revoked_in}, token iat {issued_at}, {took:?} \
         from the revocation's start to the login): {reply:?}"
    );
    let reply = env.refresh(&tokens.refresh).await;
    assert_eq!(
        reply.status, 200,
        "the refresh token of a login made after `user revoke` returned is refused: {reply:?}"
    );
}

// ------------------------------------------------------------------------------------------
// 6. Login rate limits
// ------------------------------------------------------------------------------------------

#[track_caller]
fn assert_rate_limited(reply: &Reply) {
    reply.assert_error(429, "rate_limited", "too many attempts; retry later");
    let retry = reply.header("retry-after").expect("a Retry-After header");
    let secs: u64 = retry
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After {retry:?} is not a number of seconds"));
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_limit_refuses_even_the_right_password() {
    let env = Env::start("login_rate_per_ip = \"1000/m\"\nlogin_rate_per_user = \"3/m\"").await;
    assert_eq!(env.register("alice", PASSWORD).await.status, 201);
    assert_eq!(env.register("bob", PASSWORD).await.status, 201);

    env.login("alice", PASSWORD).await.tokens();
    env.login("alice", "wrong password 1")
        .await
        .assert_invalid_credentials();
    env.login("alice", "wrong password 2")
        .await
        .assert_invalid_credentials();
    // Only failures count (the login above cost nothing): the third one spends the bucket.
    env.login("alice", "wrong password 2b")
        .await
        .assert_invalid_credentials();
    // The next attempt within the minute: refused, the right password included.
    assert_rate_limited(&env.login("alice", PASSWORD).await);
    assert_rate_limited(&env.login("alice", "wrong password 3").await);

    // The same IP, another user: not limited by alice's bucket.
    let bob = env.login("bob", PASSWORD).await.tokens();
    env.assert_accepted(&bob.access).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_ip_limit_refuses_every_user_from_that_ip() {
    let mut env = Env::start(OPEN_LIMITS).await;
    assert_eq!(env.register("alice", PASSWORD).await.status, 201);
    assert_eq!(env.register("bob", PASSWORD).await.status, 201);
    // Same store, fresh buckets, a tight per-IP limit.
    env.restart("login_rate_per_ip = \"3/m\"\nlogin_rate_per_user = \"1000/m\"")
        .await;

    env.login("alice", PASSWORD).await.tokens();
    env.login("bob", "wrong password 1")
        .await
        .assert_invalid_credentials();
    env.login("carol", PASSWORD)
        .await
        .assert_invalid_credentials();
    // Only failures count (alice's login above cost nothing): the third one spends it.
    env.login("erin", PASSWORD)
        .await
        .assert_invalid_credentials();
    assert_rate_limited(&env.login("bob", PASSWORD).await);
    assert_rate_limited(&env.login("dave", PASSWORD).await);
    assert_rate_limited(&env.login("alice", PASSWORD).await);
}

// ------------------------------------------------------------------------------------------
// 7. Registration closed
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_registration_is_403_and_creates_nobody() {
    let env = Env::start(&format!("registration = false\n{OPEN_LIMITS}")).await;
    env.register("alice", PASSWORD).await.assert_error(
        403,
        "registration_closed",
        "registration is closed",
    );
    env.post_json("/auth/register", &json!({ "username": "bob" }))
        .await
        .assert_error(403, "registration_closed", "registration is closed");
    assert_eq!(env.count_users(None), 0);
    env.login("alice", PASSWORD)
        .await
        .assert_invalid_credentials();

    // Accounts made by the operator still log in.
    env.cli_ok(&["user", "add", "alice"], Some(&format!("{PASSWORD}\n")))
        .await;
    let tokens = env.login("alice", PASSWORD).await.tokens();
    env.assert_accepted(&tokens.access).await;
    assert_eq!(env.count_users(None), 1);
}

// ------------------------------------------------------------------------------------------
// 8. No user enumeration
// ------------------------------------------------------------------------------------------

/// Status, body and headers but `date` and `x-request-id`.
fn comparable(reply: &Reply) -> (u16, String, Vec<(String, String)>) {
    let mut headers: Vec<(String, String)> = reply
        .headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "x-request-id"))
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().expect("ASCII header").to_owned(),
            )
        })
        .collect();
    headers.sort();
    (reply.status, reply.text.clone(), headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_an_unknown_user_look_the_same() {
    let env = Env::start(OPEN_LIMITS).await;
    assert_eq!(env.register("alice", PASSWORD).await.status, 201);
    assert_eq!(env.register("bob", PASSWORD).await.status, 201);
    env.cli_ok(&["user", "disable", "bob"], None).await;

    let wrong_password = env.login("alice", "not the password").await;
    wrong_password.assert_invalid_credentials();
    let reference = comparable(&wrong_password);
    assert!(
        reference.2.iter().any(|(n, _)| n == "www-authenticate"),
        "{reference:?}"
    );

    for (case, reply) in [
        (
            "unknown user",
            env.login("nobody", "not the password").await,
        ),
        (
            "impossible username",
            env.login("a b", "not the password").await,
        ),
        (
            "over-long password",
            env.login("alice", &"x".repeat(2000)).await,
        ),
        (
            "disabled user, right password",
            env.login("bob", PASSWORD).await,
        ),
    ] {
        assert_eq!(comparable(&reply), reference, "{case}: {reply:?}");
    }
}

// ------------------------------------------------------------------------------------------
// 9. The store locked by another process
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_is_503_and_nothing_changes_until_it_is_free() {
    let env = Env::start(OPEN_LIMITS).await;
    let tokens = env.user_with_tokens("alice").await;
    let unavailable = "the gateway cannot save state right now; nothing was changed";

    let lock = env.db();
    lock.execute_batch("BEGIN EXCLUSIVE")
        .expect("lock the store");

    let started = Instant::now();
    let logout = env
        .post_json("/auth/logout", &json!({ "refresh_token": tokens.refresh }))
        .await;
    logout.assert_error(503, "store_unavailable", unavailable);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the gateway gave up after {:?}, before its busy timeout",
        started.elapsed()
    );
    env.register("bob", PASSWORD)
        .await
        .assert_error(503, "store_unavailable", unavailable);

    lock.execute_batch("ROLLBACK").expect("release the store");
    drop(lock);

    assert_eq!(
        env.count_users(Some("bob")),
        0,
        "a 503 register created bob"
    );
    // Once the lock is gone the same logout goes through.
    let logout = env
        .post_json("/auth/logout", &json!({ "refresh_token": tokens.refresh }))
        .await;
    assert_eq!(logout.status, 204, "{logout:?}");
    env.refresh(&tokens.refresh)
        .await
        .assert_invalid_token(REVOKED);
    // And registration works again.
    assert_eq!(env.register("bob", PASSWORD).await.status, 201);
}

// ------------------------------------------------------------------------------------------
// 10. A removed user
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_user_can_neither_refresh_nor_log_in() {
    let env = Env::start(OPEN_LIMITS).await;
    let alice = env.user_with_tokens("alice").await;
    env.assert_accepted(&alice.access).await;

    env.cli_ok(&["user", "remove", "alice"], None).await;
    let removed_at = Instant::now();
    assert_eq!(env.count_users(Some("alice")), 0);

    let refused = env.refresh(&alice.refresh).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    refused.assert_invalid_token(REVOKED);
    env.login("alice", PASSWORD)
        .await
        .assert_invalid_credentials();
    let took = env.refused_after(&alice.access, removed_at).await;
    assert!(
        took <= REVOCATION_DEADLINE,
        "removal took {took:?} to be enforced"
    );

    let again = env.cli(&["user", "remove", "alice"], None).await;
    assert_eq!(again.status.code(), Some(1), "{again:?}");
}
