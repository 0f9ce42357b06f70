//! Sockets: the accept loops of the public and admin listeners, the connection cap, the
//! TLS handshake (with a timeout: hyper has none), protocol detection, HTTP/1.1 and HTTP/2
//! served by hyper's own connection builders (the admin listener uses hyper-util's auto
//! builder), and the graceful drain at shutdown. Each request goes to the gateway of the
//! snapshot current when it arrives (`state`).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, TryAcquireError, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::activity::{BusyBody, Connections, Tracked};
use crate::admin::{self, Admin, Readiness};
use crate::config::Config;
use crate::framing;
use crate::peer::Peer;
use crate::shared::{Shared, StartError};
use crate::state::{self, Current, Snapshot};
use crate::watched::{ReadWatcher, Watched};

/// Pause after a failed `accept` (EMFILE and the like) so the loop does not spin while
/// the process is out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How long an idle HTTP/2 connection has to acknowledge its GOAWAY (h2 waits for a ping's
/// answer before the last one): nothing is in flight, so a second is plenty.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// The bound sockets `run` serves. Bound by the caller so tests can use port 0 and read
/// the address back.
#[derive(Debug)]
pub struct Listeners {
    pub public: TcpListener,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(config: &Config) -> io::Result<Listeners> {
        let public = TcpListener::bind(config.server.listen).await?;
        let admin = match &config.admin {
            Some(admin) => Some(TcpListener::bind(admin.listen).await?),
            None => None,
        };
        Ok(Listeners { public, admin })
    }
}

/// The HTTP version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// What every HTTP/2 connection opens with (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol of a plain-text connection, from its first bytes: the HTTP/2 preface, or
/// anything else (HTTP/1). `None` when the client closes or stays silent past `limit`.
async fn sniff_protocol(stream: &TcpStream, limit: Duration) -> Option<Protocol> {
    let look = async {
        let mut buf = [0u8; 24];
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if buf[..n] != H2_PREFACE[..n] {
                return Some(Protocol::Http1);
            }
            if n == H2_PREFACE.len() {
                return Some(Protocol::Http2);
            }
            // A prefix of the preface: wait for more (rare, so a short sleep will do).
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(limit, look).await.ok().flatten()
}

/// Serves until `shutdown` resolves, then stops accepting, lets requests in flight (and
/// WebSocket tunnels) finish for up to `server.drain_timeout`, and returns.
pub async fn run(
    config: Arc<Config>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    serve(config, listeners, shutdown, None).await
}

/// [`run`], and a reload of the config file each time `reloads` receives.
pub async fn serve(
    config: Arc<Config>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    reloads: Option<mpsc::Receiver<()>>,
) -> Result<(), StartError> {
    raise_descriptor_limit(config.server.max_connections);
    let (shared, cursor) = Shared::open(&config).await?;
    let current: Current = Arc::new(ArcSwap::from_pointee(Snapshot::new(
        config.clone(),
        &shared,
    )));
    let follower = tokio::spawn(state::follow_store(current.clone(), shared.clone(), cursor));
    let reloader =
        reloads.map(|rx| tokio::spawn(state::reload(rx, current.clone(), shared.clone())));
    let readiness = Arc::new(Readiness::default());
    let admin = listeners.admin.map(|listener| {
        let state = Arc::new(Admin {
            readiness: readiness.clone(),
            store: shared.accounts.as_ref().map(|a| a.store.clone()),
            metrics: shared.metrics.clone(),
            revocations: shared.revocations.clone(),
        });
        tokio::spawn(serve_admin(listener, state))
    });
    // Cancelled at shutdown: every connection then finishes its requests and closes.
    let stop = CancellationToken::new();
    let open = TaskTracker::new();
    let connections = Arc::new(Semaphore::new(config.server.max_connections));
    readiness.set(true);

    let listener = listeners.public;
    tokio::pin!(shutdown);
    let tracker = Connections::new();
    loop {
        let (stream, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // A connection slot: at the cap, the connection idle the longest makes room, and
        // without one the new client waits (and the ones behind it, in the accept queue).
        let permit = match connections.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => {
                tracker.evict_idle();
                tokio::select! {
                    () = &mut shutdown => break,
                    permit = connections.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                }
            }
        };
        let snapshot = current.load_full();
        let connection = Connection {
            current: current.clone(),
            stop: stop.clone(),
            tracked: tracker.track(),
        };
        let gauge = shared.metrics.connection();
        let handshake_timeout = snapshot.config().server.tls_handshake_timeout;
        let head_timeout = snapshot.config().server.header_read_timeout;
        open.spawn(async move {
            let _held = (permit, gauge);
            let _ = stream.set_nodelay(true);
            match snapshot.tls.clone() {
                None => {
                    let Some(protocol) = sniff_protocol(&stream, head_timeout).await else {
                        return;
                    };
                    connection
                        .serve(&snapshot, protocol, stream, Peer::new(addr, false))
                        .await;
                }
                Some(acceptor) => {
                    if let Some(stream) =
                        handshake(&acceptor, stream, addr, handshake_timeout).await
                    {
                        let tls = stream.get_ref().1;
                        let protocol = match tls.alpn_protocol() {
                            Some(b"h2") => Protocol::Http2,
                            _ => Protocol::Http1,
                        };
                        // A verified certificate that cannot be read names no caller:
                        // closed, as a certificate that does not verify is.
                        let peer = match Peer::tls(addr, tls.peer_certificates()) {
                            Ok(peer) => peer,
                            Err(error) => {
                                tracing::debug!(%addr, %error, "client certificate refused");
                                return;
                            }
                        };
                        connection.serve(&snapshot, protocol, stream, peer).await;
                    }
                }
            }
        });
    }

    readiness.set(false);
    drop(listener);
    let drain = current.load().config().server.drain_timeout;
    tracing::info!(connections = open.len(), ?drain, "draining");
    stop.cancel();
    open.close();
    shared.tasks.close();
    let drained = tokio::time::timeout(drain, async {
        open.wait().await;
        shared.tasks.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("drain timeout passed; closing the remaining connections");
    }
    if let Some(admin) = admin {
        admin.abort();
    }
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    follower.abort();
    Ok(())
}

/// Every client connection needs a descriptor (upstream connections are pooled, and far
/// fewer): take the hard limit when the soft one is below what `max_connections` needs.
fn raise_descriptor_limit(max_connections: usize) {
    let wanted = u64::try_from(max_connections.saturating_add(1024)).unwrap_or(u64::MAX);
    match rlimit::increase_nofile_limit(wanted) {
        Ok(got) if got < wanted => tracing::warn!(
            limit = got,
            wanted,
            "the open-file limit is below what max_connections needs"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read or raise the open-file limit"),
    }
}

async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    addr: SocketAddr,
    limit: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%addr, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%addr, "TLS handshake timed out");
            None
        }
    }
}

/// What one accepted connection needs to serve HTTP.
struct Connection {
    current: Current,
    /// Cancelled at shutdown: finish the requests in flight, then close.
    stop: CancellationToken,
    tracked: Tracked,
}

impl Connection {
    /// Serves with the HTTP settings of the snapshot current at accept; each request runs
    /// on the snapshot current when it arrives.
    async fn serve<S>(self, snapshot: &Snapshot, protocol: Protocol, stream: S, peer: Peer)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let current = self.current;
        let addr = peer.addr;
        let peer = Arc::new(peer);
        let activity = self.tracked.activity().clone();
        // HTTP/1 requests are numbered as they arrive, to match the framing scanner's flags.
        let flags = Arc::new(framing::Flags::default());
        let numbered = (protocol == Protocol::Http1).then(|| flags.clone());
        let service = service_fn(move |mut req: Request<Incoming>| {
            let busy = activity.busy();
            if numbered.as_ref().is_some_and(|f| f.next_is_conflicting()) {
                req.extensions_mut().insert(framing::ConflictingFraming);
            }
            let gateway = current.load().gateway.clone();
            let peer = peer.clone();
            let numbered = numbered.clone();
            // Boxed, so hyper moves a pointer rather than the whole request future.
            Box::pin(async move {
                let response = gateway.handle(req, &peer).await;
                if response.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(flags) = &numbered
                {
                    // What follows on the wire is the tunnel's, not HTTP.
                    flags.upgraded();
                }
                Ok::<_, Infallible>(response.map(|body| BusyBody::new(body, busy)))
            })
        });
        let head_timeout = snapshot.config().server.header_read_timeout;
        let activity = self.tracked.activity();
        let result = match protocol {
            Protocol::Http1 => {
                let io = TokioIo::new(framing::Watched::new(stream, flags));
                let conn = snapshot.http1.serve_connection(io, service).with_upgrades();
                tokio::pin!(conn);
                // An idle HTTP/1 connection is closed by hyper's header timer.
                tokio::select! {
                    result = conn.as_mut() => result,
                    () = self.stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                    () = activity.evicted() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                }
            }
            Protocol::Http2 => {
                let io = TokioIo::new(Watched::with(stream, PrefaceDeadline::new(head_timeout)));
                let conn = snapshot.http2.serve_connection(io, service);
                tokio::pin!(conn);
                tokio::select! {
                    result = conn.as_mut() => result,
                    () = self.stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                    // Nothing in flight for header_read_timeout (or its slot is needed):
                    // GOAWAY, and a client that does not answer its ping is cut off.
                    () = activity.idle_for(head_timeout) => {
                        conn.as_mut().graceful_shutdown();
                        tokio::time::timeout(IDLE_CLOSE_GRACE, conn).await.unwrap_or(Ok(()))
                    }
                }
            }
        };
        if let Err(error) = result {
            tracing::debug!(%addr, %error, "connection ended with an error");
        }
    }
}

/// A deadline on an HTTP/2 connection's 24-byte preface, which hyper would otherwise wait
/// for forever. (HTTP/1 needs none: hyper's header timer runs from the connection's first
/// moment.)
struct PrefaceDeadline {
    /// Bytes still expected before the deadline, and the deadline; `None` once met.
    pending: Option<(usize, Pin<Box<tokio::time::Sleep>>)>,
}

impl PrefaceDeadline {
    fn new(limit: Duration) -> PrefaceDeadline {
        PrefaceDeadline {
            pending: Some((H2_PREFACE.len(), Box::pin(tokio::time::sleep(limit)))),
        }
    }
}

impl ReadWatcher for PrefaceDeadline {
    fn after_read(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<()>>,
        read: &[u8],
    ) -> Poll<io::Result<()>> {
        let Some((needed, timer)) = self.pending.as_mut() else {
            return polled;
        };
        match polled {
            Poll::Ready(Ok(())) => {
                *needed = needed.saturating_sub(read.len());
                if *needed == 0 || read.is_empty() {
                    self.pending = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not open the connection in time",
                ))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

async fn serve_admin(listener: TcpListener, state: Arc<Admin>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let builder = builder.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(admin::handle(&req, &state).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
