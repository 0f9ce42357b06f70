//! Several replicas on one Redis store: accounts, refresh families and revocations are
//! shared, and a revocation made on one replica is refused by every replica within a
//! second (each replica's in-memory map follows the store's revocation cursor).

mod common;

use std::time::{Duration, Instant};

use authgate::jwt::Algorithm;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_accounts_and_enforce_each_others_revocations() {
    let redis = RedisServer::start();
    let setup = Setup::new(Algorithm::ES256).await;
    let config = config(&setup, &redis);
    let a = setup.start_with(&config).await;
    let b = setup.start_with(&config).await;
    let client = setup.client();

    // Registered on one replica, logged in on the other.
    let (status, body) = post(
        &client,
        &a,
        "/auth/register",
        None,
        json!({"username": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = post(
        &client,
        &b,
        "/auth/register",
        None,
        json!({"username": "ALICE", "password": PASSWORD}),
    )
    .await;
    assert_eq!(
        status, 409,
        "one account across replicas, regardless of case: {body}"
    );
    let (status, login) = post(
        &client,
        &b,
        "/auth/login",
        None,
        json!({"username": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let access = login["access_token"].as_str().expect("access").to_owned();
    let refresh = login["refresh_token"].as_str().expect("refresh").to_owned();
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
    let (status, login) = post(
        &client,
        &a,
        "/auth/login",
        None,
        json!({"username": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let access = login["access_token"].as_str().expect("access").to_owned();
    let refresh = login["refresh_token"].as_str().expect("refresh").to_owned();
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
    let since = Instant::now();
    while status_of(&client, &a, &access).await != 401 {
        assert!(
            since.elapsed() < POLL_LIMIT,
            "replica A still accepts a token revoked on B after {:?}",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status_of(&client, &b, &access).await, 401);
    let (status, body) = post(&client, &a, "/auth/refresh", Some(&refresh), json!({})).await;
    assert_eq!(status, 401, "{body}");
}
