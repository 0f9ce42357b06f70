//! Sockets: the accept loops of the public and admin listeners, the TLS handshake (with a
//! timeout: hyper has none), HTTP/1.1 and HTTP/2 through hyper-util's auto builder, and the
//! graceful drain at shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::accounts::LoginLimits;
use crate::admin::{self, Readiness};
use crate::config::{Config, Server};
use crate::gateway::Gateway;
use crate::gateway::{AccountsState, Shared};
use crate::passwords::Passwords;
use crate::proxy::Peer;
use crate::revocation::Revocations;

/// Pause after a failed `accept` (EMFILE and the like) so the loop does not spin while
/// the process is out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

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

type Builder = auto::Builder<TokioExecutor>;

/// How often revocations made elsewhere (the command line, another replica) are read from
/// the store: the contract is "enforced within one second".
const REVOCATION_POLL: Duration = Duration::from_millis(250);
/// How often expired revocations, refresh tokens and idle rate-limit buckets are dropped.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

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
    let revocations = Arc::new(Revocations::new());
    let Some(url) = config.store.clone() else {
        return Ok((
            Shared {
                revocations,
                accounts: None,
            },
            0,
        ));
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
        revocations.apply(revocation);
    }
    tracing::info!(revocations = revocations.len(), "store opened");
    let limits = Arc::new(LoginLimits::new(
        config.accounts.login_rate_per_ip,
        config.accounts.login_rate_per_user,
    ));
    let accounts = AccountsState {
        store,
        passwords,
        limits,
    };
    Ok((
        Shared {
            revocations,
            accounts: Some(accounts),
        },
        cursor,
    ))
}

/// Keeps the revocation map in step with the store, and purges what has expired.
async fn follow_store(config: Arc<Config>, shared: Shared, mut cursor: i64) {
    let Some(state) = shared.accounts else {
        return;
    };
    let leeway = i64::try_from(config.tokens.leeway.as_secs()).unwrap_or(0);
    let access_ttl = i64::try_from(config.tokens.access_ttl.as_secs()).unwrap_or(0);
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
            let now = crate::credentials::now_secs();
            let horizon = now - access_ttl - leeway;
            shared.revocations.purge_expired(now, leeway, horizon);
            state.limits.forget_idle();
            let store = state.store.clone();
            if let Ok(Err(error)) =
                tokio::task::spawn_blocking(move || store.purge(now - leeway, horizon)).await
            {
                tracing::warn!(%error, "cannot purge the store");
            }
        }
    }
}

/// Serves until `shutdown` resolves, then stops accepting, lets requests in flight finish
/// for up to `server.drain_timeout`, and returns.
pub async fn run(
    config: Arc<Config>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let (shared, cursor) = open_shared(&config).await?;
    let gateway = Arc::new(Gateway::new(config.clone(), &shared));
    let follower = tokio::spawn(follow_store(config.clone(), shared.clone(), cursor));
    let readiness = Arc::new(Readiness::default());
    let builder = Arc::new(http_builder(&config.server));
    let graceful = GracefulShutdown::new();
    let tls = config.server.tls.clone().map(TlsAcceptor::from);
    let handshake_timeout = config.server.tls_handshake_timeout;

    let store = shared.accounts.as_ref().map(|a| a.store.clone());
    let admin = listeners.admin.map(|listener| {
        tokio::spawn(serve_admin(
            listener,
            builder.clone(),
            readiness.clone(),
            store,
        ))
    });
    readiness.set(true);

    let listener = listeners.public;
    tokio::pin!(shutdown);
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
        let connection = Connection {
            gateway: gateway.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match tls {
                None => {
                    connection
                        .serve(TokioIo::new(stream), Peer::new(addr, false))
                        .await
                }
                Some(acceptor) => {
                    if let Some(stream) =
                        handshake(&acceptor, stream, addr, handshake_timeout).await
                    {
                        connection
                            .serve(TokioIo::new(stream), Peer::new(addr, true))
                            .await;
                    }
                }
            }
        });
    }

    readiness.set(false);
    drop(listener);
    let drain = config.server.drain_timeout;
    tracing::info!(connections = graceful.count(), ?drain, "draining");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout passed; closing the remaining connections");
    }
    if let Some(admin) = admin {
        admin.abort();
    }
    follower.abort();
    Ok(())
}

fn http_builder(server: &Server) -> Builder {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(server.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX));
    builder
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
    gateway: Arc<Gateway>,
    builder: Arc<Builder>,
    watcher: Watcher,
}

impl Connection {
    async fn serve<I>(self, io: I, peer: Peer)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let gateway = self.gateway;
        let addr = peer.addr;
        let peer = Arc::new(peer);
        let service = service_fn(move |req| {
            let gateway = gateway.clone();
            let peer = peer.clone();
            async move { Ok::<_, Infallible>(gateway.handle(req, &peer).await) }
        });
        let conn = self.builder.serve_connection_with_upgrades(io, service);
        if let Err(error) = self.watcher.watch(conn.into_owned()).await {
            tracing::debug!(%addr, %error, "connection ended with an error");
        }
    }
}

async fn serve_admin(
    listener: TcpListener,
    builder: Arc<Builder>,
    readiness: Arc<Readiness>,
    store: Option<Arc<dyn crate::store::Store>>,
) {
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
        let readiness = readiness.clone();
        let store = store.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let readiness = readiness.clone();
                let store = store.clone();
                async move { Ok::<_, Infallible>(admin::handle(&req, &readiness, store).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
