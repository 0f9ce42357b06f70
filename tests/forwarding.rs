//! Forwarding through the real gateway: upstream failures, streaming, WebSocket tunnels,
//! HTTP/2 and idle connections towards upstreams, the built-in echo upstream and the admin
//! listener. (TLS on the public listener is in `tls.rs`.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use authgate::jwt::Algorithm;
use common::{Setup, json_of};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest as _};

const MIB: usize = 1024 * 1024;

fn routes_to(upstream_url: &str, setup: &Setup) -> String {
    format!(
        "{}\n[[upstream]]\nname = \"other\"\nurl = \"{upstream_url}\"\nconnect_timeout = \"1s\"\ntimeout = \"1s\"\n\n[[route]]\npath = \"/other\"\nupstream = \"other\"\n\n[[route]]\npath = \"/\"\nupstream = \"app\"\n",
        setup.head()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_refuses_connections_is_502() {
    let setup = Setup::new(Algorithm::HS256).await;
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let gw = setup.start_with(&routes_to(&url, &setup)).await;
    let resp = setup
        .client()
        .get(gw.url("/other/x"))
        .bearer_auth(setup.token("alice", &[]))
        .send()
        .await
        .expect("send");
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "bad_gateway");
    assert_eq!(
        body["error_description"],
        "the upstream could not be reached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_resets_is_502() {
    let setup = Setup::new(Algorithm::HS256).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    // Reads the request, then closes without a response.
    let resetter = tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            drop(stream);
        }
    });
    let gw = setup.start_with(&routes_to(&url, &setup)).await;
    let resp = setup
        .client()
        .get(gw.url("/other/x"))
        .bearer_auth(setup.token("alice", &[]))
        .send()
        .await
        .expect("send");
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "bad_gateway");
    assert_eq!(
        body["error_description"],
        "the upstream closed the connection without answering"
    );
    resetter.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_504_after_its_timeout() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start().await;
    let started = Instant::now();
    let resp = setup
        .client()
        .get(gw.url("/slow"))
        .bearer_auth(setup.token("alice", &[]))
        .send()
        .await
        .expect("send");
    let elapsed = started.elapsed();
    let (status, _, body) = json_of(resp).await;
    assert_eq!(status, 504);
    assert_eq!(body["error"], "gateway_timeout");
    // The harness's upstream timeout is 2 s and its slow answer takes 3 s.
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_millis(2900),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_mib_body_streams_both_ways_intact() {
    let setup = Setup::new(Algorithm::HS256).await;
    // Above the 1 MiB default body limit.
    let config = setup
        .standard_config()
        .replace("[admin]", "max_body_bytes = \"8MiB\"\n\n[admin]");
    let gw = setup.start_with(&config).await;
    let body: Vec<u8> = (0..5 * MIB).map(|i| (i * 7 % 251) as u8).collect();
    for client in [setup.http1_client(), setup.client()] {
        let resp = client
            .post(gw.url("/echo-body"))
            .bearer_auth(setup.token("alice", &[]))
            .body(body.clone())
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        let got = resp.bytes().await.expect("body");
        assert_eq!(got.len(), body.len());
        assert!(got == body, "the echoed body differs");
    }
    assert_eq!(setup.upstream.received().len(), 2);
}

/// A WebSocket echo upstream that records the identity header of each handshake.
#[allow(
    clippy::result_large_err,
    reason = "the callback signature is tungstenite's"
)]
async fn websocket_upstream() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            let log = log.clone();
            tokio::spawn(async move {
                let callback = |req: &tungstenite::handshake::server::Request, resp| {
                    let user = req
                        .headers()
                        .get("x-auth-user")
                        .map(|v| v.to_str().unwrap_or("").to_owned());
                    log.lock().expect("lock").push(user);
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_are_authenticated_then_tunnelled() {
    let setup = Setup::new(Algorithm::ES256).await;
    let (ws_url, seen) = websocket_upstream().await;
    let config = format!(
        "{}\n[[upstream]]\nname = \"ws\"\nurl = \"{ws_url}\"\n\n[[route]]\npath = \"/ws\"\nupstream = \"ws\"\n",
        setup.head()
    );
    let gw = setup.start_with(&config).await;
    let url = format!("wss://localhost:{}/ws/chat", gw.addr.port());

    // Without a token: refused with 401 before any upstream handshake.
    let tls = common::tls_connect(gw.addr, &setup.pki.ca_pem, &[b"http/1.1"]).await;
    let request = url.as_str().into_client_request().expect("request");
    match tokio_tungstenite::client_async(request, tls).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected a 401 handshake refusal, got {other:?}"),
    }
    assert!(
        seen.lock().expect("lock").is_empty(),
        "the upstream saw no handshake"
    );

    // With a token: the handshake reaches the upstream with the identity, then frames
    // flow both ways.
    let tls = common::tls_connect(gw.addr, &setup.pki.ca_pem, &[b"http/1.1"]).await;
    let mut request = url.as_str().into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", setup.token("carol", &[]))
            .parse()
            .expect("header"),
    );
    request
        .headers_mut()
        .insert("x-auth-user", "mallory".parse().expect("header"));
    let (mut ws, resp) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    for text in ["hello", "world"] {
        ws.send(Message::text(text)).await.expect("send");
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo in time")
            .expect("a frame")
            .expect("no error");
        assert_eq!(echoed.into_text().expect("text").as_str(), text);
    }
    ws.close(None).await.expect("close");
    assert_eq!(
        seen.lock().expect("lock").as_slice(),
        &[Some("carol".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_answers_health_and_readiness_and_nothing_else() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start().await;
    let admin = gw.admin.expect("admin listener");
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{admin}/healthz"))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status(), 200);
    let ready = client
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .expect("send");
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.expect("json")["status"],
        "ready"
    );
    let other = client
        .get(format!("http://{admin}/x"))
        .send()
        .await
        .expect("send");
    assert_eq!(other.status(), 404);
    // /healthz on the public port is an ordinary request: routed, and here it needs a token.
    let public = setup
        .client()
        .get(gw.url("/healthz"))
        .send()
        .await
        .expect("send");
    assert_eq!(public.status(), 401);
    assert!(setup.upstream.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_upstream_shows_what_an_upstream_would_get() {
    let setup = Setup::new(Algorithm::HS256).await;
    let config = format!(
        "{}\n[[upstream]]\nname = \"echo\"\nurl = \"builtin:echo\"\n\n[[route]]\npath = \"/\"\nupstream = \"echo\"\n",
        setup.head()
    );
    let gw = setup.start_with(&config).await;
    let resp = setup
        .client()
        .post(gw.url("/a/./b/../c?q=1&r=%2e"))
        .bearer_auth(setup.token("dave", &["ops", "dev"]))
        .header("X-Auth-User", "mallory")
        .body("12345")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["query"], "q=1&r=%2e");
    assert_eq!(echo["headers"]["x-auth-user"], "dave");
    assert_eq!(echo["headers"]["x-auth-roles"], "ops,dev");
    assert_eq!(echo["body_bytes"], 5);
    assert!(echo["headers"].get("authorization").is_none());
    // reqwest already resolves dot segments; the normalized path is what arrives.
    assert_eq!(echo["path"], "/a/c");
}

/// A keep-alive HTTP/1.1 upstream that never closes an idle connection (as Go's default
/// server), answering every request after `delay`; counts its open connections.
async fn counting_upstream(
    delay: Duration,
) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    let server = tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let open = counter.clone();
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                    // Bodiless GETs only: a head ends the request.
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        head.drain(..end + 4);
                        tokio::time::sleep(delay).await;
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(reply).await.is_err() {
                            break;
                        }
                    }
                }
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (url, open, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_closed_after_idle_timeout_even_under_traffic() {
    let setup = Setup::new(Algorithm::HS256).await;
    let (url, open, server) = counting_upstream(Duration::from_millis(300)).await;
    let config = routes_to(&url, &setup).replace(
        "\ntimeout = \"1s\"\n",
        "\ntimeout = \"1s\"\nidle_timeout = \"400ms\"\n",
    );
    let gw = setup.start_with(&config).await;
    let token = setup.token("alice", &[]);
    let get = || {
        setup
            .http1_client()
            .get(gw.url("/other/x"))
            .bearer_auth(&token)
            .send()
    };

    // A burst: four requests at once need four upstream connections, all pooled after.
    let burst = futures_util::future::join_all((0..4).map(|_| get())).await;
    for resp in burst {
        assert_eq!(resp.expect("send").status(), 200);
    }
    assert_eq!(open.load(Ordering::SeqCst), 4, "the burst's connections");

    // Then one request at a time for well over the idle timeout: each reuses the warmest
    // connection, and the three others, idle all along, are closed.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert_eq!(get().await.expect("send").status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while open.load(Ordering::SeqCst) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        open.load(Ordering::SeqCst),
        1,
        "only the connection in use stays open"
    );
    server.abort();
}

/// What an HTTP/2 upstream saw of one request.
#[derive(Debug, Clone)]
struct SeenH2 {
    version: http::Version,
    authority: Option<String>,
    hosts: Vec<String>,
    path_and_query: String,
    user: Option<String>,
}

/// An https upstream that speaks only HTTP/2 (ALPN h2).
struct H2Upstream {
    url: String,
    /// What each request carried.
    seen: Arc<std::sync::Mutex<Vec<SeenH2>>>,
    /// Connections accepted.
    connections: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

/// Starts an [`H2Upstream`] with the test PKI's server certificate.
async fn h2_upstream(setup: &Setup) -> H2Upstream {
    use hyper::server::conn::http2;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let dir = setup.dir.path();
    let cert = std::fs::read(dir.join("server.crt")).expect("cert");
    let key = std::fs::read(dir.join("server.key")).expect("key");
    let mut tls = (*authgate::tls::server_config(&cert, &key, None).expect("tls")).clone();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().expect("addr").port()
    );
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (record, accepted) = (seen.clone(), connections.clone());
    let server = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.expect("accept");
            accepted.fetch_add(1, Ordering::SeqCst);
            let (acceptor, record) = (acceptor.clone(), record.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let text = |v: &http::HeaderValue| v.to_str().unwrap_or("?").to_owned();
                        record.lock().expect("lock").push(SeenH2 {
                            version: req.version(),
                            authority: req.uri().authority().map(|a| a.to_string()),
                            hosts: req
                                .headers()
                                .get_all(http::header::HOST)
                                .iter()
                                .map(text)
                                .collect(),
                            path_and_query: req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            user: req.headers().get("x-auth-user").map(text),
                        });
                        async {
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"h2 ok")),
                            ))
                        }
                    });
                let _ = http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    H2Upstream {
        url,
        seen,
        connections,
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_offering_http2_gets_one_authority() {
    let setup = Setup::new(Algorithm::HS256).await;
    let H2Upstream {
        url, seen, server, ..
    } = h2_upstream(&setup).await;
    let config = routes_to(&url, &setup).replace(
        &format!("url = \"{url}\"\n"),
        &format!("url = \"{url}\"\nca = \"ca.crt\"\n"),
    );
    let gw = setup.start_with(&config).await;
    let token = setup.token("alice", &[]);
    // Two requests, from an HTTP/1.1 client (Host) and an HTTP/2 one (:authority).
    for client in [setup.http1_client(), setup.client()] {
        let resp = client
            .get(gw.url("/other/x?q=1"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.expect("body"), "h2 ok");
    }
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let client_authority = format!("localhost:{}", gw.addr.port());
    for request in &seen {
        assert_eq!(request.version, http::Version::HTTP_2, "{request:?}");
        assert_eq!(request.path_and_query, "/other/x?q=1", "{request:?}");
        assert_eq!(request.user.as_deref(), Some("alice"), "{request:?}");
        // RFC 9113 §8.3.1: a Host beside :authority must not differ from it. The client's
        // authority is kept, as HTTP/1.1 upstreams get it in Host.
        assert_eq!(
            request.authority.as_deref(),
            Some(&*client_authority),
            "{request:?}"
        );
        assert!(
            request.hosts.iter().all(|h| *h == client_authority),
            "{request:?}"
        );
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_a_cold_http2_upstream_makes_one_connection() {
    let setup = Setup::new(Algorithm::HS256).await;
    let upstream = h2_upstream(&setup).await;
    let url = &upstream.url;
    let config = routes_to(url, &setup).replace(
        &format!("url = \"{url}\"\n"),
        &format!("url = \"{url}\"\nca = \"ca.crt\"\n"),
    );
    let gw = setup.start_with(&config).await;
    let token = setup.token("alice", &[]);
    // Eight client connections at once, before the gateway has any upstream connection.
    let burst = futures_util::future::join_all((0..8).map(|_| {
        setup
            .http1_client()
            .get(gw.url("/other/x"))
            .bearer_auth(&token)
            .send()
    }))
    .await;
    for resp in burst {
        assert_eq!(resp.expect("send").status(), 200);
    }
    assert_eq!(upstream.seen.lock().expect("lock").len(), 8);
    assert_eq!(
        upstream.connections.load(Ordering::SeqCst),
        1,
        "one handshake, shared by the burst"
    );
    upstream.server.abort();
}
