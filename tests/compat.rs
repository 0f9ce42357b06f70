//! Flask-JWT-Extended compatibility: `[accounts] paths` puts the account endpoints where a
//! seed app had them, and `[compat] error_body = "flask-jwt-extended"` answers refusals as
//! `{"msg": ...}`. The seed's own client flow (`tests/support/seed_client.py`: register,
//! login, `/protected`, `/token/refresh`) runs against the real gateway, under the test
//! Python (`common::python()`).

mod common;

use std::process::Command;

use authgate::jwt::Algorithm;
use common::Setup;
use common::wire::plain_config;

const SEED_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/seed_client.py");

const SEED_PATHS: &str = r#"
[store]
url = "sqlite://data/authgate.db"

[accounts]
min_password_length = 10
paths = { login = "/login", register = "/register", refresh = "/token/refresh", logout = "/logout", me = "/protected" }

[compat]
error_body = "flask-jwt-extended"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_client_flow_runs_against_the_seed_paths() {
    let setup = Setup::new(Algorithm::HS256).await;
    let config = plain_config(&setup, "").replace("[admin]", &format!("{SEED_PATHS}\n[admin]"));
    let gw = setup.start_with(&config).await;
    let base = format!("http://127.0.0.1:{}", gw.addr.port());
    let client = base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(common::python())
            .arg(SEED_CLIENT)
            .arg(client)
            .output()
            .expect("run the seed client")
    })
    .await
    .expect("task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the seed client failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(r#"{"ok": true}"#), "{stdout}");
    assert!(
        setup.upstream.received().is_empty(),
        "the gateway answered every step itself"
    );

    // The old paths are not the gateway's any more: /auth/login goes to the routes (a
    // token needed), and a refusal has the {"msg"} shape with its status and challenge.
    let response = reqwest::Client::new()
        .post(format!("{base}/auth/login"))
        .json(&serde_json::json!({ "username": "seeduser", "password": "seed-password-1" }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(
        body,
        serde_json::json!({ "msg": "this route requires a bearer token" })
    );
}
