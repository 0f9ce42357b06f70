//! Raw plain-HTTP exchanges with a gateway: what a client can put on the wire, and what
//! it gets back, byte for byte.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::Setup;

const TLS_LINE: &str = "tls = { cert = \"server.crt\", key = \"server.key\" }\n";

/// The standard config over plain HTTP, with `lines` added to `[server]`.
pub fn plain_config(setup: &Setup, lines: &str) -> String {
    setup
        .standard_config()
        .replace(TLS_LINE, "")
        .replace("[admin]", &format!("{lines}\n\n[admin]"))
}

/// Reads until the peer closes, for at most `limit`: what was read, and when it closed
/// (`None`: still open at `limit`).
pub async fn read_until_closed(
    stream: &mut TcpStream,
    limit: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return (seen, None),
            Ok(Ok(0) | Err(_)) => return (seen, Some(started.elapsed())),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status codes of the HTTP/1 responses in `wire`, in order.
pub fn statuses(wire: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(wire);
    text.match_indices("HTTP/1.")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

/// Sends `wire` on a new plain connection and reads until the gateway closes (5 s at most).
pub async fn exchange(addr: SocketAddr, wire: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(wire).await.expect("write");
    let (out, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    String::from_utf8_lossy(&out).into_owned()
}
