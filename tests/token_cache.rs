//! The verified-token cache never lets through what a cold check refuses: expiry and
//! revocation are checked on every hit, a reload with new keys starts an empty cache, and
//! a token one byte off a cached one is verified from scratch.

mod common;

use std::sync::Arc;
use std::time::Duration;

use authgate::config::{Config, LoadOptions};
use authgate::jwt::Algorithm;
use common::{Setup, TestKey, access_claims};
use tokio::sync::{mpsc, oneshot};

/// The value of one counter, by its name and label set as printed; 0 when absent.
async fn metric(admin: std::net::SocketAddr, series: &str) -> u64 {
    common::metrics::value(&common::metrics::scrape(admin).await, series) as u64
}

const HIT: &str = r#"authgate_token_cache_lookups_total{result="hit"}"#;
const MISS: &str = r#"authgate_token_cache_lookups_total{result="miss"}"#;

async fn status(client: &reqwest::Client, url: &str, token: &str) -> (u16, String) {
    let resp = client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_is_refused_once_it_expires() {
    let setup = Setup::new(Algorithm::ES256).await;
    let config = setup
        .standard_config()
        .replace("leeway = \"5s\"", "leeway = \"0s\"");
    let gw = setup.start_with(&config).await;
    let admin = gw.admin.expect("admin");
    let mut claims = access_claims("alice", &[]);
    claims.exp = Some(common::now() + 2);
    let token = setup.key.sign(&claims);
    let client = setup.client();
    assert_eq!(status(&client, &gw.url("/x"), &token).await.0, 200);
    assert_eq!(status(&client, &gw.url("/x"), &token).await.0, 200);
    assert_eq!(
        metric(admin, HIT).await,
        1,
        "the second use was a cache hit"
    );
    while common::now() < claims.exp.expect("exp") {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, body) = status(&client, &gw.url("/x"), &token).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("the token has expired"), "{body}");
    assert_eq!(
        metric(admin, HIT).await,
        2,
        "refused on a hit, not by a cold check"
    );
    assert_eq!(setup.upstream.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_is_refused_right_after_logout_and_user_revoke() {
    let setup = Setup::new(Algorithm::HS256).await;
    let config = format!(
        "{}\n[store]\nurl = \"sqlite://authgate.db\"\n\n[[route]]\npath = \"/\"\nupstream = \"app\"\n",
        setup.head()
    );
    let gw = setup.start_with(&config).await;
    let client = setup.client();
    let login = |name: &'static str| {
        let client = client.clone();
        let url = gw.url("/auth");
        async move {
            let body = serde_json::json!({ "username": name, "password": "a long password 1" });
            let reply = client
                .post(format!("{url}/register"))
                .json(&body)
                .send()
                .await
                .expect("register");
            assert_eq!(reply.status(), 201);
            let tokens: serde_json::Value = client
                .post(format!("{url}/login"))
                .json(&body)
                .send()
                .await
                .expect("login")
                .json()
                .await
                .expect("json");
            (
                tokens["access_token"].as_str().expect("access").to_owned(),
                tokens["refresh_token"]
                    .as_str()
                    .expect("refresh")
                    .to_owned(),
            )
        }
    };

    // Logout: the access token was cached by two uses, then refused at once.
    let (access, refresh) = login("alice").await;
    assert_eq!(status(&client, &gw.url("/x"), &access).await.0, 200);
    assert_eq!(status(&client, &gw.url("/x"), &access).await.0, 200);
    let logout = client
        .post(gw.url("/auth/logout"))
        .bearer_auth(&refresh)
        .json(&serde_json::json!({ "access_token": access }))
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), 204);
    let (code, body) = status(&client, &gw.url("/x"), &access).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("revoked"), "{body}");

    // `user revoke` from the command line: refused within the follower's poll.
    let (access, _) = login("bob").await;
    assert_eq!(status(&client, &gw.url("/x"), &access).await.0, 200);
    assert_eq!(status(&client, &gw.url("/x"), &access).await.0, 200);
    let out = common::process::run_cli(
        &gw.dir.join("gateway.toml"),
        &["user", "revoke", "bob"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut refused = false;
    for _ in 0..30 {
        if status(&client, &gw.url("/x"), &access).await.0 == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "a cached token outlived `user revoke`");
    assert!(metric(gw.admin.expect("admin"), HIT).await >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_one_byte_off_a_cached_one_is_verified_cold() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start().await;
    let admin = gw.admin.expect("admin");
    let client = setup.client();
    let token = setup.token("alice", &[]);
    assert_eq!(status(&client, &gw.url("/x"), &token).await.0, 200);
    assert_eq!(metric(admin, MISS).await, 1);
    // Flip one character of the signature and one of the payload.
    let last = token.len() - 2;
    let mut sig = token.clone().into_bytes();
    sig[last] = if sig[last] == b'A' { b'B' } else { b'A' };
    let mut payload = token.clone().into_bytes();
    let dot = token.find('.').expect("dot") + 3;
    payload[dot] = if payload[dot] == b'x' { b'y' } else { b'x' };
    for forged in [sig, payload] {
        let forged = String::from_utf8(forged).expect("ascii");
        let (code, body) = status(&client, &gw.url("/x"), &forged).await;
        assert_eq!(code, 401, "{body}");
    }
    assert_eq!(metric(admin, MISS).await, 3, "both were cold verifications");
    assert_eq!(metric(admin, HIT).await, 0);
    assert_eq!(setup.upstream.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_new_key_set_empties_the_cache() {
    let setup = Setup::new(Algorithm::ES256).await;
    let path = setup.dir.path().join("gateway.toml");
    std::fs::write(&path, setup.standard_config()).expect("write");
    let config = Config::load(&path, LoadOptions::default()).expect("config");
    let listeners = authgate::Listeners::bind(&config).await.expect("bind");
    let addr = listeners.public.local_addr().expect("addr");
    let admin = listeners
        .admin
        .as_ref()
        .expect("admin")
        .local_addr()
        .expect("addr");
    let (reload, reloads) = mpsc::channel(1);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(authgate::serve(
        Arc::new(config),
        listeners,
        async {
            let _ = stopped.await;
        },
        Some(reloads),
    ));
    let url = format!("https://localhost:{}/x", addr.port());
    let client = setup.client();
    let token = setup.token("alice", &[]);
    assert_eq!(status(&client, &url, &token).await.0, 200);
    assert_eq!(status(&client, &url, &token).await.0, 200);
    assert_eq!(metric(admin, HIT).await, 1);

    // A new signing key, the old one gone: the cached token must now be refused.
    let new_key = TestKey::generate(Algorithm::ES256);
    let new_config = setup
        .standard_config()
        .replace("signing_key = \"signing.pem\"", "signing_key = \"new.pem\"");
    std::fs::write(setup.dir.path().join("new.pem"), &new_key.text).expect("write");
    std::fs::write(&path, new_config).expect("write");
    reload.send(()).await.expect("reload");
    let mut refused = None;
    for _ in 0..40 {
        let (code, body) = status(&client, &url, &token).await;
        if code == 401 {
            refused = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = refused.expect("the cached token outlived the key change");
    assert!(body.contains("unknown key"), "{body}");
    assert_eq!(
        metric(admin, r#"authgate_config_reloads_total{result="ok"}"#).await,
        1
    );
    // Tokens of the new key work, and are cached in the new cache.
    let fresh = new_key.sign(&access_claims("alice", &[]));
    assert_eq!(status(&client, &url, &fresh).await.0, 200);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
}
