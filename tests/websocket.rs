//! WebSocket tunnels through the real gateway: a tunnel opens only on a 101 that accepts
//! the client's handshake, a route can refuse upgrades, and a tunnel lives no longer than
//! the token that opened it.

mod common;

use std::time::{Duration, Instant};

use authgate::jwt::Algorithm;
use common::Setup;
use common::wire::{exchange, plain_config, statuses};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A raw upstream that answers every request head with `answer` and records every byte it
/// receives afterwards on that connection.
async fn scripted_upstream(
    answer: &'static str,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(answer.as_bytes()).await;
                let after = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                log.lock().expect("lock").extend_from_slice(&head[after..]);
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    log.lock().expect("lock").extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (url, seen)
}

fn with_upstream(setup: &Setup, url: &str, route_lines: &str) -> String {
    format!(
        "{}\n[[upstream]]\nname = \"raw\"\nurl = \"{url}\"\n\n[[route]]\npath = \"/raw\"\nupstream = \"raw\"\n{route_lines}",
        plain_config(setup, "")
    )
}

const WS_HANDSHAKE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_that_does_not_accept_the_handshake_opens_no_tunnel() {
    let setup = Setup::new(Algorithm::HS256).await;
    // A 101 with a wrong Sec-WebSocket-Accept: the upstream did not take the handshake.
    let (url, after) = scripted_upstream(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBvbmU=\r\n\r\n",
    )
    .await;
    let gw = setup.start_with(&with_upstream(&setup, &url, "")).await;
    let token = setup.token("alice", &[]);
    // The handshake, then a request that would carry a forged identity if the bytes went
    // through a tunnel.
    let wire = format!(
        "GET /raw/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n{WS_HANDSHAKE}\r\n\
         GET /raw/admin HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Auth-User: root\r\nConnection: close\r\n\r\n"
    );
    let out = exchange(gw.addr, wire.as_bytes()).await;
    assert_eq!(statuses(out.as_bytes())[0], 502, "{out}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let leaked = String::from_utf8_lossy(&after.lock().expect("lock")).into_owned();
    assert!(
        !leaked.contains("X-Auth-User: root"),
        "client bytes reached the upstream raw: {leaked}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_to_a_request_without_an_upgrade_is_502() {
    let setup = Setup::new(Algorithm::HS256).await;
    let (url, _) = scripted_upstream(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .await;
    let gw = setup
        .start_with(&with_upstream(&setup, &url, "auth = \"public\"\n"))
        .await;
    let out = exchange(
        gw.addr,
        b"GET /raw/plain HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(out.as_bytes()), vec![502], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_websocket_false_refuses_upgrades() {
    let setup = Setup::new(Algorithm::HS256).await;
    let (url, after) = scripted_upstream("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
    let gw = setup
        .start_with(&with_upstream(
            &setup,
            &url,
            "auth = \"public\"\nwebsocket = false\n",
        ))
        .await;
    let wire = format!(
        "GET /raw/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n{WS_HANDSHAKE}Connection: close\r\n\r\n"
    );
    let out = exchange(gw.addr, wire.as_bytes()).await;
    assert_eq!(statuses(out.as_bytes()), vec![400], "{out}");
    assert!(out.contains("WebSocket"), "{out}");
    assert!(after.lock().expect("lock").is_empty());
    // A handshake without a valid key is refused on any route.
    let out = exchange(
        gw.addr,
        b"GET /raw/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(out.as_bytes()), vec![400], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_closes_when_its_token_expires() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    let setup = Setup::new(Algorithm::HS256).await;
    // An echoing WebSocket upstream.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let ws_url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let config = with_upstream(&setup, &ws_url, "").replace("leeway = \"5s\"", "leeway = \"0s\"");
    let gw = setup.start_with(&config).await;

    let mut claims = common::access_claims("alice", &[]);
    claims.exp = Some(common::now() + 2);
    let token = setup.key.sign(&claims);
    let mut request = format!("ws://127.0.0.1:{}/raw/chat", gw.addr.port())
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let stream = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("handshake");
    assert_eq!(response.status(), 101);
    ws.send(Message::text("before")).await.expect("send");
    let echoed = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .expect("echo in time")
        .expect("a frame")
        .expect("no error");
    assert_eq!(echoed.into_text().expect("text").as_str(), "before");

    // The token expires 2 s after it was issued; the tunnel goes within a second after.
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the tunnel was still open 6 s after its token expired"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
}
