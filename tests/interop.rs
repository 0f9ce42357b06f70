//! Flask-JWT-Extended interop: a real Flask application (`tests/support/flask_app.py`,
//! werkzeug's server on 127.0.0.1) sits behind authgate with
//! `forward_authorization = true` and verifies authgate's access tokens itself, with
//! Flask-JWT-Extended's own checks, under HS256 and ES256. The product page promises that
//! "a Flask service that uses it with the same key accepts authgate's tokens unchanged".
//!
//! The Python side (`flask`, `flask-jwt-extended`, `pyjwt[crypto]`) comes from the test
//! environment `common::python()` builds from PyPI; without it these tests fail (they never
//! skip).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use authgate::jwt::{Algorithm, Key};
use common::{Gateway, Pki, TestKey, access_claims, free_port};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FLASK_APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/flask_app.py");
const FLASK_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Fails (never skips) with the install command when the Python side is missing.
fn require_python_packages() {
    let output = Command::new(common::python())
        .args([
            "-c",
            "import flask, flask_jwt_extended, jwt, cryptography; print(flask_jwt_extended.__version__)",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run the test Python ({e})"));
    assert!(
        output.status.success(),
        "the Flask interop tests need flask, flask-jwt-extended and pyjwt[crypto]; python said:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The running Flask app; dropping it kills (SIGKILL) and reaps the Python process.
struct Flask {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Flask {
    /// Starts `tests/support/flask_app.py` under the test Python with `vars` and waits (bounded) until its
    /// port accepts connections.
    async fn start(dir: &std::path::Path, vars: &[(&str, String)]) -> Flask {
        require_python_packages();
        let port = free_port();
        let log = dir.join("flask.log");
        let file = std::fs::File::create(&log).expect("flask log");
        let mut command = Command::new(common::python());
        command
            .arg(FLASK_APP)
            .env("FLASK_PORT", port.to_string())
            .env("JWT_DECODE_AUDIENCE", "authgate")
            .env("JWT_DECODE_ISSUER", "authgate")
            .env("JWT_IDENTITY_CLAIM", "sub")
            .env("JWT_TOKEN_LOCATION", r#"["headers"]"#)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone"))
            .stderr(file);
        for (name, value) in vars {
            command.env(name, value);
        }
        let child = command.spawn().expect("spawn the Flask app");
        let mut flask = Flask { child, port, log };
        let deadline = Instant::now() + FLASK_START_TIMEOUT;
        loop {
            if let Some(status) = flask.child.try_wait().expect("try_wait") {
                panic!(
                    "the Flask app exited during start-up ({status}); its output:\n{}",
                    flask.log_text()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return flask;
            }
            assert!(
                Instant::now() < deadline,
                "the Flask app did not listen within {FLASK_START_TIMEOUT:?}; its output:\n{}",
                flask.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The paths Flask has served so far (asked directly, not through authgate).
    async fn seen(&self) -> Vec<String> {
        let body: Value = reqwest::get(format!("{}/_seen", self.url()))
            .await
            .expect("ask Flask")
            .json()
            .await
            .expect("json");
        body["paths"]
            .as_array()
            .expect("paths")
            .iter()
            .map(|p| p.as_str().expect("path").to_owned())
            .collect()
    }
}

impl Drop for Flask {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// authgate (in-process, real TLS, real SQLite store) in front of Flask, with the
/// tokens' key `key`.
struct Stack {
    _dir: tempfile::TempDir,
    gateway: Gateway,
    flask: Flask,
    client: reqwest::Client,
}

impl Stack {
    async fn start(key: &TestKey) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::write(dir.path());
        let vars = if common::is_hmac(key.alg) {
            vec![
                ("JWT_ALGORITHM", format!("{:?}", key.alg)),
                ("JWT_SECRET_KEY", key.text.trim().to_owned()),
            ]
        } else {
            vec![
                ("JWT_ALGORITHM", format!("{:?}", key.alg)),
                ("JWT_PUBLIC_KEY", key.public_pem()),
            ]
        };
        let flask = Flask::start(dir.path(), &vars).await;
        let config = format!(
            r#"[server]
listen = "127.0.0.1:0"
tls = {{ cert = "server.crt", key = "server.key" }}

[tokens]
{key}leeway = "5s"

[store]
url = "sqlite://data/authgate.db"

[accounts]
login_rate_per_ip = "1000/m"
login_rate_per_user = "1000/m"

[identity]
forward_authorization = true

[[upstream]]
name = "flask"
url = "{flask}"
connect_timeout = "2s"
timeout = "10s"

[[route]]
path = "/api"
upstream = "flask"
"#,
            key = key.config_lines(dir.path(), "signing.key"),
            flask = flask.url(),
        );
        let gateway = Gateway::start(dir.path(), &config).await;
        let client = common::client(&pki.ca_pem, false);
        Stack {
            _dir: dir,
            gateway,
            flask,
            client,
        }
    }

    async fn post(&self, path: &str, body: Value, bearer: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.client.post(self.gateway.url(path)).json(&body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, String, Value) {
        let mut request = self.client.get(self.gateway.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().expect("ascii").to_owned())
            .unwrap_or_default();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, challenge, body)
    }

    /// Register and log in through authgate: the (access, refresh) tokens.
    async fn register_and_login(&self, user: &str, password: &str) -> (String, String) {
        let creds = json!({ "username": user, "password": password });
        let (status, body) = self.post("/auth/register", creds.clone(), None).await;
        assert_eq!(status, StatusCode::CREATED, "register: {body}");
        let (status, body) = self.post("/auth/login", creds, None).await;
        assert_eq!(status, StatusCode::OK, "login: {body}");
        let field = |name: &str| body[name].as_str().expect(name).to_owned();
        (field("access_token"), field("refresh_token"))
    }

    /// A failure message with Flask's own output (its refusal reasons).
    fn context(&self, what: &str, body: &Value) -> String {
        format!(
            "{what}: authgate answered {body}\nFlask's output:\n{}",
            self.flask.log_text()
        )
    }
}

/// Log in through authgate, then call the Flask `@jwt_required()` route through authgate:
/// Flask-JWT-Extended must accept the token and see authgate's claims.
async fn flask_accepts_authgate_tokens(alg: Algorithm) {
    let key = TestKey::generate(alg);
    let stack = Stack::start(&key).await;
    let (access, refresh) = stack.register_and_login("alice", "flask-interop-pw").await;

    let (status, _, body) = stack.get("/api/whoami", Some(&access)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        stack.context(&format!("{alg:?} login token on @jwt_required()"), &body)
    );
    assert_eq!(body["identity"], "alice", "{body}");
    let claims = &body["claims"];
    assert_eq!(claims["sub"], "alice", "{body}");
    assert_eq!(claims["type"], "access", "{body}");
    assert_eq!(claims["fresh"], true, "a password login is fresh: {body}");
    assert_eq!(claims["iss"], "authgate", "{body}");
    assert_eq!(claims["aud"], "authgate", "{body}");
    assert!(claims["jti"].is_string(), "{body}");
    for claim in ["iat", "nbf", "exp"] {
        assert!(claims[claim].is_i64(), "{claim} is a NumericDate: {body}");
    }
    assert_eq!(body["x_auth_user"], "alice", "the identity header: {body}");

    let (status, _, body) = stack.get("/api/fresh", Some(&access)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        stack.context("the login token on @jwt_required(fresh=True)", &body)
    );
    assert_eq!(body["identity"], "alice", "{body}");

    // A refreshed access token: still accepted, and not fresh (Flask-JWT-Extended's rule).
    let (status, body) = stack.post("/auth/refresh", json!({}), Some(&refresh)).await;
    assert_eq!(status, StatusCode::OK, "refresh: {body}");
    let refreshed = body["access_token"].as_str().expect("access_token");
    let (status, _, body) = stack.get("/api/whoami", Some(refreshed)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        stack.context("a refreshed token on @jwt_required()", &body)
    );
    assert_eq!(body["identity"], "alice", "{body}");
    assert_eq!(body["claims"]["fresh"], false, "{body}");
    let (status, _, body) = stack.get("/api/fresh", Some(refreshed)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "Flask refuses a non-fresh token on a fresh-only route: {body}"
    );
    assert_eq!(
        body["msg"], "Fresh token required",
        "Flask's answer: {body}"
    );

    let seen = stack.flask.seen().await;
    assert_eq!(
        seen,
        ["/api/whoami", "/api/fresh", "/api/whoami", "/api/fresh"],
        "what reached Flask"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_jwt_extended_accepts_authgate_hs256_tokens() {
    flask_accepts_authgate_tokens(Algorithm::HS256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_jwt_extended_accepts_authgate_es256_tokens() {
    flask_accepts_authgate_tokens(Algorithm::ES256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_another_key_is_refused_by_authgate_and_never_reaches_flask() {
    let key = TestKey::generate(Algorithm::HS256);
    let stack = Stack::start(&key).await;

    // Another secret (so another kid), and another secret under the configured kid.
    let other = TestKey::generate(Algorithm::HS256);
    let foreign = other.sign(&access_claims("alice", &[]));
    let impostor = Key::from_secret(
        Algorithm::HS256,
        other.text.trim().as_bytes(),
        Some(key.key.kid.clone()),
    )
    .expect("key");
    let same_kid = authgate::jwt::Signer::new(impostor)
        .expect("signer")
        .sign(&access_claims("alice", &[]))
        .expect("sign");
    for (what, token) in [
        ("a token of another key", foreign.as_str()),
        ("a token of another key under our kid", same_kid.as_str()),
    ] {
        let (status, challenge, body) = stack.get("/api/whoami", Some(token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body["error"], "invalid_token", "{what}: {body}");
        assert!(
            challenge.starts_with("Bearer realm=\"authgate\"")
                && challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
    }
    let (status, _, body) = stack.get("/api/whoami", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no token: {body}");
    assert_eq!(
        stack.flask.seen().await,
        Vec::<String>::new(),
        "refused requests reached Flask"
    );

    // The wiring works: a real token gets through, and only it.
    let (access, _) = stack.register_and_login("alice", "flask-interop-pw").await;
    let (status, _, body) = stack.get("/api/whoami", Some(&access)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        stack.context("control", &body)
    );
    assert_eq!(stack.flask.seen().await, ["/api/whoami"]);
}
