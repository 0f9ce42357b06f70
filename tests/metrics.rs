//! Prometheus metrics through the real gateway: on the admin listener (and never on the
//! public one), requests counted by route, method and status, authentication failures by
//! reason, upstream errors by upstream and kind, open connections, and the labels of
//! unrouted and invalid requests.

mod common;

use std::time::{Duration, Instant};

use authgate::jwt::Algorithm;
use common::metrics::{delta, scrape, value};
use common::{Setup, json_of, raw_json};
use tokio::net::TcpListener;

fn requests_key(route: &str, method: &str, status: u16) -> String {
    format!(r#"authgate_requests_total{{route="{route}",method="{method}",status="{status}"}}"#)
}

/// A URL on which nothing listens: connections are refused.
async fn refusing_url() -> String {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    url
}

/// The standard routes plus `/down` (an upstream that refuses connections) and `/slow`
/// (the harness upstream behind a 500 ms timeout; its `/slow` answer takes 3 s).
async fn metrics_config(setup: &Setup) -> String {
    format!(
        r#"{head}
[[upstream]]
name = "down"
url = "{down}"
connect_timeout = "1s"
timeout = "1s"

[[upstream]]
name = "quick"
url = "{app}"
timeout = "500ms"

[[route]]
path = "/public"
upstream = "app"
auth = "public"

[[route]]
path = "/admin"
upstream = "app"
require = {{ roles = ["admin"] }}

[[route]]
path = "/down"
upstream = "down"
auth = "public"

[[route]]
path = "/slow"
upstream = "quick"
auth = "public"

[[route]]
path = "/"
upstream = "app"
"#,
        head = setup.head(),
        down = refusing_url().await,
        app = setup.upstream.url(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_route_method_and_status() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start_with(&metrics_config(&setup).await).await;
    let admin = gw.admin.expect("admin listener");
    let client = setup.http1_client();
    let before = scrape(admin).await;

    const N: usize = 3;
    for i in 0..N {
        let resp = client
            .get(gw.url(&format!("/public/item{i}")))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(body["path"], format!("/public/item{i}"));
    }
    // A protected route without a token: 401, counted under that route.
    let resp = client.get(gw.url("/orders")).send().await.expect("send");
    assert_eq!(resp.status(), 401);
    let resp = client.get(gw.url("/admin/x")).send().await.expect("send");
    assert_eq!(resp.status(), 401);
    // A POST to the public route is counted under its own method.
    let resp = client
        .post(gw.url("/public/form"))
        .body("abc")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);

    let after = scrape(admin).await;
    assert_eq!(
        delta(&before, &after, &requests_key("/public", "GET", 200)),
        N as f64,
        "{after:#?}"
    );
    assert_eq!(
        delta(&before, &after, &requests_key("/public", "POST", 200)),
        1.0
    );
    assert_eq!(delta(&before, &after, &requests_key("/", "GET", 401)), 1.0);
    assert_eq!(
        delta(&before, &after, &requests_key("/admin", "GET", 401)),
        1.0
    );
    // Nothing was counted under a status that was not answered.
    assert_eq!(delta(&before, &after, &requests_key("/", "GET", 200)), 0.0);
    assert_eq!(
        delta(
            &before,
            &after,
            r#"authgate_request_duration_seconds_count{route="/public"}"#
        ),
        (N + 1) as f64
    );
    assert_eq!(
        delta(
            &before,
            &after,
            r#"authgate_request_duration_seconds_count{route="/"}"#
        ),
        1.0
    );
    assert!(
        value(
            &after,
            r#"authgate_request_duration_seconds_sum{route="/public"}"#
        ) > 0.0
    );

    // Only the public requests went upstream.
    let got = setup.upstream.received();
    let paths: Vec<&str> = got.iter().map(|r| r.path_and_query.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/public/item0",
            "/public/item1",
            "/public/item2",
            "/public/form"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_are_counted_by_reason() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start().await;
    let admin = gw.admin.expect("admin listener");
    let client = setup.http1_client();

    let expired = {
        let mut claims = common::access_claims("alice", &[]);
        let now = common::now();
        claims.iat = Some(now - 1200);
        claims.nbf = Some(now - 1200);
        claims.exp = Some(now - 600);
        setup.key.sign(&claims)
    };
    let bad_signature = {
        let alice = setup.token("alice", &[]);
        let bob = setup.token("bob", &[]);
        let (signed, _) = alice.rsplit_once('.').expect("a JWS");
        let (_, signature) = bob.rsplit_once('.').expect("a JWS");
        format!("{signed}.{signature}")
    };
    let no_admin = setup.token("alice", &["user"]);

    // (reason, path, token, status, error code, error description)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        u16,
        &'a str,
        Option<&'a str>,
    );
    let cases: [Case<'_>; 4] = [
        ("missing", "/orders", None, 401, "missing_token", None),
        (
            "expired",
            "/orders",
            Some(&expired),
            401,
            "invalid_token",
            Some("the token has expired"),
        ),
        (
            "bad_signature",
            "/orders",
            Some(&bad_signature),
            401,
            "invalid_token",
            Some("the token signature is invalid"),
        ),
        (
            "insufficient_scope",
            "/admin/users",
            Some(&no_admin),
            403,
            "insufficient_scope",
            None,
        ),
    ];
    for (reason, path, token, status, code, description) in cases {
        let before = scrape(admin).await;
        let mut req = client.get(gw.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("send");
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let (got_status, content_type, body) = json_of(resp).await;
        assert_eq!(got_status, status, "{reason}: {body}");
        assert_eq!(content_type, "application/json", "{reason}");
        assert_eq!(body["error"], code, "{reason}");
        if let Some(description) = description {
            assert_eq!(body["error_description"], description, "{reason}");
        }
        if status == 401 {
            let challenge = challenge.expect("a 401 carries a challenge");
            assert!(
                challenge.starts_with(r#"Bearer realm="authgate""#),
                "{challenge}"
            );
            assert_eq!(
                challenge.contains("error="),
                token.is_some(),
                "{reason}: {challenge}"
            );
        }
        let after = scrape(admin).await;
        let key = format!(r#"authgate_auth_failures_total{{reason="{reason}"}}"#);
        assert_eq!(delta(&before, &after, &key), 1.0, "{key}: {after:#?}");
        // Exactly one reason moved.
        let moved: Vec<&String> = after
            .keys()
            .filter(|k| k.starts_with("authgate_auth_failures_total"))
            .filter(|k| delta(&before, &after, k) != 0.0)
            .collect();
        assert_eq!(moved, [&key], "{reason}");
        let route = if path.starts_with("/admin") {
            "/admin"
        } else {
            "/"
        };
        assert_eq!(
            delta(&before, &after, &requests_key(route, "GET", status)),
            1.0,
            "{reason}"
        );
    }
    assert!(
        setup.upstream.received().is_empty(),
        "no refused request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_are_counted_by_upstream_and_kind() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start_with(&metrics_config(&setup).await).await;
    let admin = gw.admin.expect("admin listener");
    let client = setup.http1_client();
    let before = scrape(admin).await;

    // Refused: 502.
    let resp = client.get(gw.url("/down/x")).send().await.expect("send");
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "bad_gateway");
    let after_refused = scrape(admin).await;
    assert_eq!(
        delta(
            &before,
            &after_refused,
            r#"authgate_upstream_errors_total{upstream="down",kind="refused"}"#
        ),
        1.0,
        "{after_refused:#?}"
    );
    assert_eq!(
        delta(&before, &after_refused, &requests_key("/down", "GET", 502)),
        1.0
    );

    // Too slow: 504 after the upstream's 500 ms timeout.
    let started = Instant::now();
    let resp = client.get(gw.url("/slow")).send().await.expect("send");
    let elapsed = started.elapsed();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 504);
    assert_eq!(body["error"], "gateway_timeout");
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_millis(2000),
        "{elapsed:?}"
    );
    let after = scrape(admin).await;
    assert_eq!(
        delta(
            &after_refused,
            &after,
            r#"authgate_upstream_errors_total{upstream="quick",kind="timeout"}"#
        ),
        1.0,
        "{after:#?}"
    );
    assert_eq!(
        delta(&after_refused, &after, &requests_key("/slow", "GET", 504)),
        1.0
    );
    // The refusal was counted once, not again.
    assert_eq!(
        delta(
            &after_refused,
            &after,
            r#"authgate_upstream_errors_total{upstream="down",kind="refused"}"#
        ),
        0.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            r#"authgate_upstream_errors_total{upstream="app",kind="timeout"}"#
        ),
        0.0
    );
    let slow_requests = setup
        .upstream
        .received()
        .iter()
        .filter(|r| r.path_and_query == "/slow")
        .count();
    assert_eq!(slow_requests, 1, "a timed-out request is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_counts_a_keep_alive_connection() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start().await;
    let admin = gw.admin.expect("admin listener");
    let idle = value(&scrape(admin).await, "authgate_open_connections");

    let mut stream = common::tls_connect(gw.addr, &setup.pki.ca_pem, &[b"http/1.1"]).await;
    for i in 0..2 {
        let (status, text) = common::keep_alive_get(&mut stream, &format!("/public/ka{i}")).await;
        assert_eq!(status, 200, "{text}");
    }
    let open = value(&scrape(admin).await, "authgate_open_connections");
    assert!(open >= 1.0, "open connections while one is open: {open}");
    assert!(open >= idle + 1.0, "{idle} then {open}");

    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now_open = value(&scrape(admin).await, "authgate_open_connections");
        if now_open <= idle {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gauge did not come down after the close: {now_open}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(setup.upstream.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_and_invalid_requests_have_their_own_labels() {
    let setup = Setup::new(Algorithm::HS256).await;
    // No catch-all route.
    let config = format!(
        "{}\n[[route]]\npath = \"/public\"\nupstream = \"app\"\nauth = \"public\"\n",
        setup.head()
    );
    let gw = setup.start_with(&config).await;
    let admin = gw.admin.expect("admin listener");
    let client = setup.http1_client();
    let before = scrape(admin).await;

    let resp = client.get(gw.url("/nothing")).send().await.expect("send");
    let (status, content_type, body) = json_of(resp).await;
    assert_eq!((status, content_type.as_str()), (404, "application/json"));
    assert_eq!(body["error"], "not_found");

    // The gateway's metrics are not on the public port.
    let resp = client.get(gw.url("/metrics")).send().await.expect("send");
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json",
        "not the exposition format"
    );
    let text = resp.text().await.expect("body");
    assert!(!text.contains("authgate_"), "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["error"], "not_found");

    // An ambiguous path, sent byte for byte: 400 before routing.
    let (status, text) = common::raw_get(gw.addr, &setup.pki.ca_pem, "/a%2fb", "").await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(raw_json(&text)["error"], "invalid_path");

    let after = scrape(admin).await;
    assert_eq!(
        delta(&before, &after, &requests_key("none", "GET", 404)),
        2.0,
        "/nothing and /metrics: {after:#?}"
    );
    assert_eq!(
        delta(&before, &after, &requests_key("invalid", "GET", 400)),
        1.0,
        "{after:#?}"
    );
    assert_eq!(
        delta(
            &before,
            &after,
            r#"authgate_request_duration_seconds_count{route="none"}"#
        ),
        2.0
    );
    // No label carries what the client sent.
    assert!(
        !after
            .keys()
            .any(|k| k.contains("/nothing") || k.contains("%2f") || k.contains("/a")),
        "{after:#?}"
    );
    assert!(setup.upstream.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_the_public_port_is_an_ordinary_forwarded_path() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start().await; // with the catch-all route `/`
    let client = setup.http1_client();

    // Without a token the catch-all route refuses it like any path.
    let resp = client.get(gw.url("/metrics")).send().await.expect("send");
    assert_eq!(resp.status(), 401);
    assert!(setup.upstream.received().is_empty());

    let resp = client
        .get(gw.url("/metrics"))
        .bearer_auth(setup.token("alice", &[]))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    assert!(!text.contains("authgate_"), "the gateway's metrics: {text}");
    assert!(!text.contains("# EOF"), "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).expect("the upstream's JSON");
    assert_eq!(body["path"], "/metrics");
    assert_eq!(body["user"], "alice");
    let got = setup.upstream.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path_and_query, "/metrics");
    assert_eq!(got[0].method, "GET");
}
