//! What an attacker tries with tokens and logins, through the real gateway (real TLS, a
//! real recording upstream, a real SQLite store):
//!
//! - claims: `iat` in the future, absurd lifetimes, and claims that are not
//!   visible ASCII are refused before anything reaches the upstream;
//! - login lockout: failures are counted per (user, client IP), so failing on
//!   someone's name from one address does not lock them out from another, and a cap per
//!   user across addresses refuses only the addresses that failed;
//! - login budgets: successful logins and registrations do not spend the per-IP
//!   login budget, which still bounds the password checks an address can ask for.
//!
//! Client addresses are made distinct by a trusted proxy's `X-Forwarded-For`: the
//! gateway trusts 127.0.0.1 here, as it would an ingress in front of it.

mod common;

use std::process::{Command, Stdio};

use authgate::jwt::Algorithm;
use common::{Gateway, Setup, access_claims, hs256_token, now};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
const NOT_YET_VALID: &str = "the token is not valid yet";
const LIFETIME_TOO_LONG: &str = "the token lifetime exceeds the accepted maximum";
const UNFORWARDABLE: &str = "a token claim cannot be forwarded as a header";
const EXPIRED: &str = "the token has expired";
const MALFORMED: &str = "the token is malformed";

/// The harness head with 10 min access and 1 h refresh tokens plus `tokens` lines, the
/// loopback peer trusted as a proxy, a SQLite store, the given `[accounts]` lines and a
/// catch-all route.
fn config(setup: &Setup, tokens: &str, accounts: &str) -> String {
    let head = setup.head();
    assert!(head.contains("leeway = \"5s\""), "the harness head changed");
    let head = head
        .replace(
            "leeway = \"5s\"",
            &format!("leeway = \"5s\"\naccess_ttl = \"10m\"\nrefresh_ttl = \"1h\"\n{tokens}"),
        )
        .replacen(
            "listen = \"127.0.0.1:0\"\n",
            "listen = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
            1,
        );
    format!(
        "{head}\n[store]\nurl = \"sqlite://authgate.db\"\n\n[accounts]\n{accounts}\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n"
    )
}

/// One response, read whole.
#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<u64>,
    json: Value,
}

impl Reply {
    #[track_caller]
    fn assert_error(&self, status: u16, code: &str, description: &str) {
        assert_eq!(
            (self.status, &self.json),
            (
                status,
                &json!({ "error": code, "error_description": description })
            ),
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
    }

    /// A 429 whose `Retry-After` lies within `range` seconds.
    #[track_caller]
    fn assert_limited(&self, range: std::ops::RangeInclusive<u64>) {
        self.assert_error(429, "rate_limited", "too many attempts; retry later");
        let retry = self.retry_after.expect("a Retry-After header");
        assert!(range.contains(&retry), "Retry-After {retry}");
    }

    #[track_caller]
    fn assert_logged_in(&self) {
        assert_eq!(self.status, 200, "{self:?}");
        assert!(self.json["access_token"].is_string(), "{self:?}");
    }
}

/// A gateway with accounts on, and a client for it.
struct Env {
    gw: Gateway,
    http: reqwest::Client,
    setup: Setup,
}

impl Env {
    async fn start(tokens: &str, accounts: &str) -> Env {
        let setup = Setup::new(Algorithm::HS256).await;
        let gw = setup.start_with(&config(&setup, tokens, accounts)).await;
        Env {
            gw,
            http: setup.client(),
            setup,
        }
    }

    /// POSTs `body` to `path` as the client at `ip`.
    async fn post(&self, ip: &str, path: &str, body: &Value) -> Reply {
        let resp = self
            .http
            .post(self.gw.url(path))
            .header("x-forwarded-for", ip)
            .json(body)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ascii").parse().expect("seconds"));
        let text = resp.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            retry_after,
            json,
        }
    }

    async fn register(&self, ip: &str, username: &str) -> Reply {
        let body = json!({ "username": username, "password": PASSWORD });
        self.post(ip, "/auth/register", &body).await
    }

    async fn login(&self, ip: &str, username: &str, password: &str) -> Reply {
        let body = json!({ "username": username, "password": password });
        self.post(ip, "/auth/login", &body).await
    }

    /// `GET /app` with `token`: the status, the body, and what the upstream received.
    async fn get(&self, token: &str) -> (u16, Value, Vec<common::Received>) {
        self.setup.upstream.clear();
        let resp = self
            .http
            .get(self.gw.url("/app"))
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        let json = serde_json::from_str(&resp.text().await.expect("body")).unwrap_or(Value::Null);
        (status, json, self.setup.upstream.received())
    }

    /// Asserts that `token` is refused with 401 `description`, and nothing is forwarded.
    async fn assert_refused(&self, token: &str, description: &str) {
        let (status, json, received) = self.get(token).await;
        assert_eq!(
            (status, json),
            (
                401,
                json!({ "error": "invalid_token", "error_description": description })
            ),
            "token {token}"
        );
        assert!(received.is_empty(), "forwarded: {received:?}");
    }

    async fn assert_accepted(&self, token: &str, sub: &str) {
        let (status, json, received) = self.get(token).await;
        assert_eq!(status, 200, "{json}");
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].headers["x-auth-user"], sub);
    }

    /// An HS256 token with this payload, signed with the gateway's secret (no `kid`: the
    /// signing key checks it).
    fn raw_token(&self, payload: &Value) -> String {
        hs256_token(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &payload.to_string(),
            self.setup.key.text.trim().as_bytes(),
        )
    }

    /// Runs `authgate --config <gateway.toml> ARGS`: the exit code, stdout and stderr.
    async fn cli(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let config = self.setup.dir.path().join("gateway.toml");
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let output = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_authgate"))
                .arg("--config")
                .arg(&config)
                .args(&args)
                .env_remove("AUTHGATE_CONFIG")
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .output()
                .expect("run the authgate binary")
        })
        .await
        .expect("the CLI task");
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("utf-8 output");
        (
            output.status.code(),
            text(output.stdout),
            text(output.stderr),
        )
    }

    /// As [`Env::cli`], asserting success.
    async fn cli_ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.cli(args).await;
        assert_eq!(code, Some(0), "authgate {args:?} failed: {stderr}");
        stdout
    }
}

/// Limits high enough never to matter, for the claims tests.
const OPEN: &str = "login_rate_per_ip = \"1000/m\"\nlogin_rate_per_user = \"1000/m\"";

/// A valid access token payload for `sub`, then changed by `change`.
fn payload(sub: &str, change: impl FnOnce(&mut Value)) -> Value {
    let mut value = serde_json::to_value(access_claims(sub, &[])).expect("claims");
    change(&mut value);
    value
}

// ------------------------------------------------------------------------------------------
// Item 7: claims
// ------------------------------------------------------------------------------------------

/// `user revoke` refuses tokens issued before an instant: a token dated in the future
/// survived it. Now it is refused outright (beyond the leeway), before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_dated_in_the_future_is_refused_and_cannot_outlive_user_revoke() {
    let env = Env::start("", OPEN).await;
    assert_eq!(env.register("192.0.2.1", "alice").await.status, 201);
    let now = now();
    let future = env.raw_token(&payload("alice", |p| p["iat"] = json!(now + 3600)));
    let current = env.raw_token(&payload("alice", |_| {}));
    env.assert_refused(&future, NOT_YET_VALID).await;
    env.assert_accepted(&current, "alice").await;

    env.cli_ok(&["user", "revoke", "alice"]).await;
    // Within the promised second the revocation reaches the gateway; the future-dated
    // token stays refused all along.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    env.assert_refused(&current, "the token has been revoked")
        .await;
    env.assert_refused(&future, NOT_YET_VALID).await;
}

/// `exp` of 1e30 or 2^63 was accepted: the lifetime (`exp - iat`, or `exp - now` without
/// `iat`) is capped by `tokens.max_lifetime`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_expiry_dates_are_refused() {
    let env = Env::start("max_lifetime = \"2h\"", OPEN).await;
    let now = now();
    for exp in [
        json!(1e30),
        serde_json::from_str::<Value>("9223372036854775808").expect("2^63"),
        json!(u64::MAX),
        // Ten seconds over: `exp - now` for the case without `iat` shrinks as time passes.
        json!(now + 2 * 3600 + 10),
    ] {
        let token = env.raw_token(&payload("alice", |p| {
            p["exp"] = exp.clone();
            p["iat"] = json!(now);
        }));
        env.assert_refused(&token, LIFETIME_TOO_LONG).await;
        let without_iat = env.raw_token(&payload("alice", |p| {
            p["exp"] = exp.clone();
            p.as_object_mut().expect("object").remove("iat");
        }));
        env.assert_refused(&without_iat, LIFETIME_TOO_LONG).await;
    }
    // An iat in the distant past stretches the lifetime too.
    let ancient = env.raw_token(&payload("alice", |p| p["iat"] = json!(-1e30)));
    env.assert_refused(&ancient, LIFETIME_TOO_LONG).await;
    // Exactly the cap is accepted.
    let at_cap = env.raw_token(&payload("alice", |p| {
        p["exp"] = json!(now + 2 * 3600);
        p["iat"] = json!(now);
    }));
    env.assert_accepted(&at_cap, "alice").await;
}

/// Numbers at the edges of `exp` are refused with 401, never a panic or a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_edge_cases_of_exp_are_plain_refusals() {
    let env = Env::start("", OPEN).await;
    for (exp, description) in [
        (json!(-1), EXPIRED),
        (json!(-1e30), EXPIRED),
        (json!(i64::MIN), EXPIRED),
        (json!(0.5), EXPIRED),
        (json!("tomorrow"), MALFORMED),
        (json!(null), "the token has no expiry"),
        (json!(1e300), LIFETIME_TOO_LONG),
    ] {
        let token = env.raw_token(&payload("alice", |p| p["exp"] = exp));
        env.assert_refused(&token, description).await;
    }
    let float = env.raw_token(&payload("alice", |p| {
        p["exp"] = json!(now() as f64 + 600.5);
    }));
    env.assert_accepted(&float, "alice").await;
    // The gateway is still serving.
    let (status, _, _) = env.get(&float).await;
    assert_eq!(status, 200);
}

/// A non-ASCII `sub` was forwarded as raw bytes in `X-Auth-User`. Registration never
/// makes such a name; a token that carries one (or a claim header that would) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_that_are_not_visible_ascii_never_reach_an_upstream_header() {
    let env = Env::start("", OPEN).await;
    for sub in ["ålice", "alice\u{80}", "al\u{7f}ice", " alice", "alice\t"] {
        let token = env.raw_token(&payload(sub, |_| {}));
        env.assert_refused(&token, UNFORWARDABLE).await;
    }
    // The harness forwards `roles` as X-Auth-Roles.
    let role = env.raw_token(&payload("alice", |p| p["roles"] = json!(["admin", "rôle"])));
    env.assert_refused(&role, UNFORWARDABLE).await;
    // Registration refuses the name in the first place.
    let reply = env.register("192.0.2.1", "ålice").await;
    assert_eq!(
        (reply.status, &reply.json["error"]),
        (400, &json!("invalid_request")),
        "{reply:?}"
    );
    // A plain ASCII subject with an inner space still passes.
    let spaced = env.raw_token(&payload("Alice Smith", |_| {}));
    env.assert_accepted(&spaced, "Alice Smith").await;
}

/// `token mint` refuses to sign what the gateway would refuse: a lifetime over
/// `max_lifetime`, a subject that cannot be a header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mint_refuses_tokens_the_gateway_would_refuse() {
    // access_ttl 10m and refresh_ttl 1h: max_lifetime defaults to 2h.
    let env = Env::start("", OPEN).await;
    let (code, _, stderr) = env
        .cli(&["token", "mint", "--sub", "alice", "--ttl", "3h"])
        .await;
    assert_eq!(
        (code, stderr.as_str()),
        (
            Some(1),
            "authgate: the ttl is longer than tokens.max_lifetime: the gateway would refuse the token\n"
        )
    );
    let (code, _, stderr) = env.cli(&["token", "mint", "--sub", "ålice"]).await;
    assert_eq!(
        (code, stderr.as_str()),
        (
            Some(1),
            "authgate: the subject must be visible ASCII (it becomes the identity header)\n"
        )
    );
    let token = env
        .cli_ok(&["token", "mint", "--sub", "alice", "--ttl", "2h"])
        .await;
    env.assert_accepted(token.trim(), "alice").await;
}

// ------------------------------------------------------------------------------------------
// Item 9: login lockout
// ------------------------------------------------------------------------------------------

/// Anyone could lock a user out by failing logins on their name: the per-user limit now
/// counts failures per (user, client IP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_on_a_name_from_one_address_does_not_lock_the_user_out() {
    let env = Env::start(
        "",
        "login_rate_per_ip = \"1000/m\"\nlogin_rate_per_user = \"3/h\"",
    )
    .await;
    let (attacker, victim) = ("203.0.113.66", "198.51.100.7");
    assert_eq!(env.register(victim, "alice").await.status, 201);
    for n in 0..3 {
        env.login(attacker, "alice", &format!("guess {n}"))
            .await
            .assert_invalid_credentials();
    }
    // The failing address is refused, the right password included...
    env.login(attacker, "alice", PASSWORD)
        .await
        .assert_limited(1..=1200);
    env.login(attacker, "ALICE", "guess 4")
        .await
        .assert_limited(1..=1200);
    // ...the user, from an address that has not failed, is not.
    env.login(victim, "alice", PASSWORD)
        .await
        .assert_logged_in();
}

/// Successful logins spent the per-user budget: only failures do now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_logins_do_not_spend_the_per_user_budget() {
    let env = Env::start(
        "",
        "login_rate_per_ip = \"1000/m\"\nlogin_rate_per_user = \"2/h\"",
    )
    .await;
    let ip = "198.51.100.7";
    assert_eq!(env.register(ip, "alice").await.status, 201);
    for _ in 0..5 {
        env.login(ip, "alice", PASSWORD).await.assert_logged_in();
    }
    env.login(ip, "alice", "typo 1")
        .await
        .assert_invalid_credentials();
    env.login(ip, "alice", "typo 2")
        .await
        .assert_invalid_credentials();
    env.login(ip, "alice", PASSWORD)
        .await
        .assert_limited(1..=1800);
}

/// The cap across addresses (`login_rate_per_user_all_ips`) stops a distributed guesser
/// without locking out the user: once spent, it refuses only the addresses that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_across_addresses_refuses_only_the_addresses_that_failed() {
    let env = Env::start(
        "",
        "login_rate_per_ip = \"1000/m\"\nlogin_rate_per_user = \"1000/m\"\n\
         login_rate_per_user_all_ips = \"3/h\"",
    )
    .await;
    assert_eq!(env.register("198.51.100.7", "alice").await.status, 201);
    let guessers = ["203.0.113.1", "203.0.113.2", "203.0.113.3"];
    for ip in guessers {
        env.login(ip, "alice", "a guess")
            .await
            .assert_invalid_credentials();
    }
    for ip in guessers {
        // 20 minutes until the next token of a 3/h bucket.
        env.login(ip, "alice", PASSWORD)
            .await
            .assert_limited(1100..=1200);
    }
    // A fresh address gets its one try, then is refused like the others.
    env.login("203.0.113.4", "alice", "another guess")
        .await
        .assert_invalid_credentials();
    env.login("203.0.113.4", "alice", "a third guess")
        .await
        .assert_limited(1..=3600);
    // The user, from an address that never failed, logs in; other users are untouched.
    env.login("198.51.100.7", "alice", PASSWORD)
        .await
        .assert_logged_in();
    assert_eq!(env.register("198.51.100.7", "bob").await.status, 201);
    env.login("203.0.113.1", "bob", PASSWORD)
        .await
        .assert_logged_in();
}

// ------------------------------------------------------------------------------------------
// Item 12: login budgets
// ------------------------------------------------------------------------------------------

/// Successful logins spent the per-IP budget, so an office behind one NAT address locked
/// itself out: only failures spend it now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_logins_do_not_spend_the_per_ip_budget() {
    let env = Env::start(
        "",
        "login_rate_per_ip = \"3/h\"\nlogin_rate_per_user = \"1000/m\"",
    )
    .await;
    let office = "198.51.100.7";
    for user in ["alice", "bob", "carol", "dave"] {
        assert_eq!(env.register(office, user).await.status, 201);
    }
    for _ in 0..2 {
        for user in ["alice", "bob", "carol", "dave"] {
            env.login(office, user, PASSWORD).await.assert_logged_in();
        }
    }
    // Three failures spend it, for every user from that address...
    for user in ["alice", "mallory", "nobody"] {
        env.login(office, user, "wrong password")
            .await
            .assert_invalid_credentials();
    }
    env.login(office, "bob", PASSWORD)
        .await
        .assert_limited(1..=1200);
    // ...and not for another address.
    env.login("192.0.2.1", "bob", PASSWORD)
        .await
        .assert_logged_in();
}

/// The per-IP budget still bounds the password hashes an address makes us compute: a
/// right password costs no failure token, but each check counts against ten times the
/// failure budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_ip_budget_still_bounds_password_checks() {
    let env = Env::start(
        "",
        "login_rate_per_ip = \"1/h\"\nlogin_rate_per_user = \"1000/m\"",
    )
    .await;
    let ip = "198.51.100.7";
    assert_eq!(env.register(ip, "alice").await.status, 201);
    for _ in 0..10 {
        env.login(ip, "alice", PASSWORD).await.assert_logged_in();
    }
    // Ten checks an hour: the next one in six minutes.
    env.login(ip, "alice", PASSWORD)
        .await
        .assert_limited(300..=360);
}

/// Registrations spent the login budget (before their body was even parsed), so junk
/// registrations from an address locked every login from it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_do_not_spend_the_login_budget() {
    let env = Env::start(
        "",
        "login_rate_per_ip = \"2/h\"\nlogin_rate_per_user = \"1000/m\"",
    )
    .await;
    let ip = "198.51.100.7";
    for n in 0..20 {
        let junk = env
            .post(
                ip,
                "/auth/register",
                &json!({ "username": format!("u{n}") }),
            )
            .await;
        assert_eq!(junk.status, 400, "{junk:?}");
    }
    for user in ["alice", "bob", "carol", "dave"] {
        assert_eq!(env.register(ip, user).await.status, 201);
    }
    env.login(ip, "alice", PASSWORD).await.assert_logged_in();
    env.login(ip, "alice", "wrong password")
        .await
        .assert_invalid_credentials();
    env.login(ip, "dave", PASSWORD).await.assert_logged_in();
}

/// Registration has a budget of its own, `register_rate_per_ip`, which leaves logins (and
/// other addresses) alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_has_its_own_per_ip_budget() {
    let env = Env::start(
        "",
        "login_rate_per_ip = \"2/h\"\nlogin_rate_per_user = \"1000/m\"\n\
         register_rate_per_ip = \"2/h\"",
    )
    .await;
    let ip = "198.51.100.7";
    assert_eq!(env.register(ip, "alice").await.status, 201);
    let taken = env.register(ip, "alice").await;
    assert_eq!(taken.status, 409, "{taken:?}");
    // 30 minutes until the next registration of a 2/h budget.
    env.register(ip, "bob").await.assert_limited(1700..=1800);
    env.login(ip, "alice", PASSWORD).await.assert_logged_in();
    assert_eq!(env.register("192.0.2.1", "bob").await.status, 201);
}
