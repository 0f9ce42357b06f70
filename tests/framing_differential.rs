//! The framing scanner against hyper itself: generated connections (pipelined requests
//! with every framing, line-ending and chunked-body spelling we know, valid or not) are
//! served by hyper's HTTP/1 server over the scanner, as the gateway serves them. For every
//! request hyper hands over, the scanner's flag must say exactly whether that request's
//! head carried both Content-Length and Transfer-Encoding — so the scanner's count of
//! requests never drifts from hyper's, whatever hyper accepts, refuses or swallows.
//!
//! Beside the generated connections, a corpus of named smuggling shapes (raw bytes:
//! Transfer-Encoding and Content-Length spellings, line ends, bytes hyper refuses,
//! chunk-size lines, upgrades without a 101, Expect, what follows a refused request) states
//! for each what hyper does with it: refuses it, or hands over each request once with the
//! body its framing gives — and flagged exactly when its head had both headers.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authgate::framing::{Flags, Watched};
use bytes::Bytes;
use http::header::{CONNECTION, UPGRADE};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
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

/// One request as hyper handed it to the service.
#[derive(Debug)]
struct Served {
    /// The request target (`/r3`, or `host:443` for CONNECT).
    target: String,
    /// Whether the scanner flagged it: the gateway answers 400 and forwards nothing.
    flagged: bool,
    /// The body as hyper read it; `None` where hyper failed it (it ended early or broke
    /// its framing), so a forward of it is cut short.
    body: Option<Bytes>,
}

/// What one connection came to: the requests hyper handed over, in order, and the status
/// of every answer on the wire (interim 100s left out).
#[derive(Debug)]
struct Outcome {
    served: Vec<Served>,
    answers: Vec<u16>,
}

/// Serves `wire` (read in pieces of `step` bytes) with hyper over the scanner, as the
/// gateway's server does: upgrades enabled, the scanner stopped once a 101 went out. The
/// service answers a request to `/early…` at once, leaving its body unread; it reads any
/// other body to the end, then answers CONNECT 405 (as the gateway does), a request to
/// `/101…` asking for an upgrade 101, and anything else 200.
async fn serve(wire: Vec<u8>, step: usize) -> Outcome {
    let (client, server) = tokio::io::duplex(step);
    let flags = Arc::new(Flags::default());
    let served = Arc::new(Mutex::new(Vec::new()));
    let record = served.clone();
    let numbered = flags.clone();
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        let flagged = numbered.next_is_conflicting();
        let at = {
            let mut served = record.lock().expect("lock");
            served.push(Served {
                target: req.uri().to_string(),
                flagged,
                body: None,
            });
            served.len() - 1
        };
        let record = record.clone();
        let numbered = numbered.clone();
        async move {
            if req.uri().path().starts_with("/early") {
                return Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())));
            }
            // Read to the end, as the gateway does before answering.
            let body = req.body_mut().collect().await.ok();
            record.lock().expect("lock")[at].body = body.map(|b| b.to_bytes());
            let mut response = http::Response::new(Full::new(Bytes::new()));
            if req.method() == http::Method::CONNECT {
                *response.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
            } else if req.uri().path().starts_with("/101") && req.headers().contains_key(UPGRADE) {
                *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
                let headers = response.headers_mut();
                headers.insert(UPGRADE, http::HeaderValue::from_static("websocket"));
                headers.insert(CONNECTION, http::HeaderValue::from_static("upgrade"));
                numbered.upgraded();
            }
            Ok(response)
        }
    });
    let conn = tokio::spawn(
        http1::Builder::new()
            .keep_alive(true)
            // The client half-closes after its last byte: without this hyper drops the
            // last pipelined request unanswered, body and all, at that EOF.
            .half_close(true)
            .serve_connection(TokioIo::new(Watched::new(server, flags)), service)
            .with_upgrades(),
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
    let text = String::from_utf8_lossy(&sink);
    let answers = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .filter(|status| *status != 100)
        .collect();
    let served = std::mem::take(&mut *served.lock().expect("lock"));
    Outcome { served, answers }
}

fn run<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
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
        for Served { target, flagged, .. } in run(serve(wire, step)).served {
            let index: usize = target[2..].parse().expect("index");
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

// ---------------------------------------------------------------------------------------
// The smuggling corpus: raw connections, one shape each, with what hyper hands over.

/// One request of a shape, as hyper hands it to the service.
#[derive(Debug)]
enum Expected {
    /// Not flagged, with this body: what the gateway forwards.
    Forwarded(&'static str, &'static [u8]),
    /// Flagged (its head had both Content-Length and Transfer-Encoding): the gateway answers
    /// 400 and forwards nothing, so its body does not matter.
    Conflicting(&'static str),
    /// Not flagged, and hyper failed its body: a forward of it is cut short, never whole.
    Broken(&'static str),
    /// Not flagged, and answered before its body was read (as the gateway answers 401 or
    /// 404): hyper then drains the body if it has it all, else closes, so the requests
    /// after it may or may not be served.
    Unread(&'static str),
}

use Expected::{Broken, Conflicting, Forwarded, Unread};

impl Expected {
    fn is(&self, served: &Served) -> bool {
        match *self {
            Forwarded(target, body) => {
                served.target == target && !served.flagged && served.body.as_deref() == Some(body)
            }
            Conflicting(target) => served.target == target && served.flagged,
            Broken(target) | Unread(target) => {
                served.target == target && !served.flagged && served.body.is_none()
            }
        }
    }

    /// Whether `served` is what `expected` says: the same requests, or (after a request
    /// answered unread) the same up to that one.
    fn all(expected: &[Expected], served: &[Served]) -> bool {
        let same = served.len() <= expected.len()
            && expected.iter().zip(served).all(|(want, got)| want.is(got));
        same && (served.len() == expected.len()
            || matches!(
                served.len().checked_sub(1).map(|last| &expected[last]),
                Some(Unread(_))
            ))
    }
}

/// One connection's bytes and what must come of them.
struct Shape {
    name: &'static str,
    wire: &'static [u8],
    /// Every request hyper hands over, in order, each once; nothing else.
    served: &'static [Expected],
    /// hyper's own answer (400 to a head it refuses...), after which it reads no more.
    refusal: Option<u16>,
}

const CORPUS: &[Shape] = &[
    // --- The classic pairs: a body one reader sees as a request to the other. -----------
    Shape {
        name: "CL.TE: the chunked body ends early, the rest is a request to a reader by length",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Conflicting("/a")],
        refusal: None,
    },
    Shape {
        name: "TE.CL: a request inside a chunk, for a reader by length",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n23\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n",
        served: &[Conflicting("/a")],
        refusal: None,
    },
    // --- Transfer-Encoding spellings. ------------------------------------------------
    Shape {
        name: "TE value in upper case",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Conflicting("/a")],
        refusal: None,
    },
    Shape {
        name: "TE name in mixed case",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\ntRANSFER-eNCODING: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Conflicting("/a")],
        refusal: None,
    },
    Shape {
        name: "TE with no space after the colon",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding:chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Conflicting("/a")],
        refusal: None,
    },
    Shape {
        name: "TE after a tab",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Conflicting("/a")],
        refusal: None,
    },
    Shape {
        name: "TE with trailing whitespace",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked \t\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Conflicting("/a")],
        refusal: None,
    },
    Shape {
        name: "TE with a space before the colon",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "TE with a tab before the colon",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "TE chunked, identity: chunked is not last",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "TE identity, chunked",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Conflicting("/a")],
        refusal: None,
    },
    Shape {
        // hyper does not decode gzip: the body is handed over as the chunks carry it.
        name: "TE gzip, chunked without a length",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "TE twice, chunked both times",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Conflicting("/a")],
        refusal: None,
    },
    Shape {
        // The last Transfer-Encoding line decides, for hyper and the scanner alike.
        name: "TE twice, chunked then x",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "TE twice, x then chunked",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Conflicting("/a")],
        refusal: None,
    },
    Shape {
        // Another header to hyper: the length frames the body.
        name: "Transfer_Encoding with an underscore",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"0\r\n\r\n"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "TE xchunked beside a length",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        // The scanner reads `xchunked` as chunked; hyper refuses it, so nothing drifts.
        name: "TE xchunked alone",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "TE quoted",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "TE with an empty list element first",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Conflicting("/a")],
        refusal: None,
    },
    Shape {
        name: "TE with a trailing comma",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "TE empty beside a length",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "TE with a non-ASCII byte",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: \xffchunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "TE after a vertical tab",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "TE beside Content-Length: 0",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Conflicting("/a")],
        refusal: None,
    },
    Shape {
        name: "TE name in upper case, no length",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTRANSFER-ENCODING: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        // Trailers are not a head: framing headers there change nothing.
        name: "TE and CL in a trailer",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "TE in HTTP/1.0",
        wire: b"POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "TE and CL in HTTP/1.0 with keep-alive",
        wire: b"POST /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    // --- Content-Length forms. -------------------------------------------------------
    Shape {
        name: "CL with a plus sign",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "CL negative",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "CL with a leading zero",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 05\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        // RFC 9110 §8.6 lets a recipient read a list of equal lengths as one, and hyper's
        // client does; its server takes digits only, so the scanner (which stops here)
        // and hyper (which closes) both leave the rest unread.
        name: "CL list of equal values, then a conflicting request",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "CL list of equal values without spaces",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5,5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "CL list of different values",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5,6\r\n\r\nhello!GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "CL twice, equal",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "CL twice, different",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "CL past u64",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\nhello",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        // Over hyper's largest body length (u64::MAX - 2): 431, as for a head too large.
        name: "CL at u64::MAX",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\nhello",
        served: &[],
        refusal: Some(431),
    },
    Shape {
        name: "CL in hex",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "CL empty",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "CL with a space inside",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5 5\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "CL with a space before the colon",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "CL padded with whitespace",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: \t 5 \t\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "CL longer than what comes",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhello",
        served: &[Broken("/a")],
        refusal: None,
    },
    Shape {
        name: "CL body that spells a request",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[
            Forwarded("/a", b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"),
            Forwarded("/b", b""),
        ],
        refusal: None,
    },
    Shape {
        // hyper reads Content-Length before it knows Transfer-Encoding follows.
        name: "CL unreadable, then TE",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        // ... and ignores it once it has seen Transfer-Encoding; the scanner flags any.
        name: "TE, then CL unreadable",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Conflicting("/a")],
        refusal: None,
    },
    Shape {
        name: "GET with a body",
        wire: b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "GET with a chunked body",
        wire: b"GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    // --- Line ends and bytes in the head. ----------------------------------------------
    Shape {
        name: "bare LF line ends",
        wire: b"POST /a HTTP/1.1\nHost: x\nContent-Length: 5\n\nhelloGET /b HTTP/1.1\nHost: x\n\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "bare LF line ends, CL and TE",
        wire: b"POST /a HTTP/1.1\nHost: x\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Conflicting("/a")],
        refusal: None,
    },
    Shape {
        name: "mixed line ends, CL and TE",
        wire: b"POST /a HTTP/1.1\r\nHost: x\nContent-Length: 5\r\nTransfer-Encoding: chunked\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Conflicting("/a")],
        refusal: None,
    },
    Shape {
        name: "bare CR after the request line",
        wire: b"GET /a HTTP/1.1\rHost: x\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "bare CR inside a header value",
        wire: b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "bare CR between CL and TE",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\rTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "obs-fold continuation line",
        wire: b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "obs-fold hiding TE",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "TE value folded onto the next line",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n\tchunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "NUL in a header name",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding\x00: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "NUL in a header value",
        wire: b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "NUL after chunked",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\x00\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "NUL in the request target",
        wire: b"GET /a\x00 HTTP/1.1\r\nHost: x\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        // RFC 9112 §2.2: empty lines before a request line are ignored.
        name: "empty lines before the request line",
        wire: b"\r\n\r\n\nPOST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "lower-case version",
        wire: b"GET /a http/1.1\r\nHost: x\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        name: "two spaces in the request line",
        wire: b"GET  /a HTTP/1.1\r\nHost: x\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    // --- Chunk-size lines, chunk ends and trailers. -----------------------------------
    Shape {
        name: "chunk sizes with leading zeros",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0005\r\nhello\r\n0000\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "chunk size 0x5",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Broken("/a")],
        refusal: None,
    },
    Shape {
        name: "chunk size in upper-case hex",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"0123456789"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "chunk size past u64",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Broken("/a")],
        refusal: None,
    },
    Shape {
        name: "chunk size at u64::MAX",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Broken("/a")],
        refusal: None,
    },
    Shape {
        name: "chunk extension with a quoted semicolon",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;name=\"a;b\"\r\nhello\r\n0;x=1\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        // A quote does not hold the line open: the first CRLF ends it, for both.
        name: "chunk extension with an open quote before CRLF",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"b\r\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "chunk extension with a bare LF",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Broken("/a")],
        refusal: None,
    },
    Shape {
        name: "chunk size ended by a bare LF",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Broken("/a")],
        refusal: None,
    },
    Shape {
        name: "no CRLF after chunk data",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Broken("/a")],
        refusal: None,
    },
    Shape {
        name: "bare LF after chunk data",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Broken("/a")],
        refusal: None,
    },
    Shape {
        name: "chunk data longer than its size",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Broken("/a")],
        refusal: None,
    },
    Shape {
        name: "space before the chunk size",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Broken("/a")],
        refusal: None,
    },
    Shape {
        name: "spaces and a tab after the chunk size",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \t \r\nhello\r\n0\t\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "negative chunk size",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Broken("/a")],
        refusal: None,
    },
    Shape {
        name: "chunk size with a plus sign",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Broken("/a")],
        refusal: None,
    },
    Shape {
        name: "empty chunk-size line",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Broken("/a")],
        refusal: None,
    },
    Shape {
        name: "trailers after the last chunk",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        // After `0\r\n` a bare LF starts a trailer line: the request that follows is read
        // as trailers up to the empty CRLF line.
        name: "bare LF after the last chunk swallows the next request",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "chunked body cut off",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        served: &[Broken("/a")],
        refusal: None,
    },
    // --- Upgrades, CONNECT, Expect, and what follows a request. -------------------------
    Shape {
        name: "WebSocket upgrade answered 200, then CL and TE",
        wire: b"GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        served: &[Forwarded("/a", b""), Conflicting("/b")],
        refusal: None,
    },
    Shape {
        name: "WebSocket upgrade answered 200, then a plain request",
        wire: b"GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b""), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "h2c upgrade answered 200, then CL and TE",
        wire: b"GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        served: &[Forwarded("/a", b""), Conflicting("/b")],
        refusal: None,
    },
    Shape {
        name: "upgrade with a body, answered 200, then CL and TE",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Conflicting("/b")],
        refusal: None,
    },
    Shape {
        // The gateway answers CONNECT 405: no tunnel, and hyper reads on.
        name: "CONNECT answered 405, then CL and TE",
        wire: b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        served: &[Forwarded("x:443", b""), Conflicting("/b")],
        refusal: None,
    },
    Shape {
        // After the 101 the bytes are the tunnel's: no request in them is read.
        name: "upgrade answered 101, then what looks like requests",
        wire: b"GET /101 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nPOST /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/101", b"")],
        refusal: None,
    },
    Shape {
        name: "Expect: 100-continue with a body",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "Expect: 100-continue without a body",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b""), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "Expect: 100-continue with CL and TE",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Conflicting("/a")],
        refusal: None,
    },
    Shape {
        name: "a request after a refused head",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[],
        refusal: Some(400),
    },
    Shape {
        // hyper closes after a request with both headers, whatever the gateway answers.
        name: "a request after a conflicting one",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Conflicting("/a")],
        refusal: None,
    },
    Shape {
        name: "a request after a broken chunked body",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nz\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Broken("/a")],
        refusal: None,
    },
    Shape {
        name: "a request after Connection: close",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello")],
        refusal: None,
    },
    Shape {
        name: "Connection: close, then keep-alive",
        wire: b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"")],
        refusal: None,
    },
    Shape {
        name: "a request after HTTP/1.0",
        wire: b"POST /a HTTP/1.0\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello")],
        refusal: None,
    },
    Shape {
        name: "HTTP/1.0 with keep-alive and a length",
        wire: b"POST /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Forwarded("/a", b"hello"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "a trailer line that is no header",
        wire: b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nno header\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Broken("/a")],
        refusal: None,
    },
    Shape {
        name: "answered before its body was read, then CL and TE",
        wire: b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        served: &[Unread("/early"), Conflicting("/b")],
        refusal: None,
    },
    Shape {
        // No 100 went out, and the client sent the body anyway: hyper drains it as body,
        // never as the request it spells.
        name: "Expect: 100-continue answered unread, the body spelling a request",
        wire: b"POST /early HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Unread("/early"), Forwarded("/b", b"")],
        refusal: None,
    },
    Shape {
        name: "Expect: 100-continue answered unread, a chunked body spelling a request",
        wire: b"POST /early HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n23\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        served: &[Unread("/early"), Forwarded("/b", b"")],
        refusal: None,
    },
];

/// The statuses the service gives (hyper's own refusals are the others).
const SERVICE_ANSWERS: [u16; 3] = [101, 200, 405];

#[test]
fn every_smuggling_shape_is_refused_or_served_once_with_its_framing() {
    assert!(CORPUS.len() >= 60, "{} shapes", CORPUS.len());
    let mut failures = Vec::new();
    for shape in CORPUS {
        for step in [1, 3, 64, shape.wire.len()] {
            let outcome = run(serve(shape.wire.to_vec(), step));
            let refusals: Vec<u16> = outcome
                .answers
                .iter()
                .copied()
                .filter(|status| !SERVICE_ANSWERS.contains(status))
                .collect();
            let served_as_expected = Expected::all(shape.served, &outcome.served);
            if !served_as_expected || refusals != Vec::from_iter(shape.refusal) {
                failures.push(format!(
                    "{} (reads of {step} bytes): expected {:?} then {:?}, got {:?}",
                    shape.name, shape.served, shape.refusal, outcome
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Apart from the table, since hyper's answer depends on the reads: the HTTP/2 preface
/// read whole is one hyper's HTTP/1 server closes on without a word (the auto builder
/// would switch to HTTP/2 on it); read in pieces, its first line is a bad request line, 400.
#[test]
fn the_http2_preface_on_http1_is_refused() {
    let wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    for step in [1, 3, wire.len()] {
        let outcome = run(serve(wire.to_vec(), step));
        assert!(outcome.served.is_empty(), "reads of {step}: {outcome:?}");
        assert!(
            outcome.answers.iter().all(|status| *status == 400),
            "reads of {step}: {outcome:?}"
        );
    }
}
