//! The real `authgate` binary as a child process, for what only a process can show: that
//! an acknowledged revocation (a 204 from logout, a `user revoke` that returned) survives
//! a SIGKILL of the gateway, that users survive a restart, and that no secret reaches a
//! log line even at `RUST_LOG=debug,authgate=trace`.
//!
//! Each test owns a temp folder with `gateway.toml`, an HS256 secret file and the SQLite
//! store (`sqlite://data/authgate.db`), and ports picked by binding `127.0.0.1:0`. The
//! gateway is always killed at the end: [`Gate`] kills its child when dropped, assertion
//! failures included.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use authgate::jwt::Algorithm;
use common::{Pki, TestKey, access_claims};
use reqwest::StatusCode;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_authgate");
/// Bound on a start (store opened, listeners up) and on a graceful stop.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const REVOKED: &str = "the token has been revoked";

/// A port that was free a moment ago: bound on 127.0.0.1:0, read, released.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// A gateway's folder: `gateway.toml`, `jwt.secret` (HS256, 64 hex characters), the store
/// under `data/`, and the gateway's log. Optionally TLS (the harness PKI) and an ES256
/// previous key, so a PEM private key is loaded too.
struct Site {
    dir: tempfile::TempDir,
    port: u16,
    admin: u16,
    key: TestKey,
    pki: Option<Pki>,
    old_key: Option<TestKey>,
}

impl Site {
    fn new() -> Site {
        Site::build(false)
    }

    /// With TLS on the public port and an ES256 PEM key among `previous_keys`.
    fn with_tls_and_pem() -> Site {
        Site::build(true)
    }

    fn build(tls_and_pem: bool) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = TestKey::generate(Algorithm::HS256);
        assert_eq!(key.text.trim().len(), 64, "a 64-hex-character HS256 secret");
        std::fs::write(dir.path().join("jwt.secret"), &key.text).expect("write secret");
        let (pki, old_key) = if tls_and_pem {
            let old = TestKey::generate(Algorithm::ES256);
            std::fs::write(dir.path().join("old-es256.pem"), &old.text).expect("write pem");
            (Some(Pki::write(dir.path())), Some(old))
        } else {
            (None, None)
        };
        let site = Site {
            dir,
            port: free_port(),
            admin: free_port(),
            key,
            pki,
            old_key,
        };
        std::fs::write(site.config_path(), site.config()).expect("write config");
        site
    }

    fn config(&self) -> String {
        let tls = if self.pki.is_some() {
            "tls = { cert = \"server.crt\", key = \"server.key\" }\n"
        } else {
            ""
        };
        let previous = if self.old_key.is_some() {
            "previous_keys = [{ key = \"old-es256.pem\", algorithm = \"ES256\" }]\n"
        } else {
            ""
        };
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
{tls}drain_timeout = "2s"

[admin]
listen = "127.0.0.1:{admin}"

[tokens]
algorithm = "HS256"
secret = {{ file = "jwt.secret" }}
{previous}access_ttl = "15m"
refresh_ttl = "7d"
leeway = "5s"

[store]
url = "sqlite://data/authgate.db"

[accounts]
registration = true
min_password_length = 10
login_rate_per_ip = "1000/m"
login_rate_per_user = "1000/m"

[[upstream]]
name = "echo"
url = "builtin:echo"

[[route]]
path = "/"
upstream = "echo"
"#,
            port = self.port,
            admin = self.admin,
        )
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config_path(&self) -> PathBuf {
        self.path().join("gateway.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.path().join("gateway.log")
    }

    fn base(&self) -> String {
        match self.pki {
            Some(_) => format!("https://localhost:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// A client without a connection pool: a connection to a killed gateway is never
    /// reused for its successor.
    fn client(&self) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(20));
        if let Some(pki) = &self.pki {
            let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("ca");
            builder = builder.tls_certs_only([ca]).http1_only();
        }
        builder.build().expect("client")
    }

    fn api(&self) -> Api {
        Api {
            client: self.client(),
            base: self.base(),
            sent: 0,
        }
    }

    /// Starts `authgate serve --config <dir>/gateway.toml`, its stdout and stderr appended
    /// to `gateway.log`, and waits (bounded) until its admin `/readyz` answers 200.
    async fn start(&self, rust_log: &str) -> Gate {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open log");
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.path())
            .env_remove("AUTHGATE_CONFIG")
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn authgate");
        let mut gate = Gate {
            child,
            log: self.log_path(),
        };
        let ready = format!("http://127.0.0.1:{}/readyz", self.admin);
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("probe client");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = gate.child.try_wait().expect("try_wait") {
                panic!(
                    "authgate exited during start-up ({status}); its log:\n{}",
                    gate.log_text()
                );
            }
            if let Ok(response) = probe.get(&ready).send().await
                && response.status() == StatusCode::OK
            {
                return gate;
            }
            if Instant::now() > deadline {
                panic!(
                    "authgate was not ready within {START_TIMEOUT:?}; its log:\n{}",
                    gate.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `authgate ARGS --config <dir>/gateway.toml` to completion (bounded), `stdin`
    /// piped in; stdout and stderr go through files, so a chatty command cannot block.
    fn cli(&self, args: &[&str], stdin: Option<&str>, rust_log: &str) -> CliOutput {
        let out_path = self.path().join("cli.stdout");
        let err_path = self.path().join("cli.stderr");
        let child = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.path())
            .env_remove("AUTHGATE_CONFIG")
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::piped())
            .stdout(File::create(&out_path).expect("stdout file"))
            .stderr(File::create(&err_path).expect("stderr file"))
            .spawn()
            .expect("spawn authgate cli");
        let mut guard = Gate {
            child,
            log: err_path.clone(),
        };
        {
            let mut input = guard.child.stdin.take().expect("stdin");
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).expect("write stdin");
            }
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let status = loop {
            if let Some(status) = guard.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "authgate {args:?} did not finish within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        CliOutput {
            code: status.code(),
            stdout: std::fs::read_to_string(&out_path).expect("read stdout"),
            stderr: std::fs::read_to_string(&err_path).expect("read stderr"),
        }
    }
}

/// What a finished command printed.
struct CliOutput {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// A running gateway process. Dropping it SIGKILLs and reaps the child.
struct Gate {
    child: Child,
    log: PathBuf,
}

impl Gate {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap: no drain, no flush, no
    /// destructor runs in the gateway.
    fn sigkill(mut self) {
        self.child.kill().expect("SIGKILL the gateway");
        self.child.wait().expect("reap the gateway");
    }

    /// SIGTERM, then wait (bounded) for the graceful exit; SIGKILL if it does not come.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "authgate exited with {status} on SIGTERM");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "authgate did not stop within {STOP_TIMEOUT:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        // Only our own child, by its handle; harmless if it has already been reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway's HTTP API, counting the requests sent to the public port.
struct Api {
    client: reqwest::Client,
    base: String,
    sent: usize,
}

#[derive(Debug, Clone)]
struct Tokens {
    access: String,
    refresh: String,
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

fn tokens_of(body: &Value) -> Tokens {
    let field = |name: &str| {
        body[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {body}"))
            .to_owned()
    };
    Tokens {
        access: field("access_token"),
        refresh: field("refresh_token"),
    }
}

impl Api {
    async fn send(&mut self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        self.sent += 1;
        json_of(request.send().await.expect("request to the gateway")).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn register(&mut self, user: &str, password: &str) -> (StatusCode, Value) {
        let request = self
            .client
            .post(self.url("/auth/register"))
            .json(&json!({ "username": user, "password": password }));
        self.send(request).await
    }

    async fn login(&mut self, user: &str, password: &str) -> (StatusCode, Value) {
        let request = self
            .client
            .post(self.url("/auth/login"))
            .json(&json!({ "username": user, "password": password }));
        self.send(request).await
    }

    async fn login_ok(&mut self, user: &str, password: &str) -> Tokens {
        let (status, body) = self.login(user, password).await;
        assert_eq!(status, StatusCode::OK, "login of {user}: {body}");
        assert_eq!(body["token_type"], "Bearer", "{body}");
        tokens_of(&body)
    }

    /// GET `path` with `Authorization: Bearer token`.
    async fn get(&mut self, path: &str, token: &str) -> (StatusCode, Value) {
        let request = self.client.get(self.url(path)).bearer_auth(token);
        self.send(request).await
    }

    async fn refresh(&mut self, refresh: &str) -> (StatusCode, Value) {
        let request = self
            .client
            .post(self.url("/auth/refresh"))
            .bearer_auth(refresh);
        self.send(request).await
    }

    /// Logout with the refresh token as Bearer and the access token in the JSON body.
    async fn logout(&mut self, tokens: &Tokens) -> (StatusCode, Value) {
        let request = self
            .client
            .post(self.url("/auth/logout"))
            .bearer_auth(&tokens.refresh)
            .json(&json!({ "access_token": tokens.access }));
        self.send(request).await
    }
}

fn assert_revoked(what: &str, status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    assert_eq!(body["error"], "invalid_token", "{what}: {body}");
    assert_eq!(body["error_description"], REVOKED, "{what}: {body}");
}

#[tokio::test]
async fn a_logout_acknowledged_with_204_survives_a_sigkill() {
    let site = Site::new();
    let mut api = site.api();
    let gate = site.start("info").await;

    let password = "durable-password-1";
    let (status, body) = api.register("alice", password).await;
    assert_eq!(status, StatusCode::CREATED, "register: {body}");
    let tokens = api.login_ok("alice", password).await;
    let (status, body) = api.get("/orders", &tokens.access).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "protected route before logout: {body}"
    );

    let (status, body) = api.logout(&tokens).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "logout: {body}");
    // At once: whatever was acknowledged must already be on disk.
    gate.sigkill();

    let gate = site.start("info").await;
    let (status, body) = api.get("/orders", &tokens.access).await;
    assert_revoked("the logged-out access token after a restart", status, &body);
    let (status, body) = api.refresh(&tokens.refresh).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the logged-out refresh token after a restart: {body}"
    );
    assert_eq!(body["error"], "invalid_token", "{body}");

    // The user itself survived, and a new session works.
    let again = api.login_ok("alice", password).await;
    let (status, body) = api.get("/orders", &again.access).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a new session after the restart: {body}"
    );
    let (status, body) = api.refresh(&again.refresh).await;
    assert_eq!(status, StatusCode::OK, "refresh of the new session: {body}");
    drop(gate);
}

#[tokio::test]
async fn a_user_revoke_that_returned_survives_a_sigkill() {
    let site = Site::new();
    let mut api = site.api();
    let gate = site.start("info").await;

    let password = "durable-password-2";
    let (status, body) = api.register("alice", password).await;
    assert_eq!(status, StatusCode::CREATED, "register: {body}");
    let tokens = api.login_ok("alice", password).await;
    let (status, body) = api.get("/orders", &tokens.access).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "protected route before revoke: {body}"
    );

    let output = site.cli(&["user", "revoke", "alice"], None, "info");
    assert_eq!(
        output.code,
        Some(0),
        "user revoke: stdout {:?}, stderr {:?}",
        output.stdout,
        output.stderr
    );
    let revoked_at = authgate::auth::now_secs();
    gate.sigkill();

    let gate = site.start("info").await;
    let (status, body) = api.get("/orders", &tokens.access).await;
    assert_revoked(
        "an access token issued before `user revoke`, after a restart",
        status,
        &body,
    );
    let (status, body) = api.refresh(&tokens.refresh).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a refresh token issued before `user revoke`, after a restart: {body}"
    );
    assert_eq!(body["error"], "invalid_token", "{body}");

    // The revocation covers "now" with one-second resolution; a login after it works.
    while authgate::auth::now_secs() <= revoked_at + 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = api.login_ok("alice", password).await;
    let (status, body) = api.get("/orders", &again.access).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a login after the revocation: {body}"
    );
    drop(gate);
}

#[tokio::test]
async fn registered_users_survive_a_sigkill() {
    let site = Site::new();
    let mut api = site.api();
    let gate = site.start("info").await;

    let password = "durable-password-3";
    let (status, body) = api.register("bob.smith", password).await;
    assert_eq!(status, StatusCode::CREATED, "register: {body}");
    let before = api.login_ok("bob.smith", password).await;
    gate.sigkill();

    let gate = site.start("info").await;
    // Control for the revocation tests: without a revocation, tokens issued before the
    // SIGKILL still pass after the restart (same key, same store).
    let (status, body) = api.get("/orders", &before.access).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an unrevoked token after a restart: {body}"
    );
    let (status, body) = api.refresh(&before.refresh).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an unrevoked refresh token after a restart: {body}"
    );
    let tokens = api.login_ok("bob.smith", password).await;
    let (status, body) = api.get("/orders", &tokens.access).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["headers"]["x-auth-user"], "bob.smith", "{body}");
    let (status, body) = api.register("bob.smith", "another-password").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the name is still taken: {body}"
    );
    let (status, body) = api.login("bob.smith", "wrong-password-3").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    drop(gate);
}

/// The parts of a JWT worth hiding: the whole token and its signature.
fn token_secrets(label: &str, token: &str, out: &mut Vec<(String, String)>) {
    out.push((label.to_owned(), token.to_owned()));
    if let Some((_, signature)) = token.rsplit_once('.')
        && signature.len() >= 8
    {
        out.push((format!("{label} (signature)"), signature.to_owned()));
    }
}

fn note_tokens(label: &str, t: &Tokens, secrets: &mut Vec<(String, String)>) {
    token_secrets(&format!("{label} access token"), &t.access, secrets);
    token_secrets(&format!("{label} refresh token"), &t.refresh, secrets);
}

/// Base64 body lines of a PEM document (not the BEGIN/END lines).
fn pem_secrets(label: &str, pem: &str, out: &mut Vec<(String, String)>) {
    for (i, line) in pem.lines().map(str::trim).enumerate() {
        if !line.starts_with("-----") && line.len() >= 8 {
            out.push((format!("{label} line {i}"), line.to_owned()));
        }
    }
}

/// Every secret found in `text`: its label and the line it is on.
fn secrets_in(what: &str, text: &str, secrets: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for (label, secret) in secrets {
            if line.contains(secret.as_str()) {
                found.push(format!("  {what} line {}: {label}: {line}", n + 1));
            }
        }
    }
    found
}

fn assert_no_secrets(what: &str, text: &str, secrets: &[(String, String)]) {
    let found = secrets_in(what, text, secrets);
    assert!(found.is_empty(), "secrets in {what}:\n{}", found.join("\n"));
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_at_debug_and_trace() {
    const RUST_LOG: &str = "debug,authgate=trace";
    let site = Site::with_tls_and_pem();
    let mut api = site.api();
    let gate = site.start(RUST_LOG).await;
    let mut secrets: Vec<(String, String)> = Vec::new();

    let alice_pw = "alice-Secret-pw-4711";
    let wrong_pw = "wrong-Guess-pw-0815";
    let nobody_pw = "nobody-Secret-pw-2222";
    let short_pw = "Sh0rt!x";
    let carol_pw = "carol-Secret-pw-9090";
    for (label, pw) in [
        ("alice's password", alice_pw),
        ("a wrong password", wrong_pw),
        ("an unknown user's password", nobody_pw),
        ("a too-short password", short_pw),
        ("carol's password (CLI)", carol_pw),
    ] {
        secrets.push((label.to_owned(), pw.to_owned()));
    }
    let secret = site.key.text.trim().to_owned();
    secrets.push(("the HMAC secret".into(), secret.clone()));
    secrets.push((
        "the HMAC secret's first half".into(),
        secret[..32].to_owned(),
    ));
    secrets.push((
        "the HMAC secret's second half".into(),
        secret[32..].to_owned(),
    ));
    pem_secrets(
        "the ES256 PEM key",
        &site.old_key.as_ref().expect("pem key").text,
        &mut secrets,
    );
    pem_secrets(
        "the TLS private key",
        &std::fs::read_to_string(site.path().join("server.key")).expect("tls key"),
        &mut secrets,
    );

    // Accounts: register (ok, taken, invalid), logins (failed, unknown, ok, form).
    let (status, body) = api.register("alice", alice_pw).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = api.register("alice", alice_pw).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = api.register("bob", short_pw).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = api.login("alice", wrong_pw).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = api.login("nobody", nobody_pw).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let first = api.login_ok("alice", alice_pw).await;
    note_tokens("first login", &first, &mut secrets);
    let request = api
        .client
        .post(api.url("/auth/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username=alice&password={alice_pw}"));
    let (status, body) = api.send(request).await;
    assert_eq!(status, StatusCode::OK, "form login: {body}");
    note_tokens("form login", &tokens_of(&body), &mut secrets);

    // Protected calls: good, /auth/me, a query-string token, expired, garbage, foreign
    // key, a refresh token in place of an access token, Basic credentials.
    let (status, body) = api.get("/orders?page=1", &first.access).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.get("/auth/me", &first.access).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let request = api
        .client
        .get(api.url(&format!("/orders?access_token={}", first.access)));
    let (status, body) = api.send(request).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a token in the query: {body}"
    );
    let mut expired = access_claims("alice", &[]);
    let now = authgate::auth::now_secs();
    expired.iat = Some(now - 7200);
    expired.nbf = Some(now - 7200);
    expired.exp = Some(now - 3600);
    let expired = site.key.sign(&expired);
    token_secrets("an expired token", &expired, &mut secrets);
    let (status, body) = api.get("/orders", &expired).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "expired: {body}");
    assert_eq!(body["error_description"], "the token has expired", "{body}");
    let garbage = "garbage-7f3a9c1e5b2d8f4a6c0e.not-a-jwt.Zm9vYmFyYmF6cXV4";
    token_secrets("a garbage token", garbage, &mut secrets);
    let (status, body) = api.get("/orders", garbage).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "garbage: {body}");
    let foreign = TestKey::generate(Algorithm::HS256).sign(&access_claims("alice", &["admin"]));
    token_secrets("a token of another key", &foreign, &mut secrets);
    let (status, body) = api.get("/orders", &foreign).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "foreign key: {body}");
    let (status, body) = api.get("/orders", &first.refresh).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "refresh as access: {body}"
    );
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("alice:{alice_pw}"));
    secrets.push(("Basic credentials".into(), basic.clone()));
    let request = api
        .client
        .get(api.url("/orders"))
        .header("authorization", format!("Basic {basic}"));
    let (status, body) = api.send(request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "Basic: {body}");

    // Refresh (Bearer and body), reuse of a spent one, and the family it kills.
    let (status, body) = api.refresh(&first.refresh).await;
    assert_eq!(status, StatusCode::OK, "refresh: {body}");
    let second = tokens_of(&body);
    note_tokens("refreshed", &second, &mut secrets);
    let (status, body) = api.refresh(&first.refresh).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "reuse of a spent refresh: {body}"
    );
    let (status, body) = api.refresh(&second.refresh).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "its family is dead: {body}"
    );
    let third = api.login_ok("alice", alice_pw).await;
    note_tokens("third login", &third, &mut secrets);
    let request = api
        .client
        .post(api.url("/auth/refresh"))
        .json(&json!({ "refresh_token": third.refresh }));
    let (status, body) = api.send(request).await;
    assert_eq!(status, StatusCode::OK, "refresh in the body: {body}");
    let fourth = tokens_of(&body);
    note_tokens("refreshed from the body", &fourth, &mut secrets);

    // Logout, and the revoked access token.
    let (status, body) = api.logout(&fourth).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "logout: {body}");
    let (status, body) = api.get("/orders", &fourth.access).await;
    assert_revoked("after logout", status, &body);

    // The command line: add carol (password on stdin), log her in, revoke her.
    let mut cli_output = String::new();
    let mut run_cli = |args: &[&str], stdin: Option<&str>| {
        let output = site.cli(args, stdin, RUST_LOG);
        assert_eq!(
            output.code,
            Some(0),
            "authgate {args:?}: stdout {:?}, stderr {:?}",
            output.stdout,
            output.stderr
        );
        cli_output.push_str(&output.stdout);
        cli_output.push_str(&output.stderr);
    };
    run_cli(
        &["user", "add", "carol", "--role", "ops"],
        Some(&format!("{carol_pw}\n")),
    );
    let carol = api.login_ok("carol", carol_pw).await;
    note_tokens("carol's login", &carol, &mut secrets);
    let (status, body) = api.get("/orders", &carol.access).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    run_cli(&["user", "revoke", "carol"], None);
    run_cli(&["user", "list"], None);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, body) = api.get("/orders", &carol.access).await;
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(body["error_description"], REVOKED, "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a `user revoke` from the command line was not enforced within 3 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let sent = api.sent;
    gate.stop();
    let log = std::fs::read_to_string(site.log_path()).expect("read log");

    // The detector itself finds a planted token and a planted PEM line.
    let pem_line = &secrets
        .iter()
        .find(|(label, _)| label.starts_with("the TLS private key"))
        .expect("a PEM line")
        .1;
    let planted = format!("x {} y\nz {pem_line}", first.access);
    assert_eq!(secrets_in("planted", &planted, &secrets).len(), 3);
    assert_no_secrets("the gateway log", &log, &secrets);
    assert_no_secrets("the command-line output", &cli_output, &secrets);

    // The log is not empty by accident: debug and trace lines are there, and every request
    // has exactly one access line.
    let access_lines = log
        .lines()
        .filter(|l| l.contains("\"target\":\"authgate::access\""))
        .count();
    assert_eq!(
        access_lines, sent,
        "exactly one authgate::access line per request:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("DEBUG")),
        "RUST_LOG={RUST_LOG} produced no DEBUG line:\n{log}"
    );
    assert!(
        log.contains("login_failed") && log.contains("refresh_reuse_detected"),
        "audit events missing:\n{log}"
    );
    assert!(
        cli_output.contains("added carol") && cli_output.contains("revoked every token of carol"),
        "{cli_output}"
    );
}
