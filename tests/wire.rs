//! What a client can put on the wire, through the real gateway over plain HTTP: idle
//! HTTP/1 and HTTP/2 connections and the connection cap, requests after an upgrade that
//! did not happen, Host and `:authority`, CONNECT, and refusals before the body is read.
//! HTTP/2 frames are written by hand, so a test can stop wherever a client could.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use authgate::jwt::Algorithm;
use common::Setup;
use common::wire::{exchange, plain_config, read_until_closed, statuses};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

// --- HTTP/2 frames, written by hand so a test can stop anywhere a client could ---

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("small frame")
        .to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The preface and an empty SETTINGS frame: an HTTP/2 connection, open and silent.
fn h2_open() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out
}

/// An HPACK block for `GET http://127.0.0.1{path}` (static-table names, literal values).
fn h2_get_block(path: &str) -> Vec<u8> {
    // :method GET, :scheme http (indexed)
    let mut block = vec![0x82, 0x86];
    // :path and :authority, literal without indexing, names from the static table.
    for (index, value) in [(0x04u8, path), (0x01, "127.0.0.1")] {
        block.push(index);
        block.push(u8::try_from(value.len()).expect("short value"));
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// Frame types in `wire` (a server's HTTP/2 output), in order, as (type, stream) pairs.
fn h2_frames(wire: &[u8]) -> Vec<(u8, u32)> {
    let mut out = Vec::new();
    let mut rest = wire;
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let stream = u32::from_be_bytes([rest[5] & 0x7f, rest[6], rest[7], rest[8]]);
        out.push((rest[3], stream));
        rest = &rest[(9 + len).min(rest.len())..];
    }
    out
}

const GOAWAY: u8 = 0x7;
const HEADERS: u8 = 0x1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_at_header_read_timeout() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup
        .start_with(&plain_config(&setup, "header_read_timeout = \"1s\""))
        .await;

    // Preface and SETTINGS, then nothing.
    let mut silent = TcpStream::connect(gw.addr).await.expect("connect");
    silent.write_all(&h2_open()).await.expect("write");
    // HEADERS that never end (no END_HEADERS, no CONTINUATION).
    let mut unfinished = TcpStream::connect(gw.addr).await.expect("connect");
    let mut bytes = h2_open();
    bytes.extend(frame(HEADERS, END_STREAM, 1, &h2_get_block("/public")));
    unfinished.write_all(&bytes).await.expect("write");
    // One whole request, answered, then silence.
    let mut served = TcpStream::connect(gw.addr).await.expect("connect");
    let mut bytes = h2_open();
    bytes.extend(frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &h2_get_block("/public/one"),
    ));
    served.write_all(&bytes).await.expect("write");

    let limit = Duration::from_secs(4);
    let (silent_out, silent_closed) = read_until_closed(&mut silent, limit).await;
    let (_, unfinished_closed) = read_until_closed(&mut unfinished, limit).await;
    let (served_out, served_closed) = read_until_closed(&mut served, limit).await;
    assert!(
        silent_closed.is_some() && unfinished_closed.is_some() && served_closed.is_some(),
        "closed within 4 s at header_read_timeout (1 s)? silent: {silent_closed:?}, \
         unfinished headers: {unfinished_closed:?}, idle after a request: {served_closed:?}"
    );
    assert!(
        h2_frames(&silent_out).contains(&(GOAWAY, 0)),
        "told with GOAWAY: {:?}",
        h2_frames(&silent_out)
    );
    assert!(
        h2_frames(&served_out).contains(&(HEADERS, 1)),
        "the request was answered before the idle close: {:?}",
        h2_frames(&served_out)
    );
    assert_eq!(
        setup.upstream.received().len(),
        1,
        "only the whole request went upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_an_idle_connection_makes_room_for_a_new_client() {
    let setup = Setup::new(Algorithm::HS256).await;
    // Timeouts far beyond the test: only the cap can make room.
    let gw = setup
        .start_with(&plain_config(
            &setup,
            "header_read_timeout = \"60s\"\nmax_connections = 3",
        ))
        .await;
    // One slot busy: a request to /slow… that the upstream answers after its 2 s timeout.
    let addr = gw.addr;
    let token = format!("Authorization: Bearer {}\r\n", setup.token("alice", &[]));
    let slow = tokio::spawn(async move { plain_get_with(addr, "/slow", &token).await });
    // Two slots idle: HTTP/2 connections that said nothing after their SETTINGS.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
        stream.write_all(&h2_open()).await.expect("write");
        // The server's SETTINGS: the connection holds a slot.
        let mut head = [0u8; 9];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
            .await
            .expect("served within 5 s")
            .expect("read");
        idle.push(stream);
    }

    let started = Instant::now();
    let (status, _) = plain_get(gw.addr, "/public/newcomer").await;
    let waited = started.elapsed();
    assert_eq!(status, 200);
    let (slow_status, _) = slow.await.expect("task");
    assert_eq!(
        slow_status, 504,
        "the busy connection ran to its own end (the upstream's 2 s timeout), not cut off"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "served in {waited:?}: by an idle connection's slot, not the busy one's"
    );
    let mut closed = 0;
    for stream in &mut idle {
        if read_until_closed(stream, Duration::from_secs(2))
            .await
            .1
            .is_some()
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 1, "exactly one idle connection made room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_with_every_connection_busy_a_new_client_waits() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup
        .start_with(&plain_config(
            &setup,
            "header_read_timeout = \"60s\"\nmax_connections = 1",
        ))
        .await;
    // The only slot, busy: /slow… is answered after the upstream's 2 s timeout.
    let addr = gw.addr;
    let token = format!("Authorization: Bearer {}\r\n", setup.token("alice", &[]));
    let slow = tokio::spawn(async move { plain_get_with(addr, "/slow", &token).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let (status, _) = plain_get(gw.addr, "/public/next").await;
    let waited = started.elapsed();
    assert_eq!(status, 200);
    let (slow_status, _) = slow.await.expect("task");
    assert_eq!(slow_status, 504, "the busy connection ran to its end");
    assert!(
        waited > Duration::from_secs(1),
        "the newcomer waited for the busy connection ({waited:?})"
    );
}

/// One HTTP/1.1 GET on its own plain connection: the status and the whole response.
async fn plain_get(addr: SocketAddr, path: &str) -> (u16, String) {
    plain_get_with(addr, path, "").await
}

/// [`plain_get`] with `extra` header lines (each ending in CRLF).
async fn plain_get_with(addr: SocketAddr, path: &str, extra: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let (wire, _) = read_until_closed(&mut stream, Duration::from_secs(20)).await;
    let status = statuses(&wire).first().copied().unwrap_or(0);
    (status, String::from_utf8_lossy(&wire).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_after_an_upgrade_that_did_not_happen_is_still_checked_for_smuggling() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start_with(&plain_config(&setup, "")).await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    // The upstream answers the upgrade request 200: no tunnel, the connection stays HTTP.
    let wire = concat!(
        "GET /public/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n",
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        "Sec-WebSocket-Version: 13\r\n\r\n",
        "POST /public/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n",
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    stream.write_all(wire.as_bytes()).await.expect("write");
    let (out, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(
        statuses(&out),
        vec![200, 400],
        "{}",
        String::from_utf8_lossy(&out)
    );
    let paths = setup.upstream.paths();
    assert_eq!(
        paths,
        vec!["/public/ws"],
        "the smuggled request never went upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_doubled_or_invalid_host_is_400_and_not_forwarded() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start_with(&plain_config(&setup, "")).await;
    for (what, head) in [
        ("no Host", "GET /public/a HTTP/1.1\r\n"),
        (
            "two Hosts",
            "GET /public/b HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n",
        ),
        (
            "a path in Host",
            "GET /public/c HTTP/1.1\r\nHost: a.example/x\r\n",
        ),
        (
            "user info in Host",
            "GET /public/d HTTP/1.1\r\nHost: u@a.example\r\n",
        ),
        (
            "a port too big",
            "GET /public/e HTTP/1.1\r\nHost: a.example:99999\r\n",
        ),
        ("an empty Host", "GET /public/f HTTP/1.1\r\nHost: \r\n"),
        (
            "user info in an absolute target",
            "GET http://u@a.example/public/g HTTP/1.1\r\nHost: a.example\r\n",
        ),
    ] {
        let out = exchange(
            gw.addr,
            format!("{head}Connection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(statuses(out.as_bytes()), vec![400], "{what}: {out}");
    }
    // HTTP/1.0 predates Host.
    let out = exchange(gw.addr, b"GET /public/old HTTP/1.0\r\n\r\n").await;
    assert_eq!(statuses(out.as_bytes()), vec![200], "{out}");
    // An absolute target names the host, whatever Host says (RFC 9112 §3.2.2), and that
    // is the one the upstream is told.
    let out = exchange(
        gw.addr,
        b"GET http://a.example/public/absolute HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(out.as_bytes()), vec![200], "{out}");
    let received = setup.upstream.received();
    let paths: Vec<&str> = received.iter().map(|r| r.path_and_query.as_str()).collect();
    assert_eq!(paths, vec!["/public/old", "/public/absolute"]);
    assert_eq!(
        received[1].headers.get("host").map(|h| h.as_bytes()),
        Some(&b"a.example"[..])
    );
}

/// The status of the HTTP/2 response on stream 1 in `wire`, from the first byte of its
/// header block (hyper sends the common ones indexed: 200 is 0x88, 400 is 0x8c).
fn h2_status(wire: &[u8]) -> Option<u16> {
    let mut rest = wire;
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let stream = u32::from_be_bytes([rest[5] & 0x7f, rest[6], rest[7], rest[8]]);
        if rest[3] == HEADERS && stream == 1 {
            return match rest.get(9)? {
                0x88 => Some(200),
                0x8c => Some(400),
                0x8d => Some(404),
                other => panic!("an unexpected status encoding {other:#x}"),
            };
        }
        rest = &rest[(9 + len).min(rest.len())..];
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_and_host_must_agree() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup
        .start_with(&plain_config(&setup, "header_read_timeout = \"1s\""))
        .await;
    let send = |block: Vec<u8>| async move {
        let mut bytes = h2_open();
        bytes.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1, &block));
        let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
        stream.write_all(&bytes).await.expect("write");
        let (out, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        h2_status(&out)
    };
    // `host` (literal, new name) beside :authority 127.0.0.1.
    let with_host = |path: &str, host: &str| {
        let mut block = h2_get_block(path);
        block.push(0x00);
        block.push(4);
        block.extend_from_slice(b"host");
        block.push(u8::try_from(host.len()).expect("short"));
        block.extend_from_slice(host.as_bytes());
        block
    };
    assert_eq!(
        send(with_host("/public/differ", "evil.example")).await,
        Some(400)
    );
    assert_eq!(
        send(with_host("/public/same", "127.0.0.1")).await,
        Some(200)
    );
    // Without :authority, `host` names the host, and is what the upstream gets.
    let mut block = vec![0x82, 0x86, 0x04, 15];
    block.extend_from_slice(b"/public/no-auth");
    block.extend_from_slice(&[0x00, 4]);
    block.extend_from_slice(b"host");
    block.push(12);
    block.extend_from_slice(b"app.internal");
    assert_eq!(send(block).await, Some(200));
    let received = setup.upstream.received();
    let seen: Vec<(&str, Option<&str>)> = received
        .iter()
        .map(|r| {
            (
                r.path_and_query.as_str(),
                r.headers.get("host").and_then(|h| h.to_str().ok()),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("/public/same", Some("127.0.0.1")),
            ("/public/no-auth", Some("app.internal"))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_405_and_never_forwarded() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start_with(&plain_config(&setup, "")).await;
    for head in [
        "CONNECT /public/tunnel HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n",
    ] {
        let out = exchange(gw.addr, format!("{head}\r\n").as_bytes()).await;
        assert_eq!(statuses(out.as_bytes()), vec![405], "{head}: {out}");
        assert!(out.to_ascii_lowercase().contains("\r\nallow: get"), "{out}");
    }
    assert!(setup.upstream.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_before_the_body_is_read_announces_the_close() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start_with(&plain_config(&setup, "")).await;
    let body = "x".repeat(64);
    // No token: 401 before the body is read.
    let wire = format!(
        "POST /private HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 64\r\n\r\n{body}\
         GET /public/next HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    );
    let out = exchange(gw.addr, wire.as_bytes()).await;
    assert_eq!(statuses(out.as_bytes())[0], 401, "{out}");
    let head = &out[..out.find("\r\n\r\n").expect("a head")];
    assert!(
        head.to_ascii_lowercase().contains("\r\nconnection: close"),
        "the 401 says the connection closes: {head}"
    );
    // A refusal of a request without a body keeps the connection.
    let wire = "GET /private HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n\
                GET /public/kept HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let out = exchange(gw.addr, wire.as_bytes()).await;
    assert_eq!(statuses(out.as_bytes()), vec![401, 200], "{out}");
}
