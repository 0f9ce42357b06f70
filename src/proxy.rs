//! Forwarding to upstreams: the pooled clients (built once per config), the rewrite of the
//! request that leaves the gateway, streaming of bodies both ways, WebSocket tunnels, and
//! upstream failures as typed errors.
//!
//! Header hygiene runs in a fixed order, so a client cannot use one step against another:
//! 1. hop-by-hop headers go, and every header `Connection` names;
//! 2. every client copy of an identity header goes, whatever its case or `_`/`-` spelling;
//! 3. forwarding headers are rebuilt (a client's own are kept only from trusted proxies);
//! 4. `Authorization` goes unless `forward_authorization`;
//! 5. only then are the verified identity headers set.
//!
//! Steps 1 and 2 also run on public routes: the upstream must be able to trust that an
//! identity header always comes from the gateway.

mod pool;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version, uri};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio_util::task::TaskTracker;

use crate::body::{self, Body, BodyError, RequestBody};
use crate::config::{Config, UpstreamTarget};
use crate::echo;
use crate::error::Error;
use crate::headers;
use crate::jwt::{Claims, TokenError};
pub use pool::UpstreamBody;
use pool::{Pool, SendError};

/// Where a request came from, as the accepting socket saw it. Built once per connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
    /// The peer's address as an `X-Forwarded-For` value, rendered once per connection.
    pub forwarded_for: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr, tls: bool) -> Peer {
        let ip = addr.ip().to_canonical();
        Peer {
            addr: SocketAddr::new(ip, addr.port()),
            tls,
            forwarded_for: HeaderValue::from_str(&ip.to_string())
                .expect("an IP address is a valid header value"),
        }
    }
}

/// What the gateway decided about a request, as forwarding needs it.
#[derive(Debug)]
pub struct Forward<'a> {
    /// The normalized path the route was matched on, when it differs from the request's
    /// own spelling (`None`: the request's path is already canonical and goes as it is).
    pub normalized_path: Option<String>,
    pub upstream: usize,
    /// The verified identity headers (none on a public route).
    pub identity: &'a [(HeaderName, HeaderValue)],
    /// The route's body limit.
    pub max_body_bytes: u64,
    pub peer: &'a Peer,
    pub request_id: &'a HeaderValue,
}

/// The upstream clients and the header policy, built once per config.
#[derive(Debug)]
pub struct Proxy {
    upstreams: Vec<UpstreamClient>,
    identity: IdentityHeaders,
    trusted_proxies: Vec<IpNet>,
    body_idle_timeout: Duration,
    /// Tunnels outlive their request; the drain waits for them here.
    tasks: TaskTracker,
}

#[derive(Debug)]
struct UpstreamClient {
    name: String,
    kind: UpstreamKind,
    timeout: Duration,
}

#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per upstream, built once, never moved"
)]
enum UpstreamKind {
    Echo,
    Http { pool: Arc<Pool> },
}

#[derive(Debug)]
struct IdentityHeaders {
    user: HeaderName,
    claims: Vec<(HeaderName, String)>,
    /// Folded spellings of every identity header, for stripping client copies.
    folded: Vec<String>,
    forward_authorization: bool,
}

impl Proxy {
    pub fn new(config: &Config, tasks: TaskTracker) -> Proxy {
        let upstreams = config
            .upstreams
            .iter()
            .map(|up| UpstreamClient {
                name: up.name.clone(),
                timeout: up.timeout,
                kind: match &up.target {
                    UpstreamTarget::Echo => UpstreamKind::Echo,
                    UpstreamTarget::Http {
                        scheme,
                        authority,
                        tls,
                    } => UpstreamKind::Http {
                        pool: Arc::new(Pool::new(
                            connector(tls.as_deref(), up.connect_timeout),
                            Uri::builder()
                                .scheme(scheme.clone())
                                .authority(authority.clone())
                                .path_and_query("/")
                                .build()
                                .expect("a validated scheme and authority make a URI"),
                            up.idle_timeout,
                        )),
                    },
                },
            })
            .collect();
        let identity = &config.identity;
        Proxy {
            upstreams,
            identity: IdentityHeaders {
                user: identity.user_header.clone(),
                claims: identity.claim_headers.clone(),
                folded: identity
                    .header_names()
                    .map(|h| headers::fold(h.as_str()).into_owned())
                    .collect(),
                forward_authorization: identity.forward_authorization,
            },
            trusted_proxies: config.server.trusted_proxies.clone(),
            body_idle_timeout: config.server.body_idle_timeout,
            tasks,
        }
    }

    pub fn upstream_name(&self, index: usize) -> &str {
        self.upstreams.get(index).map_or("", |u| u.name.as_str())
    }

    /// The client's address: the peer's, or behind trusted proxies the nearest address in
    /// `X-Forwarded-For` that is not one of them (the only one that cannot be forged).
    pub fn client_ip(&self, headers: &HeaderMap, peer: &Peer) -> IpAddr {
        let peer_ip = peer.addr.ip();
        if !self.is_trusted(peer_ip) {
            return peer_ip;
        }
        let hops: Vec<&str> = headers
            .get_all(&headers::X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if self.is_trusted(ip) => continue,
                Ok(ip) => return ip,
                Err(_) => break,
            }
        }
        peer_ip
    }

    /// Whether the peer's own forwarding headers are believed.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// Every client header that must not reach the upstream, found in one pass:
    /// hop-by-hop headers and those `Connection` names, identity headers in any spelling
    /// (on every route, public ones too), the client's forwarding headers unless it is a
    /// trusted proxy, and `Authorization` unless the config forwards it.
    fn headers_to_drop(&self, headers: &HeaderMap, trusted: bool) -> Vec<HeaderName> {
        let named = connection_tokens(headers);
        headers
            .keys()
            .filter(|name| {
                let name = name.as_str();
                if is_hop_by_hop(name) || named.iter().any(|t| t.eq_ignore_ascii_case(name)) {
                    return true;
                }
                if name == "authorization" {
                    return !self.identity.forward_authorization;
                }
                let folded = headers::fold(name);
                self.identity.folded.iter().any(|f| *f == folded)
                    || (!trusted && headers::is_forwarding(&folded))
            })
            .cloned()
            .collect()
    }

    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        fwd: Forward<'_>,
    ) -> Result<Response<Body>, Error> {
        let upstream = self
            .upstreams
            .get(fwd.upstream)
            .ok_or(Error::Internal("route names an unknown upstream"))?;
        let upgrade = websocket_upgrade(&req);
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (mut parts, incoming) = req.into_parts();
        // A declared length over the limit is refused before anything is sent.
        if incoming.size_hint().lower() > fwd.max_body_bytes {
            return Err(Error::PayloadTooLarge);
        }
        let body = RequestBody::new(incoming, fwd.max_body_bytes, self.body_idle_timeout);

        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let trusted = self.is_trusted(fwd.peer.addr.ip());
        let forwarded_for = forwarded_for(&parts.headers, fwd.peer, trusted);
        for name in self.headers_to_drop(&parts.headers, trusted) {
            parts.headers.remove(name);
        }
        // What follows inserts up to a handful of headers: grow the map once.
        parts.headers.reserve(6 + self.identity.claims.len());
        // A trusted proxy's own X-Forwarded-Proto and -Host were kept; anyone else's dropped.
        parts
            .headers
            .insert(headers::X_FORWARDED_FOR.clone(), forwarded_for);
        if !parts.headers.contains_key(&headers::X_FORWARDED_PROTO) {
            let proto = if fwd.peer.tls { "https" } else { "http" };
            parts.headers.insert(
                headers::X_FORWARDED_PROTO.clone(),
                HeaderValue::from_static(proto),
            );
        }
        if let Some(host) = &host
            && !parts.headers.contains_key(&headers::X_FORWARDED_HOST)
        {
            parts
                .headers
                .insert(headers::X_FORWARDED_HOST.clone(), host.clone());
        }
        for (name, value) in fwd.identity {
            parts.headers.insert(name.clone(), value.clone());
        }
        if let Some(protocol) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, protocol.clone());
        }
        parts
            .headers
            .insert(headers::X_REQUEST_ID.clone(), fwd.request_id.clone());
        parts.version = Version::HTTP_11;
        let unforwardable = || Error::BadRequest("the request target cannot be forwarded");
        let path_and_query = match &fwd.normalized_path {
            None => parts
                .uri
                .path_and_query()
                .cloned()
                .ok_or_else(unforwardable)?,
            Some(path) => uri::PathAndQuery::try_from(match parts.uri.query() {
                Some(query) => format!("{path}?{query}"),
                None => path.clone(),
            })
            .map_err(|_| unforwardable())?,
        };

        let pool = match &upstream.kind {
            UpstreamKind::Echo => {
                parts.uri = Uri::from(path_and_query);
                return echo::respond(Request::from_parts(parts, body))
                    .await
                    .map_err(body_error);
            }
            UpstreamKind::Http { pool } => pool,
        };
        // Origin form, as HTTP/1.1 sends it; the pool adds the authority for HTTP/2.
        parts.uri = Uri::from(path_and_query);
        if let Some(host) = host
            && !parts.headers.contains_key(header::HOST)
        {
            // For HTTP/2 clients: their `:authority`, as HTTP/1.1 upstreams expect in Host.
            parts.headers.insert(header::HOST, host);
        }

        let sent = pool.send(Request::from_parts(parts, body));
        let (mut response, lease) = match tokio::time::timeout(upstream.timeout, sent).await {
            Err(_) => {
                return Err(Error::UpstreamTimeout {
                    upstream: upstream.name.clone(),
                });
            }
            Ok(Err(failure)) => return Err(upstream_error(&upstream.name, failure)),
            Ok(Ok(answer)) => answer,
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            // The connection becomes the tunnel: it does not go back to the pool.
            drop(lease);
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            self.tasks.spawn(tunnel(client_upgrade, upstream_upgrade));
            return Ok(response.map(|b| body::stream(UpstreamBody::new(b, None))));
        }
        for name in hop_by_hop(response.headers()) {
            response.headers_mut().remove(name);
        }
        Ok(response.map(|b| body::stream(UpstreamBody::new(b, lease))))
    }

    /// The identity headers a verified token makes, built once per token (the verified-token
    /// cache keeps them). A claim that cannot be a header value refuses the request:
    /// forwarding it without its identity would be worse.
    pub fn identity_headers(
        &self,
        claims: &Claims,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
        let unforwardable = || Error::InvalidToken(TokenError::UnforwardableClaim);
        let mut headers = Vec::with_capacity(1 + self.identity.claims.len());
        let user = HeaderValue::from_str(&claims.sub).map_err(|_| unforwardable())?;
        headers.push((self.identity.user.clone(), user));
        for (name, claim) in &self.identity.claims {
            // An absent claim, or an empty list, sets no header.
            if let Some(text) = claims.header_text(claim).filter(|t| !t.is_empty()) {
                let value = HeaderValue::from_str(&text).map_err(|_| unforwardable())?;
                headers.push((name.clone(), value));
            }
        }
        Ok(headers)
    }
}

/// The connector of one upstream: TCP with its connect timeout, TLS for https (offering
/// HTTP/2 and HTTP/1.1 by ALPN).
fn connector(
    tls: Option<&rustls::ClientConfig>,
    connect_timeout: Duration,
) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    // Idle pooled connections whose peer vanished are found by the kernel, not kept forever.
    http.set_keepalive(Some(Duration::from_secs(60)));
    let tls = tls
        .cloned()
        .unwrap_or_else(crate::tls::client_config_without_roots);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http)
}

/// The `Upgrade` value of an HTTP/1.1 WebSocket handshake, if this is one.
fn websocket_upgrade<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let upgrade = req.headers().get(header::UPGRADE)?;
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    (connection_upgrade && upgrade.as_bytes().eq_ignore_ascii_case(b"websocket"))
        .then(|| upgrade.clone())
}

/// The client's own body failure inside an upstream error, if that is what it was.
fn find_body_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(body) = e.downcast_ref::<BodyError>() {
            return Some(body);
        }
        cause = e.source();
    }
    None
}

fn body_error(error: BodyError) -> Error {
    match error {
        BodyError::TooLarge => Error::PayloadTooLarge,
        BodyError::Idle => Error::RequestTimeout,
        BodyError::Client(_) => Error::BadRequest("the request body could not be read"),
    }
}

/// What an upstream failure was: the client's body (its fault), or the upstream's.
fn upstream_error(upstream: &str, failure: SendError) -> Error {
    if let Some(body) = find_body_error(&failure) {
        return match body {
            BodyError::TooLarge => Error::PayloadTooLarge,
            BodyError::Idle => Error::RequestTimeout,
            BodyError::Client(_) => Error::BadRequest("the request body could not be read"),
        };
    }
    match failure {
        SendError::Connect(source) => Error::UpstreamUnreachable {
            upstream: upstream.to_owned(),
            source,
        },
        SendError::Failed(source) => Error::UpstreamFailed {
            upstream: upstream.to_owned(),
            source,
        },
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, not the message.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The header names listed in `Connection`, which are hop-by-hop too.
fn connection_tokens(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

/// The hop-by-hop headers of a message, including every header `Connection` names.
fn hop_by_hop(headers: &HeaderMap) -> Vec<HeaderName> {
    let named = connection_tokens(headers);
    headers
        .keys()
        .filter(|name| {
            is_hop_by_hop(name.as_str())
                || named.iter().any(|t| t.eq_ignore_ascii_case(name.as_str()))
        })
        .cloned()
        .collect()
}

/// `X-Forwarded-For` as the upstream gets it: a trusted proxy's chain with the peer
/// appended, or the peer alone.
fn forwarded_for(headers: &HeaderMap, peer: &Peer, trusted: bool) -> HeaderValue {
    if trusted {
        let chain: Vec<&str> = headers
            .get_all(&headers::X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !chain.is_empty() {
            let text = format!("{}, {}", chain.join(", "), peer.addr.ip());
            if let Ok(value) = HeaderValue::from_str(&text) {
                return value;
            }
        }
    }
    peer.forwarded_for.clone()
}

/// Copies bytes both ways between the client's and the upstream's upgraded connections
/// until either side closes.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
        tracing::debug!("an upgrade was abandoned before both sides switched protocols");
        return;
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "tunnel closed with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Auth-User, x-custom"),
        );
        h.insert("x-auth-user", HeaderValue::from_static("mallory"));
        h.insert("x-custom", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let mut dropped: Vec<String> = hop_by_hop(&h).iter().map(|n| n.to_string()).collect();
        dropped.sort();
        assert_eq!(
            dropped,
            vec!["connection", "transfer-encoding", "x-auth-user", "x-custom"]
        );
    }

    #[test]
    fn websocket_upgrade_needs_both_headers() {
        let req = Request::builder()
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .expect("request");
        assert!(websocket_upgrade(&req).is_some());
        let req = Request::builder()
            .header("upgrade", "websocket")
            .body(())
            .expect("request");
        assert!(websocket_upgrade(&req).is_none());
    }
}
