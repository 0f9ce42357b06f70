//! API keys for machines: created, listed and revoked from the command line while a
//! gateway runs; accepted as Bearer, `X-API-Key` and a Basic password; refused when
//! mistyped (by the checksum, before any lookup), unknown, expired, revoked, or on a route
//! that wants a person; never forwarded, listed or logged in full; a revocation reaches
//! every replica on one Redis within a second.

mod common;

use std::time::{Duration, Instant};

use authgate::jwt::Algorithm;
use base64::Engine as _;
use common::process::{Site, run_cli};
use common::{Gateway, RedisServer, Setup, Upstream};
use reqwest::RequestBuilder;
use serde_json::Value;

/// The product promises one second; polls allow a little more before failing.
const POLL_LIMIT: Duration = Duration::from_millis(1500);

/// Runs `authgate ARGS` on `config`; stdout, or the failure's stderr.
fn cli(config: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let out = run_cli(config, args, Some(""));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn create(config: &std::path::Path, args: &[&str]) -> String {
    let args: Vec<&str> = ["apikey", "create"].iter().chain(args).copied().collect();
    let key = cli(config, &args).unwrap_or_else(|e| panic!("authgate {args:?}: {e}"));
    key.trim().to_owned()
}

/// The status and JSON body of a request.
async fn answer(request: RequestBuilder) -> (u16, Value) {
    let resp = request.send().await.expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Polls `url` with `key` as Bearer until it answers `want`, within [`POLL_LIMIT`]; how
/// long that took.
async fn until_status(client: &reqwest::Client, url: &str, key: &str, want: u16) -> Duration {
    let since = Instant::now();
    loop {
        let (status, _) = answer(client.get(url).bearer_auth(key)).await;
        if status == want {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < POLL_LIMIT,
            "{url} still answers {status}, not {want}, after {:?}",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn basic(key: &str) -> String {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("cron:{key}"));
    format!("Basic {pair}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_the_command_line_pass_where_machines_may_and_nowhere_else() {
    let site = Site::new().store().upstream(Upstream::start().await);
    let people = site.token("alice");
    site.write_config(&format!(
        r#"{}
[identity]
claim_headers = {{ "X-Auth-Roles" = "roles" }}

[[route]]
path = "/machines"
upstream = "app"
require = {{ kind = "api_key", roles = ["ci"] }}

[[route]]
path = "/people"
upstream = "app"
require = {{ kind = "user" }}

[[route]]
path = "/"
upstream = "app"
"#,
        site.head()
    ));
    let config = site.config_path();
    let gate = site.start("info").await;
    let client = site.client();
    let upstream = site.recording();

    // Created while the gateway runs: it follows the store.
    let key = create(&config, &["ci-bot", "--role", "ci"]);
    assert!(key.starts_with("agk_") && key.len() == 42, "{key}");
    until_status(&client, &site.url("/machines/a"), &key, 200).await;

    // Every source; the upstream gets the key's name and roles, never the key.
    upstream.clear();
    let sources = [
        client.get(site.url("/machines/bearer")).bearer_auth(&key),
        client
            .get(site.url("/machines/header"))
            .header("X-API-Key", &key),
        client
            .get(site.url("/machines/basic"))
            .header("Authorization", basic(&key)),
        // The same key twice is one credential.
        client
            .get(site.url("/machines/both"))
            .bearer_auth(&key)
            .header("X-API-Key", &key),
    ];
    for request in sources {
        let (status, body) = answer(request).await;
        assert_eq!(status, 200, "{body}");
    }
    let received = upstream.received();
    assert_eq!(received.len(), 4);
    for got in &received {
        assert_eq!(got.headers["x-auth-user"], "ci-bot");
        assert_eq!(got.headers["x-auth-roles"], "ci");
        assert!(got.headers.get("x-api-key").is_none(), "{got:?}");
        assert!(got.headers.get("authorization").is_none(), "{got:?}");
    }

    // Refusals, none reaching the upstream.
    upstream.clear();
    let mut typo = key.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).expect("ascii");
    let (status, body) = answer(client.get(site.url("/x")).bearer_auth(&typo)).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("checksum")),
        "refused by the checksum, before any lookup: {body}"
    );
    let stranger = authgate::api_keys::mint();
    let (status, body) = answer(client.get(site.url("/x")).header("X-API-Key", &stranger)).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("unknown")),
        "{body}"
    );
    let (status, body) = answer(client.get(site.url("/people")).bearer_auth(&key)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("insufficient_scope"))
    );
    let (status, _) = answer(client.get(site.url("/machines")).bearer_auth(&people)).await;
    assert_eq!(status, 403, "a person's token on a machines-only route");
    let (status, body) = answer(
        client
            .get(site.url("/x"))
            .bearer_auth(&people)
            .header("X-API-Key", &key),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    assert!(upstream.received().is_empty());
    let (status, _) = answer(client.get(site.url("/people")).bearer_auth(&people)).await;
    assert_eq!(status, 200);

    // A key's name is an identity: no second key and no user may take it.
    let taken = cli(&config, &["apikey", "create", "ci-bot"]).expect_err("a second ci-bot");
    assert!(taken.contains("taken"), "{taken}");
    let out = run_cli(
        &config,
        &["user", "add", "CI-BOT"],
        Some("correct horse battery\n"),
    );
    assert!(!out.status.success(), "a user may not take a key's name");

    // A key with a lifetime stops at its end.
    let brief = create(&config, &["brief", "--ttl", "2s"]);
    until_status(&client, &site.url("/x"), &brief, 200).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = answer(client.get(site.url("/x")).bearer_auth(&brief)).await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (401, Some("the token has expired"))
    );

    // The list: names, roles, times — the last use written within a few seconds — and
    // never a key or its hash.
    let since = Instant::now();
    let listed = loop {
        let listed = cli(&config, &["apikey", "list"]).expect("list");
        if !listed.contains("ci-bot\troles=ci\tcreated=20") {
            panic!("{listed}");
        }
        if !listed.contains("last_used=never\texpires=never") {
            break listed;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "no last use recorded: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(listed.contains("brief\troles=\tcreated=20"), "{listed}");
    for secret in [&key, &brief, &key[4..20].to_owned()] {
        assert!(!listed.contains(secret.as_str()), "{listed}");
    }
    assert!(
        !listed.contains(&authgate::api_keys::digest(&key)),
        "{listed}"
    );

    // Revoked: refused within a second, gone from the list.
    assert!(cli(&config, &["apikey", "revoke", "ci-bot"]).is_ok());
    let took = until_status(&client, &site.url("/machines/a"), &key, 401).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    let listed = cli(&config, &["apikey", "list"]).expect("list");
    assert!(!listed.contains("ci-bot"), "{listed}");
    let gone = cli(&config, &["apikey", "revoke", "ci-bot"]).expect_err("twice");
    assert!(gone.contains("no API key"), "{gone}");

    gate.stop().await;
    let log = std::fs::read_to_string(site.log_path()).expect("log");
    for secret in [&key, &brief, &typo, &stranger] {
        assert!(!log.contains(&secret[4..]), "a key in the log:\n{log}");
    }
}

/// Two replicas on one Redis: a key created on the store passes on both, and its
/// revocation is refused by both within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_on_every_replica_within_a_second() {
    let redis = RedisServer::start();
    let setup = Setup::new(Algorithm::ES256).await;
    let config = format!(
        "{}\n[store]\nurl = \"{}\"\n\n[[route]]\npath = \"/\"\nupstream = \"app\"\n",
        setup.head(),
        redis.url()
    );
    let a = setup.start_with(&config).await;
    let b = setup.start_with(&config).await;
    let path = setup.dir.path().join("gateway.toml");
    let client = setup.client();
    let key = create(&path, &["deployer", "--role", "deploy"]);
    for gw in [&a, &b] {
        until_status(&client, &gw.url("/x"), &key, 200).await;
    }
    let got = setup.upstream.received();
    assert_eq!(
        got.last().expect("forwarded").headers["x-auth-user"],
        "deployer"
    );
    assert_eq!(
        got.last().expect("forwarded").headers["x-auth-roles"],
        "deploy"
    );

    if let Err(e) = cli(&path, &["apikey", "revoke", "deployer"]) {
        panic!("revoke: {e}");
    }
    let revoked = Instant::now();
    for gw in [&a, &b] {
        until_status(&client, &gw.url("/x"), &key, 401).await;
    }
    let took = revoked.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    let (status, body) = answer(client.get(a.url("/x")).bearer_auth(&key)).await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (401, Some("the token has been revoked"))
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn bad_arguments_are_refused_before_anything_is_stored() {
    let setup = Setup::new(Algorithm::HS256).await;
    let config = format!(
        "{}\n[store]\nurl = \"sqlite://keys.db\"\n\n[[route]]\npath = \"/\"\nupstream = \"app\"\n",
        setup.head()
    );
    let gw: Gateway = setup.start_with(&config).await;
    let path = setup.dir.path().join("gateway.toml");
    for args in [
        &["apikey", "create", "x"][..],
        &["apikey", "create", "bot", "--role", "a,b"],
        &["apikey", "create", "bot", "--ttl", "soon"],
    ] {
        let refused = cli(&path, args).expect_err("refused");
        assert!(!refused.is_empty(), "{args:?}");
    }
    assert_eq!(cli(&path, &["apikey", "list"]).expect("list"), "");
    gw.stop().await;
}
