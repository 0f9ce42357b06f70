//! Several replicas on one Redis store: accounts, refresh families and revocations are
//! shared, and a revocation made on one replica is refused by every replica within a
//! second (each replica's in-memory map follows the store's revocation cursor).

mod common;

use std::time::{Duration, Instant};

use authgate::jwt::Algorithm;
use common::process::run_cli;
use common::{Gateway, RedisServer, Setup};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
/// The product's promise is one second; the poll allows a little more before failing.
const POLL_LIMIT: Duration = Duration::from_millis(1500);

fn config(setup: &Setup, redis: &RedisServer) -> String {
    format!(
        "{}\n[store]\nurl = \"{}\"\n\n[accounts]\nlogin_rate_per_ip = \"1000/m\"\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n",
        setup.head(),
        redis.url()
    )
}

async fn post(
    client: &reqwest::Client,
    gw: &Gateway,
    path: &str,
    bearer: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut request = client.post(gw.url(path)).json(&body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let resp = request.send().await.expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn status_of(client: &reqwest::Client, gw: &Gateway, token: &str) -> u16 {
    client
        .get(gw.url("/app/x"))
        .bearer_auth(token)
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

/// A Redis server and two gateways on it, sharing one folder, key and config.
async fn two_replicas() -> (RedisServer, Setup, Gateway, Gateway) {
    let redis = RedisServer::start();
    let setup = Setup::new(Algorithm::ES256).await;
    let config = config(&setup, &redis);
    let a = setup.start_with(&config).await;
    let b = setup.start_with(&config).await;
    (redis, setup, a, b)
}

/// Registers `user` on `gw`: the status and body.
async fn register(client: &reqwest::Client, gw: &Gateway, user: &str) -> (u16, Value) {
    post(
        client,
        gw,
        "/auth/register",
        None,
        json!({"username": user, "password": PASSWORD}),
    )
    .await
}

/// Logs `user` in on `gw`: its access and refresh tokens.
async fn login(client: &reqwest::Client, gw: &Gateway, user: &str) -> (String, String) {
    let (status, login) = post(
        client,
        gw,
        "/auth/login",
        None,
        json!({"username": user, "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let token = |name: &str| login[name].as_str().expect("a token").to_owned();
    (token("access_token"), token("refresh_token"))
}

/// Waits (bounded) until `gw` refuses `access`.
async fn wait_refused(client: &reqwest::Client, gw: &Gateway, access: &str) {
    let since = Instant::now();
    while status_of(client, gw, access).await != 401 {
        assert!(
            since.elapsed() < POLL_LIMIT,
            "a replica still accepts a revoked token after {:?}",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_accounts_and_enforce_each_others_revocations() {
    let (_redis, setup, a, b) = two_replicas().await;
    let client = setup.client();

    // Registered on one replica, logged in on the other.
    let (status, body) = register(&client, &a, "alice").await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = register(&client, &b, "ALICE").await;
    assert_eq!(
        status, 409,
        "one account across replicas, regardless of case: {body}"
    );
    let (access, refresh) = login(&client, &b, "alice").await;
    assert_eq!(status_of(&client, &a, &access).await, 200);
    assert_eq!(status_of(&client, &b, &access).await, 200);

    // A refresh on one replica spends the token for both: reusing it on the other is
    // detected, and the whole family dies.
    let (status, rotated) = post(&client, &a, "/auth/refresh", Some(&refresh), json!({})).await;
    assert_eq!(status, 200, "{rotated}");
    let refresh2 = rotated["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let (status, body) = post(&client, &b, "/auth/refresh", Some(&refresh), json!({})).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = post(&client, &a, "/auth/refresh", Some(&refresh2), json!({})).await;
    assert_eq!(status, 401, "the family died with the reuse: {body}");

    // A logout on replica B: replica A refuses the access token within a second.
    let (access, refresh) = login(&client, &a, "alice").await;
    assert_eq!(
        status_of(&client, &a, &access).await,
        200,
        "cached on A before the logout"
    );
    let (status, body) = post(
        &client,
        &b,
        "/auth/logout",
        Some(&refresh),
        json!({"access_token": access}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    wait_refused(&client, &a, &access).await;
    assert_eq!(status_of(&client, &b, &access).await, 401);
    let (status, body) = post(&client, &a, "/auth/refresh", Some(&refresh), json!({})).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_commands_work_on_redis_and_every_replica_follows() {
    let (_redis, setup, a, b) = two_replicas().await;
    let client = setup.client();
    let cli = |args: &[&str], stdin: &str| {
        let out = run_cli(&setup.dir.path().join("gateway.toml"), args, Some(stdin));
        assert!(
            out.status.success(),
            "authgate {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // A user added from the command line logs in on either replica.
    cli(
        &["user", "add", "root", "--role", "admin"],
        &format!("{PASSWORD}\n"),
    );
    assert!(cli(&["user", "list"], "").contains("root\troles=admin"));
    let (access, _) = login(&client, &b, "root").await;
    assert_eq!(status_of(&client, &a, &access).await, 200);

    // `user revoke` writes Redis only; both replicas refuse the token within a second.
    cli(&["user", "revoke", "root"], "");
    wait_refused(&client, &a, &access).await;
    wait_refused(&client, &b, &access).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_a_replica_is_unready_accounts_answer_503_and_proxying_goes_on() {
    let (redis, setup, a, _b) = two_replicas().await;
    let client = setup.client();
    let (status, body) = register(&client, &a, "alice").await;
    assert_eq!(status, 201, "{body}");
    let (access, _) = login(&client, &a, "alice").await;
    let readyz = |gw: &Gateway| {
        let url = format!("http://{}/readyz", gw.admin.expect("admin listener"));
        async move {
            let resp = reqwest::get(url).await.expect("readyz");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.expect("json"))
        }
    };
    assert_eq!(readyz(&a).await.0, 200);

    drop(redis);
    let (status, body) = readyz(&a).await;
    assert_eq!(
        (status, body),
        (503, json!({"status": "store unreachable"})),
        "readiness includes the store (PRODUCT.md)"
    );
    let (status, body) = post(
        &client,
        &a,
        "/auth/login",
        None,
        json!({"username": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "store_unavailable", "{body}");
    // Verified tokens and the revocations in memory keep the proxy going.
    assert_eq!(status_of(&client, &a, &access).await, 200);
}
