//! The real `authgate` binary as a child process, for what only a process can show: that
//! an acknowledged revocation (a 204 from logout, a `user revoke` that returned) survives
//! a SIGKILL of the gateway, that users survive a restart, and that no secret reaches a
//! log line even at `RUST_LOG=debug,authgate=trace`.
//!
//! Each test owns a [`Site`] from the harness (`common::process`): a temp folder with
//! `gateway.toml`, an HS256 secret file and the SQLite store (`sqlite://data/authgate.db`),
//! and ports picked by binding `127.0.0.1:0`. The gateway is always killed at the end: the
//! [`Gate`] kills its child when dropped, assertion failures included.

mod common;

use std::fs::File;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use authgate::jwt::Algorithm;
use common::process::{BIN, Gate, START_TIMEOUT, Site};
use common::{REVOKED, TestKey, Tokens, access_claims};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The `[tokens]` lifetimes.
const TOKEN_TTLS: &str = "access_ttl = \"15m\"\nrefresh_ttl = \"7d\"\n";
/// Accounts open to registration with loose login rates, and every path to the built-in
/// echo upstream.
const ACCOUNTS_AND_ROUTES: &str = r#"
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
"#;

/// A gateway with the SQLite store and accounts, on plain HTTP, its config written.
fn accounts_site() -> Site {
    let site = Site::new()
        .drain_timeout("2s")
        .store()
        .tokens_lines(TOKEN_TTLS);
    site.write_config(&format!("{}{ACCOUNTS_AND_ROUTES}", site.head()));
    site
}

/// The same with TLS on the public port, and an ES256 PEM key (`old-es256.pem`, returned)
/// among `previous_keys`, so a PEM private key is loaded too.
fn accounts_site_with_tls_and_pem() -> (Site, TestKey) {
    let old = TestKey::generate(Algorithm::ES256);
    let site = Site::new()
        .tls()
        .drain_timeout("2s")
        .store()
        .tokens_lines(&format!(
            "previous_keys = [{{ key = \"old-es256.pem\", algorithm = \"ES256\" }}]\n{TOKEN_TTLS}"
        ));
    std::fs::write(site.path().join("old-es256.pem"), &old.text).expect("write pem");
    site.write_config(&format!("{}{ACCOUNTS_AND_ROUTES}", site.head()));
    (site, old)
}

fn api(site: &Site) -> Api {
    Api {
        client: site.client(),
        base: site.url(""),
        sent: 0,
    }
}

/// Runs `authgate ARGS --config <dir>/gateway.toml` to completion (bounded), `stdin`
/// piped in; stdout and stderr go through files, so a chatty command cannot block.
fn cli(site: &Site, args: &[&str], stdin: Option<&str>, rust_log: &str) -> CliOutput {
    let out_path = site.path().join("cli.stdout");
    let err_path = site.path().join("cli.stderr");
    let child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(site.config_path())
        .current_dir(site.path())
        .env_remove("AUTHGATE_CONFIG")
        .env("RUST_LOG", rust_log)
        .stdin(Stdio::piped())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn authgate cli");
    let mut guard = Gate::adopt(child, err_path.clone());
    {
        let mut input = guard.child().stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(status) = guard.child().try_wait().expect("try_wait") {
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

/// What a finished command printed.
struct CliOutput {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// The gateway's HTTP API, counting the requests sent to the public port.
struct Api {
    client: reqwest::Client,
    base: String,
    sent: usize,
}

async fn json_or_text(response: reqwest::Response) -> (StatusCode, Value) {
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
        json_or_text(request.send().await.expect("request to the gateway")).await
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
    let site = accounts_site();
    let mut api = api(&site);
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
    let site = accounts_site();
    let mut api = api(&site);
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

    let output = cli(&site, &["user", "revoke", "alice"], None, "info");
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
    let site = accounts_site();
    let mut api = api(&site);
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
    let (site, old_key) = accounts_site_with_tls_and_pem();
    let mut api = api(&site);
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
    pem_secrets("the ES256 PEM key", &old_key.text, &mut secrets);
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
        let output = cli(&site, args, stdin, RUST_LOG);
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
    gate.stop().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_text_cannot_forge_or_bloat_a_log_line() {
    for format in ["text", "json"] {
        let site = accounts_site().log_format(format);
        let gate = site.start("info").await;
        let http = site.client();
        // A name that would start a forged audit line, colour the terminal, and run on.
        let name = format!(
            "eve\nFORGED INFO authgate::audit: event=\"login_ok\" user=admin\x1b[31m{}",
            "x".repeat(15_000)
        );
        let response = http
            .post(site.url("/auth/login"))
            .json(&json!({ "username": name, "password": "wrong-password" }))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{format}");
        let long_path = format!("/{}", "p".repeat(8_000));
        let response = http.get(site.url(&long_path)).send().await.expect("get");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{format}");
        gate.stop().await;

        let log = std::fs::read(site.log_path()).expect("log");
        assert!(
            !log.contains(&0x1b),
            "{format}: a raw ESC byte reached the log"
        );
        let log = String::from_utf8_lossy(&log);
        for line in log.lines() {
            assert!(
                !line.starts_with("FORGED"),
                "{format}: a client started a log line: {line}"
            );
            assert!(
                line.len() < 2_000,
                "{format}: a {}-byte line: {}…",
                line.len(),
                &line[..200]
            );
        }
        assert!(
            log.contains(r"eve\nFORGED") || log.contains(r"eve\\nFORGED"),
            "{format}: the failed login is logged, escaped:\n{log}"
        );
        assert!(log.contains("login_failed"), "{format}:\n{log}");
    }
}

/// A process's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_failed_logins_leave_memory_bounded() {
    let site = accounts_site();
    let gate = site.start("warn").await;
    let http = site.client();
    let mut logins = tokio::task::JoinSet::new();
    for i in 0..30 {
        let http = http.clone();
        let url = site.url("/auth/login");
        logins.spawn(async move {
            http.post(url)
                .json(&json!({ "username": format!("nobody-{i}"), "password": "wrong-password" }))
                .send()
                .await
                .expect("login")
                .status()
        });
    }
    while let Some(status) = logins.join_next().await {
        assert_eq!(status.expect("task"), StatusCode::UNAUTHORIZED);
    }
    let peak = peak_rss_kib(&gate.pid());
    gate.stop().await;
    // argon2id takes 19 MiB per hash; the hashing threads keep one buffer each rather
    // than leaving every hash's memory with the allocator (~220 MiB before).
    assert!(
        peak < 100 * 1024,
        "peak RSS {} MiB after 30 failed logins",
        peak / 1024
    );
}
