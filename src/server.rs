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

use crate::admin::{self, Readiness};
use crate::config::{Config, Server};
use crate::gateway::Gateway;
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

/// Serves until `shutdown` resolves, then stops accepting, lets requests in flight finish
/// for up to `server.drain_timeout`, and returns.
pub async fn run(config: Arc<Config>, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let revocations = Arc::new(Revocations::new());
    let gateway = Arc::new(Gateway::new(config.clone(), revocations));
    let readiness = Arc::new(Readiness::default());
    let builder = Arc::new(http_builder(&config.server));
    let graceful = GracefulShutdown::new();
    let tls = config.server.tls.clone().map(TlsAcceptor::from);
    let handshake_timeout = config.server.tls_handshake_timeout;

    let admin = listeners
        .admin
        .map(|listener| tokio::spawn(serve_admin(listener, builder.clone(), readiness.clone())));
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

async fn serve_admin(listener: TcpListener, builder: Arc<Builder>, readiness: Arc<Readiness>) {
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
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = admin::handle(&req, &readiness);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
