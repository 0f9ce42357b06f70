//! One upstream's connections: a small pool over hyper's connection API.
//!
//! HTTP/1.1 connections wait in a last-in-first-out stack, so the warmest one is reused
//! and the coldest expire: every return and every checkout closes, from the cold end,
//! those idle longer than the upstream's `idle_timeout`. A connection goes back to the
//! stack when its response body has been read to the end (a body dropped half-read takes
//! its connection with it).
//! An https upstream that offers HTTP/2 by ALPN gets one shared, multiplexed connection,
//! kept honest by pings: a connection that stops answering them is closed and replaced.
//! Until the upstream is known to speak only HTTP/1.1, dialing is one at a time, so a
//! burst on a cold pool (or after the shared connection died) makes one handshake.
//!
//! A request is tried a second time only when it was never sent: when connecting failed,
//! or when the pooled connection turned out closed before it took the request (hyper hands
//! the request back). Nothing that may have reached the upstream is sent twice.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service as _;

use crate::request_body::RequestBody;

/// Idle connections kept per upstream; more are closed when they come back.
const MAX_IDLE: usize = 1024;
/// How long a returned connection may take to be ready for its next request.
const READY_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 pings: how often, and how long an answer may take before the connection is
/// given up (a silently dropped connection would otherwise hold every request until the
/// upstream timeout, for as long as the kernel keeps the socket).
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("connecting failed: {0}")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the request failed: {0}")]
    Failed(#[source] hyper::Error),
}

enum Sender {
    H1(http1::SendRequest<RequestBody>),
    H2(http2::SendRequest<RequestBody>),
}

struct Idle {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

pub(crate) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority` of the upstream, what the connector dials.
    target: Uri,
    /// Oldest first: checkout takes from the back, expiry trims the front.
    idle: Mutex<VecDeque<Idle>>,
    idle_timeout: Duration,
    h2: Mutex<Option<http2::SendRequest<RequestBody>>>,
    /// Held while dialing an upstream that may offer HTTP/2.
    dialing: tokio::sync::Mutex<()>,
    /// Plain http, or ALPN chose HTTP/1.1: connections are never shared, dials run at once.
    h1_only: AtomicBool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// An HTTP/1.1 connection lent to one response, returned when its body is done.
#[derive(Debug)]
pub(crate) struct Lease {
    pool: Arc<Pool>,
    sender: http1::SendRequest<RequestBody>,
}

impl Lease {
    pub(crate) fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        // One clock read serves the expiry and the return time.
        let now = Instant::now();
        let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        expire(&mut idle, self.pool.idle_timeout, now);
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle {
                sender: self.sender,
                since: now,
            });
        }
    }
}

/// Closes the idle connections that waited too long or were closed by the upstream, from
/// the cold end (the stack is ordered by return time).
fn expire(idle: &mut VecDeque<Idle>, timeout: Duration, now: Instant) {
    while idle.front().is_some_and(|oldest| {
        now.saturating_duration_since(oldest.since) > timeout || oldest.sender.is_closed()
    }) {
        idle.pop_front();
    }
}

impl Pool {
    pub(crate) fn new(
        connector: HttpsConnector<HttpConnector>,
        target: Uri,
        idle_timeout: Duration,
    ) -> Pool {
        Pool {
            connector,
            idle: Mutex::new(VecDeque::new()),
            idle_timeout,
            h2: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
            h1_only: AtomicBool::new(target.scheme() != Some(&http::uri::Scheme::HTTPS)),
            target,
        }
    }

    /// Sends `req` (whose URI is already the upstream's) and returns the response head,
    /// with the lease of its HTTP/1.1 connection when there is one to return.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Option<Lease>), SendError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let sender = match self.checkout().await {
                Some(sender) => sender,
                // Boxed: the handshake futures are kilobytes, and every request's future
                // would carry (and hyper move) that space for the rare request that dials.
                None => match Box::pin(self.dial()).await {
                    Ok(sender) => sender,
                    // Nothing was sent: one more try is safe for any request.
                    Err(_) if tries == 1 => continue,
                    Err(e) => return Err(e),
                },
            };
            let (result, lease) = match sender {
                Sender::H1(mut sender) => {
                    let result = sender.try_send_request(req).await;
                    (result, Some(sender))
                }
                Sender::H2(mut sender) => {
                    let result = sender.try_send_request(self.to_h2(req)).await;
                    (result, None)
                }
            };
            match result {
                Ok(response) => {
                    let lease = lease.map(|sender| Lease {
                        pool: self.clone(),
                        sender,
                    });
                    return Ok((response, lease));
                }
                Err(mut failed) => match failed.take_message() {
                    // Handed back unsent: the connection was closing. Try a fresh one.
                    Some(unsent) if tries == 1 => req = from_h2(unsent),
                    _ => return Err(SendError::Failed(failed.into_error())),
                },
            }
        }
    }

    /// The request as HTTP/2 carries it: scheme and authority in the URI. The authority is
    /// the client's (its Host), as an HTTP/1.1 upstream gets it, and the Host header goes:
    /// RFC 9113 §8.3.1 forbids a Host that differs from `:authority`.
    fn to_h2(&self, mut req: Request<RequestBody>) -> Request<RequestBody> {
        let mut parts = self.target.clone().into_parts();
        if let Some(host) = req.headers_mut().remove(http::header::HOST) {
            match Authority::try_from(host.as_bytes()) {
                // `:authority` never carries userinfo (RFC 9113 §8.3.1).
                Ok(authority) if !authority.as_str().contains('@') => {
                    parts.authority = Some(authority);
                }
                // Not an authority: left as a header for the upstream to judge.
                _ => {
                    req.headers_mut().insert(http::header::HOST, host);
                }
            }
        }
        parts.path_and_query = req.uri().path_and_query().cloned();
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        *req.version_mut() = http::Version::HTTP_2;
        req
    }

    /// The shared HTTP/2 connection, if there is a live one.
    fn shared_h2(&self) -> Option<Sender> {
        self.h2
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|h2| !h2.is_closed())
            .map(|h2| Sender::H2(h2.clone()))
    }

    /// A connection ready for a request, if the pool has one.
    async fn checkout(&self) -> Option<Sender> {
        if let Some(h2) = self.shared_h2() {
            return Some(h2);
        }
        loop {
            // After the expiry from the cold end, the warm end has not waited too long.
            let Idle { mut sender, .. } = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                expire(&mut idle, self.idle_timeout, Instant::now());
                idle.pop_back()?
            };
            if sender.is_closed() {
                continue;
            }
            if sender.is_ready() {
                return Some(Sender::H1(sender));
            }
            // Returned at the end of its last body: ready a moment later.
            if let Ok(Ok(())) = tokio::time::timeout(READY_TIMEOUT, sender.ready()).await {
                return Some(Sender::H1(sender));
            }
        }
    }

    /// A new connection; one dial at a time until the upstream is known to speak only
    /// HTTP/1.1, and a dial that waited uses the HTTP/2 connection the one before made.
    async fn dial(&self) -> Result<Sender, SendError> {
        if self.h1_only.load(Ordering::Relaxed) {
            return self.connect().await;
        }
        let one_at_a_time = self.dialing.lock().await;
        if let Some(h2) = self.shared_h2() {
            return Ok(h2);
        }
        if self.h1_only.load(Ordering::Relaxed) {
            drop(one_at_a_time);
        }
        self.connect().await
    }

    /// A new connection, HTTP/2 when the upstream chose it by ALPN.
    async fn connect(&self) -> Result<Sender, SendError> {
        let io = self
            .connector
            .clone()
            .call(self.target.clone())
            .await
            .map_err(SendError::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(H2_PING_INTERVAL)
                .keep_alive_timeout(H2_PING_TIMEOUT)
                .keep_alive_while_idle(true)
                .handshake(io)
                .await
                .map_err(|e| SendError::Connect(Box::new(e)))?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "upstream HTTP/2 connection ended");
                }
            });
            *self.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
            return Ok(Sender::H2(sender));
        }
        self.h1_only.store(true, Ordering::Relaxed);
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        Ok(Sender::H1(sender))
    }
}

/// Undoes [`Pool::to_h2`] for a request handed back unsent, which may go out next on an
/// HTTP/1.1 connection.
fn from_h2(mut req: Request<RequestBody>) -> Request<RequestBody> {
    if req.version() != http::Version::HTTP_2 {
        return req;
    }
    if let Some(authority) = req.uri().authority()
        && !req.headers().contains_key(http::header::HOST)
        && let Ok(host) = http::HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(http::header::HOST, host);
    }
    if let Some(path) = req.uri().path_and_query().cloned() {
        *req.uri_mut() = Uri::from(path);
    }
    *req.version_mut() = http::Version::HTTP_11;
    req
}

/// An upstream response body on its way to the client; at its end, the connection goes
/// back to the pool.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl UpstreamBody {
    pub(crate) fn new(inner: Incoming, lease: Option<Lease>) -> UpstreamBody {
        UpstreamBody { inner, lease }
    }

    fn release_if_done(&mut self) {
        if http_body::Body::is_end_stream(&self.inner)
            && let Some(lease) = self.lease.take()
        {
            lease.release();
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) => {
                if let Some(lease) = this.lease.take() {
                    lease.release();
                }
            }
            std::task::Poll::Ready(Some(Ok(_))) => this.release_if_done(),
            // An error: the connection is not reused.
            std::task::Poll::Ready(Some(Err(_))) => this.lease = None,
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    /// A body that was complete but not polled to its end (an empty body, or one whose
    /// length the server already wrote) still returns its connection.
    fn drop(&mut self) {
        self.release_if_done();
    }
}
