mod common;

use authgate::jwt::Algorithm;
use common::Setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_reaches_the_upstream_with_the_identity_header() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let resp = setup
        .client()
        .get(gw.url("/hello"))
        .bearer_auth(setup.token("alice", &["admin"]))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let got = setup.upstream.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers["x-auth-user"], "alice");
    assert_eq!(got[0].headers["x-auth-roles"], "admin");
    gw.stop().await;
}
