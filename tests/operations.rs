//! Operations through the real gateway: Prometheus metrics on the admin listener (and
//! never on the public one), the limits and timeouts that protect the listener (slow
//! heads, large heads, large and stalled bodies, request smuggling, the connection cap),
//! and the one retry of a bodiless idempotent request.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use authgate::jwt::Algorithm;
use common::{Gateway, Setup};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The admin listener's `/metrics`, parsed: `name{labels}` (exactly as printed) → value.
async fn metrics(admin: SocketAddr) -> HashMap<String, f64> {
    let resp = reqwest::Client::new()
        .get(format!("http://{admin}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200, "/metrics on the admin listener");
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/openmetrics-text")
            || content_type.starts_with("text/plain"),
        "{content_type}"
    );
    let text = resp.text().await.expect("metrics text");
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    parse_metrics(&text)
}

fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A sample's value; an absent series counts as 0.
fn value(metrics: &HashMap<String, f64>, key: &str) -> f64 {
    metrics.get(key).copied().unwrap_or(0.0)
}

/// How much a series moved between two scrapes.
fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    value(after, key) - value(before, key)
}

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

/// `[server]` settings added to the standard config (the `[server]` table comes right
/// before `[admin]`).
fn with_server_settings(config: &str, lines: &str) -> String {
    config.replace("[admin]", &format!("{lines}\n\n[admin]"))
}

async fn json_of(resp: reqwest::Response) -> (u16, String, serde_json::Value) {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    let body = resp.json().await.expect("a JSON body");
    (status, content_type, body)
}

/// Reads one HTTP/1.1 message (head, and a body framed by `Content-Length` or chunked)
/// from `stream`; `None` on EOF or error before a whole message. Bounded by the caller.
async fn read_message<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let content_length = head.lines().find_map(|line| {
        line.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = head
        .lines()
        .any(|line| line.starts_with("transfer-encoding:") && line.contains("chunked"));
    loop {
        let body = &buf[head_end..];
        let complete = if chunked {
            find(body, b"0\r\n\r\n").is_some()
        } else {
            body.len() >= content_length.unwrap_or(0)
        };
        if complete {
            return Some(buf);
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn status_of(text: &str) -> u16 {
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The JSON body of a raw response text.
fn raw_json(text: &str) -> serde_json::Value {
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("JSON body: {e}\n{text}"))
}

/// Sends `raw` over a fresh TLS connection while reading the answer (a gateway that
/// answers early and closes must not turn into a failed write), until EOF or 10 s.
async fn exchange(addr: SocketAddr, ca_pem: &str, raw: Vec<u8>) -> (u16, String) {
    let stream = common::tls_connect(addr, ca_pem, &[b"http/1.1"]).await;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&raw).await;
        let _ = writer.flush().await;
        // Keep the write half open until the reader is done.
        writer
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut out)).await;
    write.abort();
    let text = String::from_utf8_lossy(&out).into_owned();
    (status_of(&text), text)
}

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

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
    let before = metrics(admin).await;

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

    let after = metrics(admin).await;
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
        let before = metrics(admin).await;
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
        let after = metrics(admin).await;
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
    let before = metrics(admin).await;

    // Refused: 502.
    let resp = client.get(gw.url("/down/x")).send().await.expect("send");
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "bad_gateway");
    let after_refused = metrics(admin).await;
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
    let after = metrics(admin).await;
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
    let idle = value(&metrics(admin).await, "authgate_open_connections");

    let mut stream = common::tls_connect(gw.addr, &setup.pki.ca_pem, &[b"http/1.1"]).await;
    for i in 0..2 {
        stream
            .write_all(format!("GET /public/ka{i} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let response = tokio::time::timeout(Duration::from_secs(5), read_message(&mut stream))
            .await
            .expect("a response in time")
            .expect("a whole response");
        let text = String::from_utf8_lossy(&response);
        assert_eq!(status_of(&text), 200, "{text}");
    }
    let open = value(&metrics(admin).await, "authgate_open_connections");
    assert!(open >= 1.0, "open connections while one is open: {open}");
    assert!(open >= idle + 1.0, "{idle} then {open}");

    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now_open = value(&metrics(admin).await, "authgate_open_connections");
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
    let before = metrics(admin).await;

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

    let after = metrics(admin).await;
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

// ---------------------------------------------------------------------------------------
// Limits and timeouts
// ---------------------------------------------------------------------------------------

/// How long until the gateway closes `stream`, while `drip` sends one byte every 300 ms;
/// `None` if it was still open after `limit`. Also returns whatever the gateway sent.
async fn time_until_closed<S>(
    stream: &mut S,
    drip: &[u8],
    limit: Duration,
) -> (Option<Duration>, Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let mut bytes = drip.iter();
    while started.elapsed() < limit {
        if let Some(byte) = bytes.next()
            && (stream.write_all(&[*byte]).await.is_err() || stream.flush().await.is_err())
        {
            return (Some(started.elapsed()), received);
        }
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => return (Some(started.elapsed()), received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
    (None, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_request_head_is_cut_off_at_header_read_timeout() {
    let setup = Setup::new(Algorithm::HS256).await;
    let config = with_server_settings(&setup.standard_config(), "header_read_timeout = \"1s\"");
    let gw = setup.start_with(&config).await;
    let mut stream = common::tls_connect(gw.addr, &setup.pki.ca_pem, &[b"http/1.1"]).await;
    // 70 bytes at 300 ms each would take 21 s to complete.
    let head =
        b"GET /public/slowloris HTTP/1.1\r\nHost: localhost\r\nX-Padding: aaaaaaaaaa\r\n\r\n";
    let (closed, received) = time_until_closed(&mut stream, head, Duration::from_secs(5)).await;
    let closed = closed.expect("the gateway closed the slow connection within 5 s");
    assert!(
        closed >= Duration::from_millis(900) && closed <= Duration::from_secs(3),
        "closed after {closed:?}"
    );
    let text = String::from_utf8_lossy(&received);
    assert!(!text.contains("200 OK"), "{text}");
    assert!(setup.upstream.received().is_empty());

    // The listener still serves others.
    let (status, _) = common::raw_get(gw.addr, &setup.pki.ca_pem, "/public/ok", "").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_at_header_read_timeout() {
    let setup = Setup::new(Algorithm::HS256).await;
    let config = with_server_settings(&setup.standard_config(), "header_read_timeout = \"1s\"");
    let gw = setup.start_with(&config).await;
    let mut stream = common::tls_connect(gw.addr, &setup.pki.ca_pem, &[b"http/1.1"]).await;
    stream
        .write_all(b"GET /public/once HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let response = tokio::time::timeout(Duration::from_secs(5), read_message(&mut stream))
        .await
        .expect("in time")
        .expect("a response");
    assert_eq!(status_of(&String::from_utf8_lossy(&response)), 200);
    // Then nothing: the wait for the next request head is bounded too.
    let (closed, received) = time_until_closed(&mut stream, b"", Duration::from_secs(4)).await;
    let closed = closed.expect("an idle keep-alive connection is closed at header_read_timeout");
    assert!(
        closed >= Duration::from_millis(900) && closed <= Duration::from_secs(3),
        "closed after {closed:?}"
    );
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );
}

/// Opens a TLS connection, sends `prefix` (possibly nothing), then stays silent; returns
/// how long the gateway took to close it, or `None` if it was still open after 3.5 s.
async fn silent_client(addr: SocketAddr, ca_pem: &str, prefix: &[u8]) -> Option<Duration> {
    let mut stream = common::tls_connect(addr, ca_pem, &[b"http/1.1"]).await;
    stream.write_all(prefix).await.expect("write");
    stream.flush().await.expect("flush");
    let (closed, _) = time_until_closed(&mut stream, b"", Duration::from_millis(3500)).await;
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_after_the_handshake_is_cut_off_at_header_read_timeout() {
    let setup = Setup::new(Algorithm::HS256).await;
    let config = with_server_settings(&setup.standard_config(), "header_read_timeout = \"1s\"");
    let gw = setup.start_with(&config).await;
    let ca = &setup.pki.ca_pem;
    // Not one byte of a request, or the start of the HTTP/2 preface: in neither case has a
    // request head arrived within header_read_timeout.
    let (nothing, preface) = tokio::join!(
        silent_client(gw.addr, ca, b""),
        silent_client(gw.addr, ca, b"PRI * HTTP/2.0\r\n"),
    );
    let in_time = |closed: Option<Duration>| {
        closed.is_some_and(|c| c >= Duration::from_millis(900) && c <= Duration::from_secs(3))
    };
    // An HTTP/2 preface on a connection that chose HTTP/1.1 by ALPN is not a request
    // head at all: refused at once, which is sooner still.
    let refused_at_once =
        |closed: Option<Duration>| closed.is_some_and(|c| c <= Duration::from_secs(3));
    assert!(
        in_time(nothing) && refused_at_once(preface),
        "closed at header_read_timeout (1 s)? silent after the handshake: {nothing:?}; \
         after a partial HTTP/2 preface: {preface:?} (None = still open after 3.5 s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_hold_the_connection_cap() {
    let setup = Setup::new(Algorithm::HS256).await;
    let config = with_server_settings(
        &setup.standard_config(),
        "header_read_timeout = \"1s\"\nmax_connections = 1",
    );
    let gw = setup.start_with(&config).await;
    // One client takes the only slot and sends nothing.
    let silent = common::tls_connect(gw.addr, &setup.pki.ca_pem, &[b"http/1.1"]).await;
    let addr = gw.addr;
    let ca = setup.pki.ca_pem.clone();
    let mut next =
        tokio::spawn(async move { common::raw_get(addr, &ca, "/public/next", "").await });
    // It must lose its slot at header_read_timeout, and the next client be served.
    let served = tokio::time::timeout(Duration::from_secs(4), &mut next).await;
    next.abort();
    drop(silent);
    let (status, text) = served
        .expect("the next connection is served once the silent one times out (1 s)")
        .expect("task");
    assert_eq!(status, 200, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_too_many_header_lines_are_431() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start().await;
    let ca = &setup.pki.ca_pem;

    // Within the limits: served.
    let value_20k = "a".repeat(20 * 1024);
    let (status, text) = exchange(
        gw.addr,
        ca,
        format!(
            "GET /public/ok HTTP/1.1\r\nHost: localhost\r\nX-Big: {value_20k}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "a 20 KiB header is within 32 KiB: {text}");
    let many: String = (0..90).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, _) = exchange(
        gw.addr,
        ca,
        format!("GET /public/ok HTTP/1.1\r\nHost: localhost\r\n{many}Connection: close\r\n\r\n")
            .into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "92 header lines are within 100");
    assert_eq!(setup.upstream.received().len(), 2);
    setup.upstream.clear();

    // A 40 KiB header value over the default 32 KiB limit.
    let value_40k = "a".repeat(40 * 1024);
    let (status, text) = exchange(
        gw.addr,
        ca,
        format!(
            "GET /public/big HTTP/1.1\r\nHost: localhost\r\nX-Big: {value_40k}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
    )
    .await;
    assert_eq!(status, 431, "{}", &text[..text.len().min(300)]);

    // 150 header lines over the default 100.
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, text) = exchange(
        gw.addr,
        ca,
        format!("GET /public/many HTTP/1.1\r\nHost: localhost\r\n{many}Connection: close\r\n\r\n")
            .into_bytes(),
    )
    .await;
    assert_eq!(status, 431, "{text}");
    assert!(
        setup.upstream.received().is_empty(),
        "nothing forwarded: {:?}",
        setup.upstream.received()
    );
}

/// The standard config with a 1 KiB server body limit, and a public `/big` route that
/// allows 64 KiB.
fn body_limit_config(setup: &Setup) -> String {
    let config = with_server_settings(&setup.standard_config(), "max_body_bytes = \"1KiB\"");
    format!(
        "{config}\n[[route]]\npath = \"/big\"\nupstream = \"app\"\nauth = \"public\"\nmax_body_bytes = \"64KiB\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_413_and_nothing_is_forwarded() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start_with(&body_limit_config(&setup)).await;
    let client = setup.http1_client();

    // At the limit: forwarded whole.
    let resp = client
        .post(gw.url("/public/exact"))
        .body(vec![b'x'; 1024])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let got = setup.upstream.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body_len, 1024);
    setup.upstream.clear();

    // One byte over, and well over, with Content-Length: 413 before anything is sent.
    for len in [1025, 4096] {
        let resp = client
            .post(gw.url("/public/upload"))
            .body(vec![b'x'; len])
            .send()
            .await
            .expect("send");
        let (status, content_type, body) = json_of(resp).await;
        assert_eq!(status, 413, "{len}: {body}");
        assert_eq!(content_type, "application/json");
        assert_eq!(body["error"], "payload_too_large");
        assert!(
            setup.upstream.received().is_empty(),
            "the upstream received nothing: {:?}",
            setup.upstream.received()
        );
    }
    // The same limit on a protected route, with a valid token.
    let resp = client
        .put(gw.url("/orders/1"))
        .bearer_auth(setup.token("alice", &[]))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 413);
    assert!(setup.upstream.received().is_empty());

    // A route with its own larger limit takes what the server default refuses...
    let resp = client
        .post(gw.url("/big/upload"))
        .body(vec![b'y'; 4096])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let got = setup.upstream.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path_and_query, "/big/upload");
    assert_eq!(got[0].body_len, 4096);
    // ... up to its own limit. (Sent raw: the gateway answers before the body is written,
    // and an HTTP client library may report the early close instead of the answer.)
    let mut raw = format!(
        "POST /big/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        64 * 1024 + 1
    )
    .into_bytes();
    raw.extend_from_slice(&vec![b'y'; 64 * 1024 + 1]);
    let (status, text) = exchange(gw.addr, &setup.pki.ca_pem, raw).await;
    assert_eq!(status, 413, "{text}");
    assert_eq!(raw_json(&text)["error"], "payload_too_large");
    assert_eq!(setup.upstream.received().len(), 1);
}

fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_limit_is_413() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start_with(&body_limit_config(&setup)).await;
    let ca = &setup.pki.ca_pem;
    let request = |path: &str, body: &[u8]| {
        let mut raw = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        raw.extend_from_slice(&chunked(body, 500));
        raw
    };

    // Under the limit: forwarded.
    let (status, text) = exchange(gw.addr, ca, request("/public/small", &[b'a'; 900])).await;
    assert_eq!(status, 200, "{text}");
    let got = setup.upstream.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body_len, 900);
    setup.upstream.clear();

    // Over the limit, with no length declared in advance: 413 once the count passes it.
    let (status, text) = exchange(gw.addr, ca, request("/public/large", &[b'b'; 3000])).await;
    assert_eq!(status, 413, "{text}");
    assert_eq!(raw_json(&text)["error"], "payload_too_large");
    // The upstream may have seen the start of the request, never the whole body.
    for r in setup.upstream.received() {
        assert!(r.body_len <= 1024, "{r:?}");
    }

    // The route with its own limit takes it.
    let (status, text) = exchange(gw.addr, ca, request("/big/large", &[b'c'; 3000])).await;
    assert_eq!(status, 200, "{text}");
    let got = setup.upstream.received();
    let big: Vec<_> = got
        .iter()
        .filter(|r| r.path_and_query == "/big/large")
        .collect();
    assert_eq!(big.len(), 1);
    assert_eq!(big[0].body_len, 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_408_after_body_idle_timeout() {
    let setup = Setup::new(Algorithm::HS256).await;
    let config = with_server_settings(&setup.standard_config(), "body_idle_timeout = \"1s\"");
    let gw = setup.start_with(&config).await;
    let mut stream = common::tls_connect(gw.addr, &setup.pki.ca_pem, &[b"http/1.1"]).await;
    stream
        .write_all(
            b"POST /public/stall HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\nConnection: close\r\n\r\n12345",
        )
        .await
        .expect("write");
    stream.flush().await.expect("flush");
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(5), read_message(&mut stream))
        .await
        .expect("an answer within 5 s")
        .expect("a whole response");
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&response);
    assert_eq!(status_of(&text), 408, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{text}"
    );
    let body = raw_json(&text);
    assert_eq!(body["error"], "request_timeout");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed <= Duration::from_secs(3),
        "answered after {elapsed:?}"
    );
    // The upstream never got the whole body.
    for r in setup.upstream.received() {
        assert!(r.body_len < 10, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_different_content_lengths_are_400_and_not_forwarded() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start().await;
    let (status, text) = exchange(
        gw.addr,
        &setup.pki.ca_pem,
        b"POST /public/cl HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\n123456"
            .to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    // Two equal ones are one length.
    let (status, text) = exchange(
        gw.addr,
        &setup.pki.ca_pem,
        b"POST /public/cl-same HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\n12345"
            .to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let got = setup.upstream.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path_and_query, "/public/cl-same");
    assert_eq!(got[0].body_len, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_400_and_nothing_is_forwarded() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start().await;
    let payload = b"hello chunked world"; // 19 bytes
    for framing in [
        "POST /public/te0 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /public/te1 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        // A Content-Length hyper ignores (it has seen Transfer-Encoding) is still a conflict.
        "POST /public/te2 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n",
        // Bare line feeds, which hyper reads as well.
        "POST /public/te3 HTTP/1.1\nHost: localhost\nContent-Length: 5\nTransfer-Encoding: chunked\n\n",
    ] {
        setup.upstream.clear();
        let mut stream = common::tls_connect(gw.addr, &setup.pki.ca_pem, &[b"http/1.1"]).await;
        // A plain request first on the same connection: the scanner follows the framing,
        // and flags the second request, not the first.
        let mut raw = b"GET /public/first HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
        // No `Connection: close`: the gateway must close by itself after refusing.
        raw.extend_from_slice(framing.as_bytes());
        raw.extend_from_slice(&chunked(payload, 7));
        stream.write_all(&raw).await.expect("write");
        stream.flush().await.expect("flush");
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(
            read.is_ok(),
            "{framing:?}: the connection is closed after the refusal:\n{text}"
        );
        let statuses: Vec<u16> = text
            .match_indices("HTTP/1.1 ")
            .filter_map(|(at, _)| text[at + 9..at + 12].parse().ok())
            .collect();
        assert_eq!(statuses, vec![200, 400], "{framing:?}: {text}");
        assert!(
            text.contains("both Content-Length and Transfer-Encoding"),
            "{framing:?}: {text}"
        );
        let got = setup.upstream.received();
        assert_eq!(
            got.len(),
            1,
            "{framing:?}: only the first request is forwarded: {got:?}"
        );
        assert_eq!(got[0].path_and_query, "/public/first");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_max_connections_takes_the_slot_of_an_idle_one() {
    let setup = Setup::new(Algorithm::HS256).await;
    let config = with_server_settings(&setup.standard_config(), "max_connections = 2");
    let gw = setup.start_with(&config).await;
    let admin = gw.admin.expect("admin listener");
    let ca = setup.pki.ca_pem.clone();

    // Two connections, served once each, then idle (keep-alive).
    let mut first = common::tls_connect(gw.addr, &ca, &[b"http/1.1"]).await;
    let mut second = common::tls_connect(gw.addr, &ca, &[b"http/1.1"]).await;
    for (i, stream) in [&mut first, &mut second].into_iter().enumerate() {
        stream
            .write_all(
                format!("GET /public/held{i} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
            )
            .await
            .expect("write");
        let response = tokio::time::timeout(Duration::from_secs(5), read_message(stream))
            .await
            .expect("in time")
            .expect("a response");
        assert_eq!(status_of(&String::from_utf8_lossy(&response)), 200);
    }
    assert_eq!(
        value(&metrics(admin).await, "authgate_open_connections"),
        2.0
    );

    // A third: the connection idle the longest (the first) closes to make room for it.
    let (status, text) = tokio::time::timeout(
        Duration::from_secs(5),
        common::raw_get(gw.addr, &ca, "/public/third", ""),
    )
    .await
    .expect("the third connection is served at once, in an idle one's slot");
    assert_eq!(status, 200, "{text}");
    let got = setup.upstream.received();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].path_and_query, "/public/third");
    let mut byte = [0u8; 1];
    let first_read = tokio::time::timeout(Duration::from_secs(2), first.read(&mut byte)).await;
    assert!(
        matches!(first_read, Ok(Ok(0) | Err(_))),
        "the first connection was closed: {first_read:?}"
    );
    // The second still works.
    second
        .write_all(b"GET /public/again HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let response = tokio::time::timeout(Duration::from_secs(5), read_message(&mut second))
        .await
        .expect("in time")
        .expect("a response");
    assert_eq!(status_of(&String::from_utf8_lossy(&response)), 200);
}

// ---------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------

/// A raw upstream: on its first connection it reads one request and closes without an
/// answer; on every later one it answers 200 `retried-ok`. Counts the requests it read.
struct FlakyUpstream {
    url: String,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FlakyUpstream {
    async fn start() -> FlakyUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let task = tokio::spawn(async move {
            let mut first = true;
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let close_unanswered = std::mem::replace(&mut first, false);
                let count = count.clone();
                tokio::spawn(async move {
                    let request =
                        tokio::time::timeout(Duration::from_secs(5), read_message(&mut stream))
                            .await;
                    let Ok(Some(_)) = request else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    if close_unanswered {
                        drop(stream);
                        return;
                    }
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nretried-ok",
                        )
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        FlakyUpstream {
            url,
            requests,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FlakyUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An upstream that answers one request per connection, as keep-alive (no `Connection:
/// close`), then closes the connection: the gateway's pooled connection dies under it.
struct OneShotUpstream {
    url: String,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl OneShotUpstream {
    async fn start() -> OneShotUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let count = count.clone();
                tokio::spawn(async move {
                    let request =
                        tokio::time::timeout(Duration::from_secs(5), read_message(&mut stream))
                            .await;
                    let Ok(Some(_)) = request else {
                        return;
                    };
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    let body = format!("answer {n}");
                    let _ = stream
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        OneShotUpstream {
            url,
            requests,
            task,
        }
    }
}

impl Drop for OneShotUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_may_have_reached_the_upstream_is_never_sent_twice() {
    let setup = Setup::new(Algorithm::HS256).await;
    let for_get = FlakyUpstream::start().await;
    let for_post = FlakyUpstream::start().await;
    let config = format!(
        r#"{head}
[[upstream]]
name = "flaky_get"
url = "{get}"
timeout = "3s"

[[upstream]]
name = "flaky_post"
url = "{post}"
timeout = "3s"

[[route]]
path = "/get"
upstream = "flaky_get"
auth = "public"

[[route]]
path = "/post"
upstream = "flaky_post"
auth = "public"
"#,
        head = setup.head(),
        get = for_get.url,
        post = for_post.url,
    );
    let gw: Gateway = setup.start_with(&config).await;
    let admin = gw.admin.expect("admin listener");
    let client = setup.http1_client();
    let before = metrics(admin).await;

    // Both upstreams read the request, then close without answering: it may have been
    // acted on, so neither the GET nor the POST is sent again.
    let resp = client.get(gw.url("/get/x")).send().await.expect("send");
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 502, "{body}");
    let resp = client
        .post(gw.url("/post/x"))
        .body("a body that may not be sent twice")
        .send()
        .await
        .expect("send");
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "bad_gateway");
    assert_eq!(
        body["error_description"],
        "the upstream closed the connection without answering"
    );
    // Give a (wrong) retry the time to arrive before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(for_get.requests(), 1, "the GET was sent once");
    assert_eq!(for_post.requests(), 1, "the POST was sent once");

    let after = metrics(admin).await;
    for upstream in ["flaky_get", "flaky_post"] {
        assert_eq!(
            delta(
                &before,
                &after,
                &format!(r#"authgate_upstream_errors_total{{upstream="{upstream}",kind="reset"}}"#)
            ),
            1.0,
            "{after:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_closed_by_the_upstream_costs_no_request() {
    let setup = Setup::new(Algorithm::HS256).await;
    let upstream = OneShotUpstream::start().await;
    let config = format!(
        "{}\n[[upstream]]\nname = \"oneshot\"\nurl = \"{}\"\n\n[[route]]\npath = \"/\"\nupstream = \"oneshot\"\nauth = \"public\"\n",
        setup.head(),
        upstream.url
    );
    let gw: Gateway = setup.start_with(&config).await;
    let client = setup.http1_client();
    // Each answer comes on a connection the upstream then closes: the next request finds
    // its pooled connection dead, and goes on a new one without the client noticing.
    for n in 1..=5 {
        let resp = client.get(gw.url("/x")).send().await.expect("send");
        assert_eq!(resp.status(), 200, "request {n}");
        assert_eq!(resp.text().await.expect("body"), format!("answer {n}"));
        if n % 2 == 0 {
            // Now and then give the close the time to be seen before the next request.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 5);
}
