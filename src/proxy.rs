//! Forwarding to upstreams: the clients (built once per config, over `pool`), the rewrite
//! of the request that leaves the gateway and its header hygiene, streaming of bodies both
//! ways, WebSocket tunnels, and upstream failures as typed errors.
//!
//! Header hygiene runs in a fixed order, so a client cannot use one step against another:
//! 1. hop-by-hop headers go, and every header `Connection` names;
//! 2. every client copy of an identity header goes, whatever its case or `_`/`-` spelling;
//! 3. forwarding headers are rebuilt (a client's own are kept only from trusted proxies);
//!    `X-Forwarded-Client-Cert` goes from everyone, trusted proxies too;
//! 4. `Authorization` goes unless `forward_authorization`;
//! 5. only then are the verified identity headers set, and `X-Forwarded-Client-Cert` for
//!    a connection with a verified client certificate (on every route, as Envoy's
//!    `SANITIZE_SET`).
//!
//! Steps 1 to 3 also run on public routes: the upstream must be able to trust that an
//! identity header or a certificate's details always come from the gateway.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version, uri};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;

use crate::auth::{Authenticator, Caller, Grant, IdentityHeaders};
use crate::body::{self, Body};
use crate::config::{Config, UpstreamTarget};
use crate::echo;
use crate::error::Error;
use crate::headers;
use crate::peer::{self, Peer};
use crate::pool::{Pool, SendError, UpstreamBody};
use crate::request_body::{BodyError, RequestBody};

/// What the gateway decided about a request, as forwarding needs it.
#[derive(Debug)]
pub(crate) struct Forward<'a> {
    /// The normalized path the route was matched on, when it differs from the request's
    /// own spelling (`None`: the request's path is already canonical and goes as it is).
    pub(crate) normalized_path: Option<String>,
    pub(crate) upstream: usize,
    /// The verified caller (none on a public route): its identity headers go upstream,
    /// and a tunnel it opens lives only while its token stands.
    pub(crate) caller: Option<&'a Arc<Caller>>,
    pub(crate) auth: &'a Authenticator,
    /// Whether the route lets a WebSocket upgrade open a tunnel.
    pub(crate) websocket: bool,
    /// The route's body limit.
    pub(crate) max_body_bytes: u64,
    pub(crate) peer: &'a Peer,
    /// Whether the peer is a trusted proxy, whose forwarding headers are kept.
    pub(crate) trusted: bool,
    pub(crate) request_id: &'a HeaderValue,
}

/// The upstream clients and the header policy, built once per config.
#[derive(Debug)]
pub(crate) struct Proxy {
    upstreams: Vec<UpstreamClient>,
    /// Whose client copies are removed, in every spelling.
    identity: IdentityHeaders,
    forward_authorization: bool,
    /// Whether the gateway's session cookies are removed (`[browser]` on).
    session_cookies: bool,
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

impl Proxy {
    pub(crate) fn new(config: &Config, tasks: TaskTracker) -> Proxy {
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
        Proxy {
            upstreams,
            identity: IdentityHeaders::new(&config.identity),
            forward_authorization: config.identity.forward_authorization,
            session_cookies: config.browser.is_some(),
            body_idle_timeout: config.server.body_idle_timeout,
            tasks,
        }
    }

    pub(crate) fn upstream_name(&self, index: usize) -> &str {
        self.upstreams.get(index).map_or("", |u| u.name.as_str())
    }

    /// Every client header that must not reach the upstream, found in one pass:
    /// hop-by-hop headers and those `Connection` names, identity headers in any spelling
    /// (on every route, public ones too), `X-Forwarded-Client-Cert` in any spelling, the
    /// client's other forwarding headers unless it is a trusted proxy, and the credential
    /// headers (`Authorization`, `X-API-Key`) unless the config forwards them.
    fn headers_to_drop(&self, headers: &HeaderMap, trusted: bool) -> Vec<HeaderName> {
        let named = connection_tokens(headers);
        headers
            .keys()
            .filter(|name| {
                let name = name.as_str();
                if is_hop_by_hop(name) || named.iter().any(|t| t.eq_ignore_ascii_case(name)) {
                    return true;
                }
                if name == "authorization" || name == "x-api-key" {
                    return !self.forward_authorization;
                }
                let folded = headers::fold(name);
                self.identity.is_identity(&folded)
                    // The gateway vouches for a certificate only it verified, whoever sent it.
                    || folded == headers::X_FORWARDED_CLIENT_CERT.as_str()
                    || (!trusted && headers::is_forwarding(&folded))
            })
            .cloned()
            .collect()
    }

    pub(crate) async fn forward(
        &self,
        mut req: Request<Incoming>,
        fwd: Forward<'_>,
    ) -> Result<Response<Body>, Error> {
        let upstream = self
            .upstreams
            .get(fwd.upstream)
            .ok_or(Error::Internal("route names an unknown upstream"))?;
        let upgrade = websocket_upgrade(&req);
        let accept_key = match &upgrade {
            None => None,
            Some(_) if !fwd.websocket => {
                return Err(Error::BadRequest(
                    "this route does not take WebSocket upgrades",
                ));
            }
            Some(_) => Some(websocket_accept(&req).ok_or(Error::BadRequest(
                "the WebSocket handshake needs a Sec-WebSocket-Key of 16 bytes in base64",
            ))?),
        };
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (mut parts, incoming) = req.into_parts();
        // A declared length over the limit is refused before anything is sent.
        if incoming.size_hint().lower() > fwd.max_body_bytes {
            return Err(Error::PayloadTooLarge);
        }
        let body = RequestBody::new(incoming, fwd.max_body_bytes, self.body_idle_timeout);

        // The authority `head` accepted: the target's (HTTP/2 `:authority`, which a Host
        // must match, or an HTTP/1 absolute form, which overrides Host), else Host.
        let host = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .or_else(|| parts.headers.get(header::HOST).cloned());
        let forwarded_for = peer::forwarded_for(&parts.headers, fwd.peer, fwd.trusted);
        for name in self.headers_to_drop(&parts.headers, fwd.trusted) {
            parts.headers.remove(name);
        }
        // The browser session's cookies are the gateway's: the upstream gets the identity
        // headers instead, and the client's other cookies.
        if self.session_cookies
            && let Some(kept) = crate::browser::cookies::forwarded(&parts.headers)
        {
            match kept {
                Some(kept) => parts.headers.insert(header::COOKIE, kept),
                None => parts.headers.remove(header::COOKIE),
            };
        }
        // What follows inserts up to a handful of headers: grow the map once.
        parts.headers.reserve(6 + self.identity.len());
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
        let identity = fwd.caller.map_or(&[][..], |c| &c.headers);
        for (name, value) in identity {
            parts.headers.insert(name.clone(), value.clone());
        }
        if let Some(cert) = fwd.peer.client_cert() {
            parts
                .headers
                .insert(headers::X_FORWARDED_CLIENT_CERT.clone(), cert.xfcc.clone());
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
        if let Some(host) = host {
            // For HTTP/2 clients, their `:authority`, as HTTP/1.1 upstreams expect in Host.
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

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection becomes a tunnel or is refused: it never goes back to the pool.
            drop(lease);
            let invalid = |why| Error::UpstreamInvalid {
                upstream: upstream.name.clone(),
                why,
            };
            let (Some(client_upgrade), Some(accept_key)) = (client_upgrade, accept_key) else {
                return Err(invalid("a 101 to a request that asked for no upgrade"));
            };
            // Only an upstream that took the client's handshake speaks WebSocket now;
            // anything else could read the tunnel's bytes as further HTTP requests.
            if !accepts_websocket(response.headers(), &accept_key) {
                return Err(invalid(
                    "a 101 that does not accept the WebSocket handshake",
                ));
            }
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let grant = fwd.caller.map(|caller| fwd.auth.grant(caller));
            self.tasks
                .spawn(tunnel(client_upgrade, upstream_upgrade, grant));
            return Ok(response.map(|b| body::stream(UpstreamBody::new(b, None))));
        }
        for name in hop_by_hop(response.headers()) {
            response.headers_mut().remove(name);
        }
        Ok(response.map(|b| body::stream(UpstreamBody::new(b, lease))))
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

/// The `Sec-WebSocket-Accept` an upstream that takes this handshake answers (RFC 6455
/// §4.2.2), or `None` when the request's key is not 16 bytes in base64.
fn websocket_accept<B>(req: &Request<B>) -> Option<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY)?;
    if STANDARD.decode(key.as_bytes()).ok()?.len() != 16 {
        return None;
    }
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    digest.update(key.as_bytes());
    digest.update(GUID);
    Some(STANDARD.encode(digest.finish()))
}

/// Whether a 101 is the upstream accepting the client's WebSocket handshake.
fn accepts_websocket(headers: &HeaderMap, accept_key: &str) -> bool {
    headers
        .get(header::UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && headers
            .get(header::SEC_WEBSOCKET_ACCEPT)
            .is_some_and(|a| a.as_bytes() == accept_key.as_bytes())
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

/// Copies bytes both ways between the client's and the upstream's upgraded connections
/// until either side closes, or the token that opened it expires or is revoked.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    grant: Option<Grant>,
) {
    let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
        tracing::debug!("an upgrade was abandoned before both sides switched protocols");
        return;
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let lapsed = async {
        match &grant {
            Some(grant) => grant.lapsed().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        copied = copy => if let Err(e) = copied {
            tracing::debug!(error = %e, "tunnel closed with an error");
        },
        () = lapsed => tracing::debug!("tunnel closed: its token expired or was revoked"),
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
