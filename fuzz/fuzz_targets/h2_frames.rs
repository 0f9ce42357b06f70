//! HTTP/2 frames from a client: after the connection preface, arbitrary bytes go to hyper's
//! HTTP/2 server, with the gateway's settings, serving a trivial service. The server never
//! panics (in the connection or in a stream's task: libFuzzer's panic hook aborts on
//! either), and every input is done within a bounded time.
#![no_main]

use std::convert::Infallible;
use std::time::Duration;

use authgate::config::{DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_HEADER_BYTES};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Virtual time (the clock is paused and jumps when all is idle), so an input that leaves
/// the connection waiting costs no real time.
const LIMIT: Duration = Duration::from_secs(60);

fuzz_target!(|data: &[u8]| {
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
        // As the gateway builds it (src/state.rs), with the default limits.
        let mut builder = http2::Builder::new(TokioExecutor::new());
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
                let _ = writer.write_all(PREFACE).await;
                let _ = writer.write_all(data).await;
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
        let _ = tokio::time::timeout(LIMIT, async { tokio::join!(conn, client) }).await;
    });
});
