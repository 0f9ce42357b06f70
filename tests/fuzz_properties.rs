//! The properties of two fuzz targets, as property tests so that CI checks them on every
//! run (the fuzz targets themselves need cargo-fuzz and run by hand):
//!
//! - `fuzz/fuzz_targets/h2_frames.rs`: HTTP/2 frame sequences after the preface, built
//!   from valid-ish frames (every type, random flags, stream ids, lengths and payloads),
//!   served by hyper's HTTP/2 server with the gateway's settings: no panic, in the
//!   connection or in any stream's task, and the connection is done in bounded time;
//! - `fuzz/fuzz_targets/config.rs`: random texts and mutations of the shipped
//!   `gateway.toml` never make `Config::from_toml_str` panic.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authgate::config::{
    Config, DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_HEADER_BYTES, LoadOptions,
};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioIo, TokioTimer};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Counterexamples are reported in the failure message; no files are written.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/2 frames.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HPACK header blocks: whole requests (static-table indices and literals), pieces of
/// one, and a dynamic table size update.
const BLOCKS: &[&[u8]] = &[
    // GET https://x/
    &[0x82, 0x87, 0x84, 0x41, 0x01, b'x'],
    // POST https://x/ with content-length: 5
    &[0x83, 0x87, 0x84, 0x41, 0x01, b'x', 0x0f, 0x0d, 0x01, b'5'],
    // CONNECT x (no :scheme, no :path)
    &[
        0x0f, 0x23, 0x07, b'C', b'O', b'N', b'N', b'E', b'C', b'T', 0x41, 0x01, b'x',
    ],
    // :method only
    &[0x82],
    // a dynamic table size update to 4096, then GET https://x/
    &[0x3f, 0xe1, 0x1f, 0x82, 0x87, 0x84, 0x41, 0x01, b'x'],
    // an index past the tables
    &[0xff, 0xff, 0xff, 0x0f],
];

/// Stream ids that matter: the connection, client streams in and out of order, a server
/// one, the largest, and one with the reserved bit set.
const STREAMS: &[u32] = &[0, 1, 3, 5, 2, 0x7fff_ffff, 0x8000_0001];

/// One frame on the wire: a 9-byte header and a payload whose length may lie.
#[derive(Debug, Clone)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
    /// A declared length other than the payload's.
    length: Option<u32>,
}

impl Frame {
    fn encode(&self, wire: &mut Vec<u8>) {
        let length = self.length.unwrap_or(self.payload.len() as u32);
        wire.extend_from_slice(&length.to_be_bytes()[1..]);
        wire.push(self.kind);
        wire.push(self.flags);
        wire.extend_from_slice(&self.stream.to_be_bytes());
        wire.extend_from_slice(&self.payload);
    }
}

/// A payload shaped for `kind` most of the time, random bytes otherwise.
fn payload(kind: u8) -> BoxedStrategy<Vec<u8>> {
    let shaped = match kind {
        // HEADERS, PUSH_PROMISE, CONTINUATION: a header block.
        1 | 5 | 9 => select(BLOCKS).prop_map(<[u8]>::to_vec).boxed(),
        // PRIORITY: dependency and weight.
        2 => vec(any::<u8>(), 5).boxed(),
        // RST_STREAM, WINDOW_UPDATE: a code or an increment.
        3 | 8 => any::<u32>().prop_map(|n| n.to_be_bytes().to_vec()).boxed(),
        // SETTINGS: known identifiers (and some not) with any values.
        4 => vec((0..8u16, any::<u32>()), 0..4)
            .prop_map(|settings| {
                settings
                    .into_iter()
                    .flat_map(|(id, value)| {
                        [id.to_be_bytes().to_vec(), value.to_be_bytes().to_vec()]
                    })
                    .flatten()
                    .collect()
            })
            .boxed(),
        // PING: 8 bytes.
        6 => vec(any::<u8>(), 8).boxed(),
        // GOAWAY: last stream and code.
        7 => vec(any::<u8>(), 8).boxed(),
        // DATA and unknown types.
        _ => vec(any::<u8>(), 0..48).boxed(),
    };
    prop_oneof![6 => shaped, 1 => vec(any::<u8>(), 0..24)].boxed()
}

fn frame() -> impl Strategy<Value = Frame> {
    let kind = prop_oneof![
        4 => Just(1u8), // HEADERS
        3 => Just(0),   // DATA
        2 => Just(4),   // SETTINGS
        2 => Just(8),   // WINDOW_UPDATE
        1 => 2..=9u8,   // the others, CONTINUATION included
        1 => any::<u8>(),
    ];
    kind.prop_flat_map(|kind| {
        // Mostly the flags and the stream a frame of this type takes, else anything.
        let (flags, streams): (&[u8], &[u32]) = match kind {
            // END_HEADERS, with END_STREAM or not.
            1 => (&[4, 5], &[1, 3, 5]),
            // END_STREAM or not.
            0 => (&[0, 1], &[1, 1, 3]),
            // ACK or not, on the connection.
            4 | 6 => (&[0, 1], &[0]),
            7 => (&[0], &[0]),
            9 => (&[0, 4], &[1, 3]),
            _ => (&[0], &[0, 1, 3]),
        };
        (
            prop_oneof![5 => select(flags), 1 => any::<u8>()],
            prop_oneof![5 => select(streams), 1 => select(STREAMS)],
            payload(kind),
            prop::option::weighted(0.03, 0..0x4100u32),
        )
            .prop_map(move |(flags, stream, payload, length)| Frame {
                kind,
                flags,
                stream,
                payload,
                length,
            })
    })
}

/// A HEADERS frame on `stream`.
fn headers(stream: u32, flags: u8, block: &[u8]) -> Frame {
    Frame {
        kind: 1,
        flags,
        stream,
        payload: block.to_vec(),
        length: None,
    }
}

/// An empty SETTINGS frame.
const SETTINGS: Frame = Frame {
    kind: 4,
    flags: 0,
    stream: 0,
    payload: Vec::new(),
    length: None,
};

/// The tasks hyper spawns for streams, kept so that a panic in one is seen: tokio would
/// otherwise catch it and drop it with the task.
#[derive(Clone, Default)]
struct Tasks(Arc<Mutex<Vec<JoinHandle<()>>>>);

impl<F> hyper::rt::Executor<F> for Tasks
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        let task = tokio::spawn(future);
        self.0.lock().expect("lock").push(task);
    }
}

/// Virtual time (the clock is paused and jumps when all is idle): an input that leaves
/// the connection waiting costs no real time, and one that never ends is seen.
const LIMIT: Duration = Duration::from_secs(60);

/// Serves `frames` after the preface with hyper's HTTP/2 server, built as the gateway
/// builds it (src/state.rs) with the default limits: what the server sent, or `Err` if the
/// connection was not done within `LIMIT` or a stream's task panicked.
fn serve_h2(frames: &[Frame]) -> Result<Vec<u8>, String> {
    let mut wire = PREFACE.to_vec();
    for frame in frames {
        frame.encode(&mut wire);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let service = hyper::service::service_fn(|req: http::Request<Incoming>| async move {
            let _ = req.into_body().collect().await;
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        let tasks = Tasks::default();
        let mut builder = http2::Builder::new(tasks.clone());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .max_concurrent_streams(DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(DEFAULT_MAX_HEADER_BYTES as u32);
        let conn = builder.serve_connection(TokioIo::new(server), service);
        let (mut reader, mut writer) = tokio::io::split(client);
        let client = async {
            let writing = async {
                let _ = writer.write_all(&wire).await;
                // Once the server has done all it can with the frames (the paused clock
                // moves only when every task waits), the end of the stream.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = writer.shutdown().await;
            };
            // Read all along, so the server is never stuck on a full pipe.
            let mut sink = Vec::new();
            let _ = tokio::join!(writing, reader.read_to_end(&mut sink));
            sink
        };
        let Ok((_, sent)) = tokio::time::timeout(LIMIT, async { tokio::join!(conn, client) }).await
        else {
            return Err(format!("the connection was not done within {LIMIT:?}"));
        };
        let tasks = std::mem::take(&mut *tasks.0.lock().expect("lock"));
        for task in tasks {
            task.abort();
            if let Err(error) = task.await
                && error.is_panic()
            {
                return Err(format!("a stream's task panicked: {error}"));
            }
        }
        Ok(sent)
    })
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn hyper_h2_survives_any_frame_sequence(
        // Mostly a client's opening (SETTINGS) and a request, so that the frames after
        // them meet streams in every state rather than a connection already refused.
        opening in prop_oneof![
            1 => Just(vec![]),
            2 => Just(vec![SETTINGS]),
            3 => Just(vec![SETTINGS, headers(1, 0x5, BLOCKS[0])]),
            3 => Just(vec![SETTINGS, headers(1, 0x4, BLOCKS[1])]),
        ],
        frames in vec(frame(), 0..12),
    ) {
        let frames: Vec<Frame> = opening.into_iter().chain(frames).collect();
        if let Err(why) = serve_h2(&frames) {
            return Err(TestCaseError::fail(why));
        }
    }
}

/// The type and stream of each frame in `wire`.
fn frames_in(mut wire: &[u8]) -> Vec<(u8, u32)> {
    let mut frames = Vec::new();
    while wire.len() >= 9 {
        let length = u32::from_be_bytes([0, wire[0], wire[1], wire[2]]) as usize;
        let stream = u32::from_be_bytes([wire[5], wire[6], wire[7], wire[8]]);
        frames.push((wire[3], stream));
        wire = &wire[(9 + length).min(wire.len())..];
    }
    frames
}

#[test]
fn a_plain_request_is_served() {
    // The harness's own check: a well-formed request gets its response (HEADERS and DATA
    // on stream 1), so the sequences above reach the service.
    let frames = [SETTINGS, headers(1, 0x5, BLOCKS[0])];
    let sent = serve_h2(&frames).expect("served");
    let frames = frames_in(&sent);
    assert!(
        frames.contains(&(1, 1)) && frames.contains(&(0, 1)),
        "{frames:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The config file.

/// The shipped config: every section, `[dev] generate_missing` on, so that validation
/// goes all the way (key material is generated in memory where files are missing).
const SHIPPED: &str = include_str!("../gateway.toml");

/// Values that stress a validator: wrong types, empties, extremes, odd units.
const VALUES: &[&str] = &[
    "\"\"",
    "0",
    "-1",
    "18446744073709551616",
    "1e400",
    "nan",
    "true",
    "[]",
    "{}",
    "[[]]",
    "\"0s\"",
    "\"99999999999999999999h\"",
    "\"1KiB\"",
    "\"0/m\"",
    "\"x/y\"",
    "\"::\"",
    "\"127.0.0.1:99999\"",
    "\"/\"",
    "\"/a/../..\"",
    "\"%2F\"",
    "\"builtin:nothing\"",
    "\"http://\"",
    "\"sqlite://\"",
    "\"redis://\"",
    "\"\\u0000\"",
    "{ roles = [] }",
    "{ cert = \"\", key = \"\" }",
    "\"ES256\"",
    "\"none\"",
];

/// One edit of a config text, by line.
#[derive(Debug, Clone)]
enum Edit {
    /// Drop a line.
    Remove(usize),
    /// Repeat a line (a key twice, a table twice).
    Duplicate(usize),
    /// Give a `key = value` line another value.
    Value(usize, &'static str),
    /// Cut the text at a byte (on a character boundary).
    Truncate(usize),
    /// Put arbitrary text at the start of a line.
    Insert(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Remove),
        any::<usize>().prop_map(Edit::Duplicate),
        (any::<usize>(), select(VALUES)).prop_map(|(line, value)| Edit::Value(line, value)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), "\\PC{0,12}").prop_map(|(line, text)| Edit::Insert(line, text)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for edit in edits {
        if lines.is_empty() {
            break;
        }
        let at = |n: usize| n % lines.len();
        match edit {
            Edit::Remove(n) => {
                lines.remove(at(*n));
            }
            Edit::Duplicate(n) => {
                let line = lines[at(*n)].clone();
                lines.insert(at(*n), line);
            }
            Edit::Value(n, value) => {
                let n = at(*n);
                if let Some((key, _)) = lines[n].split_once('=') {
                    lines[n] = format!("{key}= {value}");
                }
            }
            Edit::Truncate(n) => {
                let whole = lines.join("\n");
                let mut cut = n % (whole.len() + 1);
                while !whole.is_char_boundary(cut) {
                    cut -= 1;
                }
                lines = whole[..cut].lines().map(str::to_owned).collect();
            }
            Edit::Insert(n, text) => {
                let n = at(*n);
                lines[n].insert_str(0, text);
            }
        }
    }
    lines.join("\n")
}

fn load(text: &str) {
    let _ = Config::from_toml_str(
        text,
        Path::new("/nonexistent/gateway.toml"),
        LoadOptions {
            write_generated: false,
        },
    );
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn any_text_loads_or_is_refused_without_panic(text in "\\PC{0,200}") {
        load(&text);
    }

    #[test]
    fn any_edit_of_the_shipped_config_loads_or_is_refused_without_panic(
        edits in vec(edit(), 1..6),
    ) {
        load(&apply(SHIPPED, &edits));
    }
}

#[test]
fn the_shipped_config_loads_in_memory() {
    // The base of the mutations is itself valid, so they start deep in validation.
    let loaded = Config::from_toml_str(
        SHIPPED,
        Path::new("/nonexistent/gateway.toml"),
        LoadOptions {
            write_generated: false,
        },
    );
    assert!(loaded.is_ok(), "{:?}", loaded.err());
}
