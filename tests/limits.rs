//! The limits and timeouts that protect the gateway's listener, through the real gateway:
//! slow and silent request heads (`header_read_timeout`), heads too large or with too many
//! lines (431), bodies over the limit (413) or stalled (408), request smuggling (conflicting
//! framing is 400; the smuggling corpus's most dangerous shapes reach the upstream neither
//! hidden nor twice), and the connection cap (`max_connections`).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use authgate::jwt::Algorithm;
use common::metrics::{scrape, value};
use common::{Setup, json_of, raw_json, raw_status, read_message};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `[server]` settings added to the standard config (the `[server]` table comes right
/// before `[admin]`).
fn with_server_settings(config: &str, lines: &str) -> String {
    config.replace("[admin]", &format!("{lines}\n\n[admin]"))
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
    (raw_status(&text), text)
}

/// The status of every response in a raw exchange, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

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
    let (status, text) = common::keep_alive_get(&mut stream, "/public/once").await;
    assert_eq!(status, 200, "{text}");
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
    assert_eq!(raw_status(&text), 408, "{text}");
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
        assert_eq!(statuses(&text), vec![200, 400], "{framing:?}: {text}");
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
        let (status, text) = common::keep_alive_get(stream, &format!("/public/held{i}")).await;
        assert_eq!(status, 200, "{text}");
        // Apart in time (the registry keeps milliseconds), so the first is idle longest.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        value(&scrape(admin).await, "authgate_open_connections"),
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
    let (status, text) = common::keep_alive_get(&mut second, "/public/again").await;
    assert_eq!(status, 200, "{text}");
}

/// The most dangerous shapes of the smuggling corpus (tests/framing_differential.rs), each
/// on its own connection through the real gateway: the upstream sees each request at most
/// once, exactly the ones expected, and never one hidden in another's body; the client gets
/// the answers listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_never_reach_the_upstream_hidden_or_twice() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start().await;
    const SMUGGLED: &str = "GET /public/smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let conflicting = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
        )
    };
    let shapes: Vec<(&str, String, &[u16], &[&str])> = vec![
        (
            "CL.TE",
            format!(
                "POST /public/cl-te HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}",
                5 + SMUGGLED.len()
            ),
            &[400],
            &[],
        ),
        (
            "TE.CL",
            format!(
                "POST /public/te-cl HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
                SMUGGLED.len()
            ),
            &[400],
            &[],
        ),
        (
            "TE.TE, the last one not chunked",
            format!(
                "POST /public/te-te HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            &[400],
            &[],
        ),
        (
            "a list of equal lengths, then CL and TE",
            format!(
                "POST /public/list HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5, 5\r\n\r\nhello{}",
                conflicting("/public/after-list")
            ),
            &[400],
            &[],
        ),
        (
            "a WebSocket upgrade the upstream answers 200, then CL and TE",
            format!(
                "GET /public/ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n{}",
                conflicting("/public/after-ws")
            ),
            &[200, 400],
            &["/public/ws"],
        ),
        (
            "a bare LF after the last chunk, swallowing a request as trailers",
            format!(
                "POST /public/swallow HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\n{SMUGGLED}GET /public/last HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            ),
            &[200, 200],
            &["/public/swallow", "/public/last"],
        ),
        (
            "Expect: 100-continue refused 401 unread, the body spelling requests",
            format!(
                "POST /orders/1 HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
            &[401],
            &[],
        ),
    ];
    let sent = shapes
        .iter()
        .map(|(_, wire, _, _)| exchange(gw.addr, &setup.pki.ca_pem, wire.clone().into_bytes()));
    let answers = futures_util::future::join_all(sent).await;
    for ((name, _, expected, _), (_, text)) in shapes.iter().zip(&answers) {
        assert_eq!(statuses(text), *expected, "{name}: {text}");
    }
    let mut received = setup.upstream.paths();
    received.sort();
    let mut expected: Vec<&str> = shapes
        .iter()
        .flat_map(|(_, _, _, paths)| *paths)
        .copied()
        .collect();
    expected.sort();
    assert_eq!(received, expected);
}
