//! The process lifecycle of the real `authgate` binary, as README "Operations" describes
//! it: SIGHUP reloads (in-flight requests finish on the old config, new ones see the new
//! one; a broken file or a restart-only change is refused, logged with its line and
//! counted), SIGTERM drains (readiness 503 at once, the listener closed, in-flight
//! requests finish within `server.drain_timeout`, exit 0; a second signal exits at once),
//! and the JSON access log (exactly one `authgate::access` line per request, with the
//! request id the client got back).
//!
//! Each test owns a [`Site`] from the harness (`common::process`): plain HTTP, an admin
//! listener, an HS256 secret, and a recording upstream whose `/slow…` paths answer after
//! a chosen delay. The child's output goes to a file (not a terminal, so the logs are
//! JSON). The [`Gate`] kills its child when dropped, assertion failures included; every
//! wait is bounded.

mod common;

use std::time::{Duration, Instant};

use authgate::jwt::Algorithm;
use common::process::{Gate, Site};
use common::{TestKey, Upstream, access_claims, free_port, metrics};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long a reload may take to show (the brief: "poll up to ~2 s").
const RELOAD_TIMEOUT: Duration = Duration::from_secs(2);

/// A site whose upstream answers `/slow…` after `slow_delay`, draining for `drain`.
async fn site(slow_delay: Duration, drain: &str) -> Site {
    Site::new()
        .upstream(Upstream::start_with_delay(slow_delay).await)
        .drain_timeout(drain)
}

/// `authgate_config_reloads_total{result}`, 0 when absent.
async fn reloads(site: &Site, result: &str) -> f64 {
    let text = site.metrics().await;
    metrics::value(
        &metrics::parse(&text),
        &format!("authgate_config_reloads_total{{result=\"{result}\"}}"),
    )
}

/// Polls (bounded) until `authgate_config_reloads_total{result}` reaches `want`.
async fn wait_reloads(site: &Site, result: &str, want: f64, gate: &Gate) {
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        let got = reloads(site, result).await;
        if got >= want {
            assert_eq!(
                got, want,
                "authgate_config_reloads_total{{result=\"{result}\"}}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "authgate_config_reloads_total{{result=\"{result}\"}} stayed at {got}, \
             not {want}, for {RELOAD_TIMEOUT:?}; metrics:\n{}\nlog:\n{}",
            site.metrics().await,
            gate.log_text()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls (bounded) until the upstream has received `n` requests whose path starts
/// with `prefix`: they are then in flight in the gateway.
async fn wait_upstream(site: &Site, prefix: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = site
            .recording()
            .received()
            .iter()
            .filter(|r| r.path_and_query.starts_with(prefix))
            .count();
        if got >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the upstream got {got} of {n} requests to {prefix}… within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every line of the gateway's stderr, each parsed as JSON (panics on a line that is not).
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("stderr line {} is not JSON ({e}): {line:?}", n + 1))
        })
        .collect()
}

fn message(line: &Value) -> &str {
    line["message"].as_str().unwrap_or("")
}

/// The 1-based number of the first line of `text` equal to `wanted`.
fn line_number(text: &str, wanted: &str) -> usize {
    text.lines()
        .position(|l| l == wanted)
        .unwrap_or_else(|| panic!("no line {wanted:?} in\n{text}"))
        + 1
}

/// The outcome of one attempt to reach the public port with a new connection.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// The TCP connect failed (refused).
    Refused,
    /// Connected, but closed or reset without an HTTP answer.
    ClosedUnanswered,
    /// An HTTP response came back: the gateway served a new connection.
    Served(String),
}

async fn attempt_new_connection(port: u16) -> Attempt {
    let connect = tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await;
    let Ok(Ok(mut stream)) = connect else {
        return Attempt::Refused;
    };
    let request = "GET /a/new HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return Attempt::ClosedUnanswered;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(500), stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    if text.starts_with("HTTP/") {
        Attempt::Served(text.lines().next().unwrap_or_default().to_owned())
    } else {
        Attempt::ClosedUnanswered
    }
}

async fn status_of(request: reqwest::RequestBuilder) -> StatusCode {
    request
        .send()
        .await
        .expect("request to the gateway")
        .status()
}

// ------------------------------------------------------------------------------------
// Reload
// ------------------------------------------------------------------------------------

/// Routes of the first config: `/slow` and `/a` public, `/b` needs a token.
const ROUTES_V1: &str = r#"
[[route]]
path = "/slow"
upstream = "app"
auth = "public"

[[route]]
path = "/a"
upstream = "app"
auth = "public"

[[route]]
path = "/b"
upstream = "app"
"#;

/// Routes of the second config: `/slow` now needs a token, `/b` is now public.
const ROUTES_V2: &str = r#"
[[route]]
path = "/slow"
upstream = "app"

[[route]]
path = "/a"
upstream = "app"
auth = "public"

[[route]]
path = "/b"
upstream = "app"
auth = "public"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_routes_keeps_in_flight_requests_and_refuses_bad_files() {
    let site = site(Duration::from_secs(2), "5s").await;
    let v1 = format!("{}{ROUTES_V1}", site.head());
    site.write_config(&v1);
    let mut gate = site.start("info").await;
    let http = site.client();

    // The first config: /slow and /a public, /b protected.
    assert_eq!(status_of(http.get(site.url("/a/x"))).await, StatusCode::OK);
    assert_eq!(
        status_of(http.get(site.url("/b/x"))).await,
        StatusCode::UNAUTHORIZED
    );
    let token = site.token("alice");
    assert_eq!(
        status_of(http.get(site.url("/b/x")).bearer_auth(&token)).await,
        StatusCode::OK
    );
    assert_eq!(reloads(&site, "ok").await, 0.0);
    assert_eq!(reloads(&site, "error").await, 0.0);

    // A slow request on the public /slow route, in flight at the upstream.
    let slow = tokio::spawn({
        let http = http.clone();
        let url = site.url("/slow/in-flight");
        async move {
            let started = Instant::now();
            let response = http.get(url).send().await;
            (
                response.map(|r| r.status()).map_err(|e| e.to_string()),
                started.elapsed(),
            )
        }
    });
    wait_upstream(&site, "/slow/in-flight", 1).await;

    // The second config, then SIGHUP while the slow request is still in flight.
    let v2 = format!("{}{ROUTES_V2}", site.head());
    site.write_config(&v2);
    gate.signal("HUP");

    // New requests follow the new rules: /b public, /slow protected.
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        let status = status_of(http.get(site.url("/b/x"))).await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED, "GET /b/x during reload");
        assert!(
            Instant::now() < deadline,
            "the reloaded config did not apply within {RELOAD_TIMEOUT:?}; log:\n{}",
            gate.log_text()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        !slow.is_finished(),
        "the slow request finished before the reload applied: the test proves nothing"
    );
    assert_eq!(
        status_of(http.get(site.url("/slow/new"))).await,
        StatusCode::UNAUTHORIZED,
        "a new request to /slow, protected since the reload"
    );
    assert_eq!(
        status_of(http.get(site.url("/a/x"))).await,
        StatusCode::OK,
        "/a is public in both configs"
    );

    // The request in flight finished on the old config (public /slow): 200.
    let (status, took) = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("the slow request finished within 10 s")
        .expect("slow task");
    assert_eq!(
        status,
        Ok(StatusCode::OK),
        "the request in flight during the reload"
    );
    assert!(took >= Duration::from_millis(1900), "it was slow: {took:?}");
    wait_reloads(&site, "ok", 1.0, &gate).await;
    assert_eq!(reloads(&site, "error").await, 0.0);

    // A file with an unknown key: refused, logged with its file and line, counted; the
    // second config keeps serving.
    let mut broken = v2.clone();
    broken = broken.replacen("[server]\n", "[server]\nbogus_key = true\n", 1);
    let bogus_line = line_number(&broken, "bogus_key = true");
    site.write_config(&broken);
    gate.signal("HUP");
    wait_reloads(&site, "error", 1.0, &gate).await;
    assert!(gate.alive(), "the gateway died on a broken config");
    assert_eq!(reloads(&site, "ok").await, 1.0);
    assert_eq!(
        status_of(http.get(site.url("/b/x"))).await,
        StatusCode::OK,
        "the second config still serves (/b public)"
    );
    assert_eq!(
        status_of(http.get(site.url("/slow/x"))).await,
        StatusCode::UNAUTHORIZED,
        "the second config still serves (/slow protected)"
    );
    assert_eq!(site.readyz().await, Some(StatusCode::OK));
    let config_path = site.config_path().display().to_string();
    assert_logged_with_line(&gate, &config_path, bogus_line, "bogus_key");

    // A TOML syntax error: the same.
    let mut broken = v2.clone();
    broken = broken.replacen("[admin]\n", "[admin]\nthis is not toml\n", 1);
    let syntax_line = line_number(&broken, "this is not toml");
    site.write_config(&broken);
    gate.signal("HUP");
    wait_reloads(&site, "error", 2.0, &gate).await;
    assert!(gate.alive(), "the gateway died on a TOML syntax error");
    assert_eq!(
        status_of(http.get(site.url("/b/x"))).await,
        StatusCode::OK,
        "the second config still serves after a syntax error"
    );
    assert_logged_with_line(&gate, &config_path, syntax_line, "(syntax)");

    // A valid file that moves server.listen: needs a restart, so the reload is refused,
    // counted, and the old listener keeps serving (the new port stays closed).
    let other_port = free_port();
    let moved = format!("{}{ROUTES_V1}", site.head_on(other_port));
    site.write_config(&moved);
    gate.signal("HUP");
    wait_reloads(&site, "error", 3.0, &gate).await;
    assert!(gate.alive(), "the gateway died on a listen change");
    assert_eq!(reloads(&site, "ok").await, 1.0);
    assert_eq!(
        status_of(http.get(site.url("/b/x"))).await,
        StatusCode::OK,
        "the old listener serves the second config (/b public, not v1's protected /b)"
    );
    assert_eq!(
        attempt_new_connection(other_port).await,
        Attempt::Refused,
        "the refused listen address was not bound"
    );
    let lines = json_lines(&gate.log_text());
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR"
            && message(l).contains("server.listen")
            && message(l).contains("restart")),
        "no ERROR line says that server.listen needs a restart:\n{}",
        gate.log_text()
    );
    drop(gate);
}

/// An ERROR line of the gateway's log names `file:line` (and `what`) of a refused reload.
fn assert_logged_with_line(gate: &Gate, file: &str, line: usize, what: &str) {
    let log = gate.log_text();
    let lines = json_lines(&log);
    let wanted = format!("{file}:{line}:");
    assert!(
        lines.iter().any(|l| {
            let text = l.to_string();
            l["level"] == "ERROR" && text.contains(&wanted) && text.contains(what)
        }),
        "no ERROR log line names {wanted} and {what:?}:\n{log}"
    );
}

// ------------------------------------------------------------------------------------
// Drain
// ------------------------------------------------------------------------------------

const PUBLIC_ROUTES: &str = r#"
[[route]]
path = "/slow"
upstream = "app"
auth = "public"

[[route]]
path = "/a"
upstream = "app"
auth = "public"
"#;

type SlowResult = (Result<StatusCode, String>, Instant);

/// Starts a GET of `url` in a task; it reports the status (or the error) and when it
/// ended.
fn spawn_get(http: &reqwest::Client, url: String) -> tokio::task::JoinHandle<SlowResult> {
    let http = http.clone();
    tokio::spawn(async move {
        let response = http.get(url).send().await;
        let result = match response {
            Ok(response) => {
                let status = response.status();
                match response.bytes().await {
                    Ok(_) => Ok(status),
                    Err(e) => Err(format!("{status} then body error: {e}")),
                }
            }
            Err(e) => Err(format!("{e:?}")),
        };
        (result, Instant::now())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let site = site(Duration::from_secs(2), "5s").await;
    site.write_config(&format!("{}{PUBLIC_ROUTES}", site.head()));
    let mut gate = site.start("info").await;
    let http = site.client();
    assert_eq!(status_of(http.get(site.url("/a/x"))).await, StatusCode::OK);
    // An idle keep-alive connection (kept in this client's pool) must not hold the drain.
    let pooled = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("pooled client");
    assert_eq!(
        status_of(pooled.get(site.url("/a/keep-alive"))).await,
        StatusCode::OK
    );

    let slow: Vec<_> = (0..3)
        .map(|i| spawn_get(&http, site.url(&format!("/slow/{i}"))))
        .collect();
    wait_upstream(&site, "/slow/", 3).await;

    let term = Instant::now();
    gate.signal("TERM");

    // Readiness goes 503 at once; the admin listener stays up during the drain.
    let deadline = term + Duration::from_millis(1000);
    loop {
        let last = site.readyz().await;
        if last == Some(StatusCode::SERVICE_UNAVAILABLE) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz did not answer 503 within 1 s of SIGTERM (last: {last:?}); log:\n{}",
            gate.log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let unready_after = term.elapsed();
    assert!(
        slow.iter().all(|t| !t.is_finished()),
        "a slow request ended before /readyz went 503"
    );

    // New connections to the public port are refused (none is served).
    let deadline = Instant::now() + Duration::from_millis(1000);
    loop {
        match attempt_new_connection(site.port).await {
            Attempt::Refused => break,
            Attempt::Served(head) => panic!(
                "a new connection after SIGTERM (and after /readyz said 503) was served: {head}"
            ),
            Attempt::ClosedUnanswered => {}
        }
        assert!(
            Instant::now() < deadline,
            "new connections were still accepted 1 s after SIGTERM; log:\n{}",
            gate.log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        slow.iter().all(|t| !t.is_finished()),
        "a slow request ended before the listener was seen closed: the test proves nothing"
    );
    assert_eq!(
        site.readyz().await,
        Some(StatusCode::SERVICE_UNAVAILABLE),
        "the admin listener still answers during the drain"
    );
    assert!(
        gate.alive(),
        "the gateway exited before its requests finished"
    );

    // All three in-flight requests complete with 200.
    let mut last_done = term;
    for (i, task) in slow.into_iter().enumerate() {
        let (result, done) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap_or_else(|_| panic!("slow request {i} did not end within 10 s"))
            .expect("slow task");
        assert_eq!(
            result,
            Ok(StatusCode::OK),
            "slow request {i}, in flight at SIGTERM; log:\n{}",
            gate.log_text()
        );
        last_done = last_done.max(done);
    }

    // Then the process exits 0, soon after the last one and well before the 5 s grace.
    let status = gate
        .wait_exit(Duration::from_secs(8))
        .await
        .unwrap_or_else(|| panic!("no exit within 8 s of SIGTERM; log:\n{}", gate.log_text()));
    let exited = Instant::now();
    assert!(
        status.success(),
        "exit status {status} after a graceful drain; log:\n{}",
        gate.log_text()
    );
    let total = exited.duration_since(term);
    let after_last = exited.saturating_duration_since(last_done);
    assert!(
        total < Duration::from_millis(4000),
        "the exit came {total:?} after SIGTERM: the drain waited for its timeout \
         instead of ending with the last request (unready after {unready_after:?})"
    );
    assert!(
        after_last < Duration::from_millis(1000),
        "the exit came {after_last:?} after the last in-flight request ended"
    );
    drop(pooled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_timeout_cuts_a_request_that_takes_too_long() {
    let site = site(Duration::from_secs(10), "1s").await;
    site.write_config(&format!("{}{PUBLIC_ROUTES}", site.head()));
    let mut gate = site.start("info").await;
    let http = site.client();

    let slow = spawn_get(&http, site.url("/slow/ten-seconds"));
    wait_upstream(&site, "/slow/ten-seconds", 1).await;
    let term = Instant::now();
    gate.signal("TERM");

    let status = gate
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| {
            panic!(
                "no exit within 5 s of SIGTERM with drain_timeout = 1s; log:\n{}",
                gate.log_text()
            )
        });
    let took = term.elapsed();
    assert!(
        status.success(),
        "exit status {status} after the drain timeout; log:\n{}",
        gate.log_text()
    );
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_millis(3000),
        "exit {took:?} after SIGTERM, expected about drain_timeout (1 s); log:\n{}",
        gate.log_text()
    );

    // The slow request was cut: it did not get its 200.
    let (result, _) = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("the cut request ended within 5 s of the exit")
        .expect("slow task");
    assert_ne!(
        result,
        Ok(StatusCode::OK),
        "a 10 s request finished although the drain was 1 s"
    );
    let lines = json_lines(&gate.log_text());
    assert!(
        lines
            .iter()
            .any(|l| message(l).contains("drain timeout passed")),
        "no log line says that the drain timed out:\n{}",
        gate.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_sigterm_during_the_drain_exits_at_once() {
    let site = site(Duration::from_secs(10), "25s").await;
    site.write_config(&format!("{}{PUBLIC_ROUTES}", site.head()));
    let mut gate = site.start("info").await;
    let http = site.client();

    let slow = spawn_get(&http, site.url("/slow/ten-seconds"));
    wait_upstream(&site, "/slow/ten-seconds", 1).await;
    gate.signal("TERM");
    // The drain has begun when readiness says so.
    let deadline = Instant::now() + Duration::from_secs(1);
    while site.readyz().await != Some(StatusCode::SERVICE_UNAVAILABLE) {
        assert!(
            Instant::now() < deadline,
            "/readyz did not answer 503 within 1 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gate.alive(), "the first SIGTERM must drain, not exit");
    assert!(!slow.is_finished());

    let second = Instant::now();
    gate.signal("TERM");
    let status = gate.wait_exit(Duration::from_secs(3)).await;
    let took = second.elapsed();
    assert!(
        status.is_some(),
        "no exit within 3 s of a second SIGTERM; log:\n{}",
        gate.log_text()
    );
    assert!(
        took <= Duration::from_millis(1000),
        "the second SIGTERM took {took:?} to end the process"
    );
    assert!(
        !slow.is_finished() || slow.await.expect("slow task").0 != Ok(StatusCode::OK),
        "the slow request cannot have completed"
    );
}

// ------------------------------------------------------------------------------------
// Logs
// ------------------------------------------------------------------------------------

/// One request to make: method, URL path as sent, the normalized path the access line
/// should carry (`None`: not normalizable), the expected status, a bearer token.
type Step<'a> = (
    &'static str,
    &'a str,
    Option<&'static str>,
    u16,
    Option<&'a str>,
);

/// One request the client made and what it got back.
#[derive(Debug)]
struct Made {
    method: &'static str,
    /// The normalized path the access line should carry (`None`: not normalizable).
    path: Option<&'static str>,
    status: u16,
    request_id: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_has_exactly_one_json_access_line_with_its_request_id() {
    let site = site(Duration::from_millis(10), "5s").await;
    let routes = r#"
[[route]]
path = "/a"
upstream = "app"
auth = "public"

[[route]]
path = "/b"
upstream = "app"
"#;
    site.write_config(&format!("{}{routes}", site.head()));
    let mut gate = site.start("info").await;
    let http = site.client();
    let token = site.token("alice");
    let foreign = TestKey::generate(Algorithm::HS256).sign(&access_claims("mallory", &[]));

    let plan: Vec<Step<'_>> = vec![
        ("GET", "/a/one", Some("/a/one"), 200, None),
        ("GET", "/a/two?x=1", Some("/a/two"), 200, None),
        ("POST", "/a/post", Some("/a/post"), 200, None),
        ("GET", "/a//%61bc", Some("/a/abc"), 200, None),
        ("GET", "/b/protected", Some("/b/protected"), 401, None),
        (
            "GET",
            "/b/protected",
            Some("/b/protected"),
            401,
            Some(&foreign),
        ),
        (
            "GET",
            "/b/protected",
            Some("/b/protected"),
            200,
            Some(&token),
        ),
        ("GET", "/nowhere", Some("/nowhere"), 404, None),
        ("GET", "/a/x%2Fy", None, 400, None),
    ];
    let mut made = Vec::new();
    for (method, sent, path, status, bearer) in plan {
        let url = site.url(sent);
        let mut request = match method {
            "POST" => http.post(&url).body("hello"),
            _ => http.get(&url),
        };
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        let response = request.send().await.expect("request to the gateway");
        assert_eq!(response.status().as_u16(), status, "{method} {sent}");
        let request_id = response
            .headers()
            .get("x-request-id")
            .unwrap_or_else(|| panic!("{method} {sent}: no x-request-id header"))
            .to_str()
            .expect("ascii request id")
            .to_owned();
        assert_eq!(request_id.len(), 32, "{method} {sent}: {request_id}");
        assert!(
            request_id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{request_id}"
        );
        made.push(Made {
            method,
            path,
            status,
            request_id,
        });
    }
    let mut ids: Vec<_> = made.iter().map(|m| m.request_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), made.len(), "request ids are unique");

    gate.signal("TERM");
    let status = gate
        .wait_exit(Duration::from_secs(8))
        .await
        .expect("exit within 8 s of SIGTERM");
    assert!(status.success(), "exit status {status}");

    let log = gate.log_text();
    let lines = json_lines(&log);
    let start = lines
        .iter()
        .find(|l| message(l) == "authgate serving")
        .unwrap_or_else(|| panic!("the start line is there:\n{log}"));
    // The admin address as an address, not a Rust `Some(..)`.
    let admin = start["admin"].as_str().unwrap_or_default();
    assert!(admin.parse::<std::net::SocketAddr>().is_ok(), "{start}");
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "authgate::access")
        .collect();
    assert_eq!(
        access.len(),
        made.len(),
        "{} requests made, {} authgate::access lines:\n{log}",
        made.len(),
        access.len()
    );
    for line in &access {
        for field in ["request_id", "method", "path", "status", "latency_us"] {
            assert!(
                !line[field].is_null(),
                "access line without {field}: {line}"
            );
        }
        assert!(line["status"].is_u64(), "status is a number: {line}");
        assert!(
            line["latency_us"].is_u64(),
            "latency_us is a number: {line}"
        );
        assert_eq!(line["level"], "INFO", "{line}");
    }
    for m in &made {
        let mine: Vec<&&Value> = access
            .iter()
            .filter(|l| l["request_id"] == m.request_id.as_str())
            .collect();
        assert_eq!(
            mine.len(),
            1,
            "access lines with the request id of {m:?}:\n{log}"
        );
        let line = mine[0];
        assert_eq!(line["method"], m.method, "{m:?}: {line}");
        assert_eq!(line["status"], m.status, "{m:?}: {line}");
        // Only a request that went upstream names its upstream.
        let upstream = if m.status == 200 { "app" } else { "-" };
        assert_eq!(line["upstream"], upstream, "{m:?}: {line}");
        match m.path {
            Some(path) => assert_eq!(line["path"], path, "{m:?}: {line}"),
            // A path that cannot be normalized has no normalized form to log.
            None => assert!(line["path"].is_string(), "{m:?}: {line}"),
        }
    }
    let with_user = access.iter().filter(|l| l["user"] == "alice").count();
    assert_eq!(with_user, 1, "the one authenticated request names its user");
}
