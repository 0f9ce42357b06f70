//! The framing scanner against hyper itself: generated connections (pipelined requests
//! with every framing, line-ending and chunked-body spelling we know, valid or not) are
//! served by hyper's HTTP/1 server over the scanner, as the gateway serves them. For every
//! request hyper hands over, the scanner's flag must say exactly whether that request's
//! head carried both Content-Length and Transfer-Encoding — so the scanner's count of
//! requests never drifts from hyper's, whatever hyper accepts, refuses or swallows.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authgate::framing::{Flags, Watched};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[derive(Debug, Clone)]
enum Framing {
    None,
    Length,
    BadLength,
    Chunked,
    Both {
        te_first: bool,
        bad_length: bool,
    },
    /// A coding hyper refuses (400, connection closed).
    Gzip,
}

#[derive(Debug, Clone)]
enum LastChunk {
    Plain,
    Trailers,
    /// `0\r\n\n`: a bare LF after the last chunk, which hyper reads as a trailer line.
    BareLf,
}

#[derive(Debug, Clone)]
struct Req {
    framing: Framing,
    bare_lf_head: bool,
    extra_headers: usize,
    body: Vec<u8>,
    chunk: usize,
    /// How chunk-size lines are spelled: plain, with an extension, with spaces, or ended by
    /// a bare LF (which hyper refuses).
    size_style: u8,
    /// `chunked`, `gzip, chunked` or `Chunked`.
    te_style: u8,
    last: LastChunk,
}

fn request() -> impl Strategy<Value = Req> {
    let framing = prop_oneof![
        3 => Just(Framing::None),
        3 => Just(Framing::Length),
        1 => Just(Framing::BadLength),
        3 => Just(Framing::Chunked),
        3 => (any::<bool>(), any::<bool>())
            .prop_map(|(te_first, bad_length)| Framing::Both { te_first, bad_length }),
        1 => Just(Framing::Gzip),
    ];
    let last = prop_oneof![
        4 => Just(LastChunk::Plain),
        2 => Just(LastChunk::Trailers),
        1 => Just(LastChunk::BareLf),
    ];
    (
        framing,
        prop::bool::weighted(0.2),
        0..3usize,
        prop::collection::vec(
            prop::sample::select(b"ab\r\nGET /x HTTP/1.1:".to_vec()),
            0..24,
        ),
        1..8usize,
        (0..4u8, 0..3u8),
        last,
    )
        .prop_map(
            |(framing, bare_lf_head, extra_headers, body, chunk, (size_style, te_style), last)| {
                Req {
                    framing,
                    bare_lf_head,
                    extra_headers,
                    body,
                    chunk,
                    size_style,
                    te_style,
                    last,
                }
            },
        )
}

impl Req {
    fn has_both(&self) -> bool {
        matches!(self.framing, Framing::Both { .. })
    }

    fn wire(&self, index: usize) -> Vec<u8> {
        let eol = if self.bare_lf_head { "\n" } else { "\r\n" };
        let mut head = vec![format!("POST /r{index} HTTP/1.1"), "Host: x".to_owned()];
        for i in 0..self.extra_headers {
            head.push(format!("X-Extra-{i}: {i}"));
        }
        let length = format!("Content-Length: {}", self.body.len());
        let chunked = match self.te_style {
            0 => "Transfer-Encoding: chunked",
            1 => "Transfer-Encoding: gzip, chunked",
            _ => "Transfer-Encoding: Chunked",
        };
        match &self.framing {
            Framing::None => {}
            Framing::Length => head.push(length),
            Framing::BadLength => head.push("Content-Length: x".into()),
            Framing::Chunked => head.push(chunked.into()),
            Framing::Gzip => head.push("Transfer-Encoding: gzip".into()),
            Framing::Both {
                te_first,
                bad_length,
            } => {
                let length = if *bad_length {
                    "Content-Length: x".to_owned()
                } else {
                    length
                };
                let te = chunked.to_owned();
                if *te_first {
                    head.extend([te, length]);
                } else {
                    head.extend([length, te]);
                }
            }
        }
        let mut wire = head.join(eol).into_bytes();
        wire.extend_from_slice(eol.as_bytes());
        wire.extend_from_slice(eol.as_bytes());
        match &self.framing {
            Framing::None | Framing::BadLength => {}
            Framing::Length => wire.extend_from_slice(&self.body),
            Framing::Chunked | Framing::Both { .. } | Framing::Gzip => {
                for piece in self.body.chunks(self.chunk) {
                    let size = piece.len();
                    let line = match self.size_style {
                        0 => format!("{size:x}\r\n"),
                        1 => format!("{size:x};ext=1\r\n"),
                        2 => format!("{size:X}  \r\n"),
                        _ => format!("{size:x}\n"),
                    };
                    wire.extend_from_slice(line.as_bytes());
                    wire.extend_from_slice(piece);
                    wire.extend_from_slice(b"\r\n");
                }
                wire.extend_from_slice(match self.last {
                    LastChunk::Plain => b"0\r\n\r\n",
                    LastChunk::Trailers => b"0\r\nX-Trailer: 1\r\n\r\n",
                    LastChunk::BareLf => b"0\r\n\n",
                });
            }
        }
        wire
    }
}

/// Serves `wire` (read in pieces of `step` bytes) with hyper over the scanner; for each
/// request hyper handed over, its index and whether the scanner flagged it.
async fn serve(wire: Vec<u8>, step: usize) -> Vec<(usize, bool)> {
    let (client, server) = tokio::io::duplex(step);
    let flags = Arc::new(Flags::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let numbered = flags.clone();
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let flagged = numbered.next_is_conflicting();
        let index: usize = req.uri().path()[2..].parse().expect("index");
        record.lock().expect("lock").push((index, flagged));
        async move {
            // Read to the end, as the gateway does before answering.
            let _ = req.into_body().collect().await;
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
        }
    });
    let conn = tokio::spawn(
        http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(Watched::new(server, flags)), service),
    );
    let (mut reader, mut writer) = tokio::io::split(client);
    let writing = tokio::spawn(async move {
        for piece in wire.chunks(step) {
            if writer.write_all(piece).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut sink)).await;
    writing.abort();
    conn.abort();
    std::mem::take(&mut *seen.lock().expect("lock"))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_scanner_flags_exactly_the_requests_hyper_serves_with_both_headers(
        requests in prop::collection::vec(request(), 1..6),
        step in 1..64usize,
    ) {
        let mut wire = Vec::new();
        for (i, req) in requests.iter().enumerate() {
            wire.extend_from_slice(&req.wire(i));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let served = runtime.block_on(serve(wire, step));
        for (index, flagged) in served {
            prop_assert_eq!(
                flagged,
                requests[index].has_both(),
                "request {} of {:?}",
                index,
                requests
            );
        }
    }
}
