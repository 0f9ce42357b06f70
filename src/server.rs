//! Sockets: the accept loops of the public and admin listeners, the TLS handshake (with a
//! timeout: hyper has none), HTTP/1.1 and HTTP/2 served by hyper's own connection
//! builders (the admin listener uses hyper-util's auto builder), config reloads, and the
//! graceful drain at shutdown.
//!
//! What one config makes — the request path ([`Gateway`]), the HTTP settings and the TLS
//! acceptor — is one immutable [`Snapshot`] behind an `ArcSwap`. A reload builds a new
//! snapshot and swaps it in: a request runs entirely on the snapshot current when it
//! started, and the next request on any connection sees the new one. What outlives configs
//! (revocations, store, limits, metrics, tunnels) is the [`Shared`] state.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::LoginLimits;
use crate::admin::{self, Admin, Readiness};
use crate::config::{Config, LoadOptions, Server};
use crate::framing;
use crate::gateway::{AccountsState, Gateway, Shared};
use crate::watched::{ReadWatcher, Watched};

use crate::passwords::Passwords;
use crate::proxy::Peer;

/// Pause after a failed `accept` (EMFILE and the like) so the loop does not spin while
/// the process is out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How often revocations made elsewhere (the command line, another replica) are read from
/// the store: the contract is "enforced within one second".
const REVOCATION_POLL: Duration = Duration::from_millis(250);
/// How often expired revocations, refresh tokens and idle rate-limit buckets are dropped.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

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

/// Everything one config makes for the listener; swapped whole on reload.
struct Snapshot {
    gateway: Arc<Gateway>,
    /// One builder per protocol: the protocol is known before hyper sees a byte (ALPN, or
    /// a bounded look at the first bytes), so nothing waits on a silent client unbounded.
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
}

impl Snapshot {
    fn new(config: Arc<Config>, shared: &Shared) -> Snapshot {
        let (http1, http2) = http_builders(&config.server);
        Snapshot {
            http1,
            http2,
            tls: config.server.tls.clone().map(TlsAcceptor::from),
            gateway: Arc::new(Gateway::new(config, shared)),
        }
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

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot set up password hashing: {0}")]
    Passwords(#[from] crate::passwords::PasswordError),
    #[error("a start-up task failed")]
    Task,
}

/// Opens the store, loads every revocation in force into the map, and prepares the
/// password hasher: the state every later config will share. Also returns the store's
/// revocation cursor, from which the follower goes on.
pub async fn open_shared(config: &Config) -> Result<(Shared, i64), StartError> {
    let mut shared = Shared::without_store();
    let Some(url) = config.store.clone() else {
        return Ok((shared, 0));
    };
    let (store, loaded, cursor, passwords) = tokio::task::spawn_blocking(move || {
        let store = crate::store::open(&url)?;
        let (loaded, cursor) = store.revocations_since(0)?;
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let passwords = Passwords::new(cores)?;
        Ok::<_, StartError>((store, loaded, cursor, passwords))
    })
    .await
    .map_err(|_| StartError::Task)??;
    for revocation in &loaded {
        shared.revocations.apply(revocation);
    }
    tracing::info!(revocations = shared.revocations.len(), "store opened");
    shared.accounts = Some(AccountsState {
        store,
        passwords,
        limits: Arc::new(LoginLimits::new(
            config.accounts.login_rate_per_ip,
            config.accounts.login_rate_per_user,
        )),
    });
    Ok((shared, cursor))
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
    let (shared, cursor) = open_shared(&config).await?;
    let current = Arc::new(ArcSwap::from_pointee(Snapshot::new(
        config.clone(),
        &shared,
    )));
    let follower = tokio::spawn(follow_store(current.clone(), shared.clone(), cursor));
    let reloader = reloads.map(|rx| tokio::spawn(reload(rx, current.clone(), shared.clone())));
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
    loop {
        // A connection slot first: at the cap, new connections wait in the accept queue.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
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
        let snapshot = current.load_full();
        let connection = Connection {
            current: current.clone(),
            stop: stop.clone(),
        };
        let gauge = shared.metrics.connection();
        let handshake_timeout = snapshot.gateway.config().server.tls_handshake_timeout;
        let head_timeout = snapshot.gateway.config().server.header_read_timeout;
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
                        let protocol = match stream.get_ref().1.alpn_protocol() {
                            Some(b"h2") => Protocol::Http2,
                            _ => Protocol::Http1,
                        };
                        connection
                            .serve(&snapshot, protocol, stream, Peer::new(addr, true))
                            .await;
                    }
                }
            }
        });
    }

    readiness.set(false);
    drop(listener);
    let drain = current.load().gateway.config().server.drain_timeout;
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

fn http_builders(server: &Server) -> (http1::Builder, http2::Builder<TokioExecutor>) {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_header_size(server.max_header_bytes)
        .max_headers(server.max_headers)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(server.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX));
    (h1, h2)
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
    current: Arc<ArcSwap<Snapshot>>,
    /// Cancelled at shutdown: finish the requests in flight, then close.
    stop: CancellationToken,
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
        // HTTP/1 requests are numbered as they arrive, to match the framing scanner's flags.
        let flags = Arc::new(framing::Flags::default());
        let numbered = (protocol == Protocol::Http1).then(|| flags.clone());
        let service = service_fn(move |mut req: Request<Incoming>| {
            if numbered.as_ref().is_some_and(|f| f.next_is_conflicting()) {
                req.extensions_mut().insert(framing::ConflictingFraming);
            }
            let gateway = current.load().gateway.clone();
            let peer = peer.clone();
            // Boxed, so hyper moves a pointer rather than the whole request future.
            Box::pin(async move { Ok::<_, Infallible>(gateway.handle(req, &peer).await) })
        });
        let head_timeout = snapshot.gateway.config().server.header_read_timeout;
        let result = match protocol {
            Protocol::Http1 => {
                let io = TokioIo::new(framing::Watched::new(stream, flags));
                let conn = snapshot.http1.serve_connection(io, service).with_upgrades();
                tokio::pin!(conn);
                tokio::select! {
                    result = conn.as_mut() => result,
                    () = self.stop.cancelled() => {
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

/// Reloads the config file at each signal: validated fully, then swapped in whole. A file
/// that does not load (or changes what only a restart can) leaves the old config serving.
async fn reload(
    mut signals: mpsc::Receiver<()>,
    current: Arc<ArcSwap<Snapshot>>,
    mut shared: Shared,
) {
    while signals.recv().await.is_some() {
        let old = current.load_full();
        let old_config = old.gateway.config();
        let path = old_config.file.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            Config::load(
                &path,
                LoadOptions {
                    write_generated: true,
                },
            )
        })
        .await;
        let config = match loaded {
            Ok(Ok(config)) => config,
            Ok(Err(errors)) => {
                for issue in &errors.0 {
                    tracing::error!("reload refused: {issue}");
                }
                shared.metrics.reload(false);
                continue;
            }
            Err(_) => {
                tracing::error!("reload failed: the loading task failed");
                shared.metrics.reload(false);
                continue;
            }
        };
        if let Err(why) = restart_only(old_config, &config) {
            tracing::error!(file = %config.file.display(), "reload refused: {why} needs a restart");
            shared.metrics.reload(false);
            continue;
        }
        if let Some(accounts) = shared.accounts.as_mut()
            && (config.accounts.login_rate_per_ip != old_config.accounts.login_rate_per_ip
                || config.accounts.login_rate_per_user != old_config.accounts.login_rate_per_user)
        {
            accounts.limits = Arc::new(LoginLimits::new(
                config.accounts.login_rate_per_ip,
                config.accounts.login_rate_per_user,
            ));
        }
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        current.store(Arc::new(Snapshot::new(Arc::new(config), &shared)));
        shared.metrics.reload(true);
        tracing::info!("config reloaded");
    }
}

/// What a running process cannot change: its sockets, its store, its runtime, whether it
/// speaks TLS.
fn restart_only(old: &Config, new: &Config) -> Result<(), &'static str> {
    if old.server.listen != new.server.listen {
        return Err("server.listen");
    }
    if old.admin.as_ref().map(|a| a.listen) != new.admin.as_ref().map(|a| a.listen) {
        return Err("admin.listen");
    }
    if old.store != new.store {
        return Err("store.url");
    }
    if old.server.tls.is_some() != new.server.tls.is_some() {
        return Err("turning TLS on or off");
    }
    if old.server.worker_threads != new.server.worker_threads {
        return Err("server.worker_threads");
    }
    if old.server.max_connections != new.server.max_connections {
        return Err("server.max_connections");
    }
    Ok(())
}

/// Keeps the revocation map in step with the store, and purges what has expired.
async fn follow_store(current: Arc<ArcSwap<Snapshot>>, shared: Shared, mut cursor: i64) {
    let Some(state) = shared.accounts else {
        return;
    };
    let mut poll = tokio::time::interval(REVOCATION_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_purge = tokio::time::Instant::now();
    loop {
        poll.tick().await;
        let store = state.store.clone();
        match tokio::task::spawn_blocking(move || store.revocations_since(cursor)).await {
            Ok(Ok((found, next))) => {
                for revocation in &found {
                    shared.revocations.apply(revocation);
                }
                cursor = next;
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot read revocations from the store"),
            Err(_) => tracing::warn!("the revocation reader failed"),
        }
        if last_purge.elapsed() >= PURGE_INTERVAL {
            last_purge = tokio::time::Instant::now();
            let snapshot = current.load_full();
            let tokens = &snapshot.gateway.config().tokens;
            let leeway = i64::try_from(tokens.leeway.as_secs()).unwrap_or(0);
            let access_ttl = i64::try_from(tokens.access_ttl.as_secs()).unwrap_or(0);
            let now = crate::credentials::now_secs();
            let horizon = now - access_ttl - leeway;
            shared.revocations.purge_expired(now, leeway, horizon);
            snapshot.gateway.forget_idle_limits();
            let store = state.store.clone();
            if let Ok(Err(error)) =
                tokio::task::spawn_blocking(move || store.purge(now - leeway, horizon)).await
            {
                tracing::warn!(%error, "cannot purge the store");
            }
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
