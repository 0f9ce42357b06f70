//! The request path, top to bottom, in one place:
//!
//! 1. **route** — normalize the path (ambiguous spellings are 400), match a route (404);
//! 2. **authenticate** — one bearer token, verified, not revoked (401);
//! 3. **authorize** — the route's required roles (403);
//! 4. **forward** — header hygiene, identity headers, stream to the upstream (502/504);
//! 5. **log** — one event per request, here and nowhere else.
//!
//! [`Gateway::handle`] is also the one place an [`Error`] becomes a response.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::Body;
use crate::config::Config;
use crate::error::{Error, Fault};
use crate::headers::X_REQUEST_ID;
use crate::jwt::{Claims, TokenError, Verifier};
use crate::proxy::{Forward, Peer, Proxy};
use crate::revocation::Revocations;
use crate::routes::{self, Auth, Route};

/// Everything a request needs, built once per config. Shared by all connections behind an
/// `Arc`; immutable but for the revocation map, which has its own concurrency.
#[derive(Debug)]
pub struct Gateway {
    config: Arc<Config>,
    verifier: Verifier,
    proxy: Proxy,
    revocations: Arc<Revocations>,
    request_ids: RequestIds,
}

impl Gateway {
    pub fn new(config: Arc<Config>, revocations: Arc<Revocations>) -> Gateway {
        let tokens = &config.tokens;
        let verifier = Verifier::new(
            tokens.keys.clone(),
            tokens.issuer.clone(),
            tokens.audience.clone(),
            i64::try_from(tokens.leeway.as_secs()).unwrap_or(i64::MAX),
        )
        .with_extra_claims(
            config
                .identity
                .claim_headers
                .iter()
                .map(|(_, claim)| claim.as_str()),
        );
        Gateway {
            proxy: Proxy::new(&config),
            verifier,
            config,
            revocations,
            request_ids: RequestIds::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    pub async fn handle(&self, req: Request<Incoming>, peer: &Peer) -> Response<Body> {
        let started = Instant::now();
        let request_id = self.request_id(req.headers(), peer);
        let method = req.method().clone();
        let mut log = AccessLog {
            enabled: tracing::enabled!(target: "authgate::access", tracing::Level::INFO),
            ..AccessLog::default()
        };
        let mut response = match self.process(req, peer, &request_id, &mut log).await {
            Ok(response) => response,
            Err(error) => {
                match error.fault() {
                    Fault::Client | Fault::Auth => {
                        tracing::debug!(request_id = ?request_id, %error, "request refused")
                    }
                    Fault::Upstream => {
                        tracing::warn!(request_id = ?request_id, error = %error_chain(&error), "upstream failed")
                    }
                    Fault::Internal => {
                        tracing::error!(request_id = ?request_id, error = %error_chain(&error), "internal error")
                    }
                }
                error.to_response()
            }
        };
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        tracing::info!(
            target: "authgate::access",
            request_id = ?request_id,
            method = %method,
            path = log.path.as_deref().unwrap_or("-"),
            route = log.route,
            status = response.status().as_u16(),
            user = log.user.as_deref().unwrap_or("-"),
            upstream = log.upstream.unwrap_or("-"),
            latency_us = started.elapsed().as_micros() as u64,
        );
        response
    }

    async fn process<'a>(
        &'a self,
        req: Request<Incoming>,
        peer: &Peer,
        request_id: &HeaderValue,
        log: &mut AccessLog<'a>,
    ) -> Result<Response<Body>, Error> {
        // 1. route
        let normalized = match routes::normalize(req.uri().path())? {
            Cow::Borrowed(_) => None,
            Cow::Owned(path) => Some(path),
        };
        let path = normalized.as_deref().unwrap_or(req.uri().path());
        if log.enabled {
            log.path = Some(path.to_owned());
        }
        let route = self
            .config
            .routes
            .match_request(req.method(), path)
            .ok_or(Error::NotFound)?;
        log.route = Some(route.index);
        log.upstream = Some(self.proxy.upstream_name(route.upstream));

        // 2. authenticate
        let claims = match route.auth {
            Auth::Public => None,
            Auth::Required => Some(self.authenticate(req.headers())?),
        };
        if log.enabled {
            log.user = claims.as_ref().map(|c| c.sub.clone());
        }

        // 3. authorize
        authorize(route, claims.as_ref())?;

        // 4. forward
        let forward = Forward {
            normalized_path: normalized,
            upstream: route.upstream,
            claims: claims.as_ref(),
            peer,
            request_id,
        };
        self.proxy.forward(req, forward).await
    }

    /// The verified claims of the request's access token.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Claims, Error> {
        let token = bearer_token(headers)?;
        let claims = self.verifier.verify_access(token, now_secs())?;
        if self
            .revocations
            .is_revoked(claims.jti.as_deref(), &claims.sub, claims.iat)
        {
            return Err(TokenError::Revoked.into());
        }
        Ok(claims)
    }

    /// A trusted proxy's request id is kept, so one id follows a request through every
    /// hop; anyone else's is replaced.
    fn request_id(&self, headers: &HeaderMap, peer: &Peer) -> HeaderValue {
        if let Some(id) = headers.get(&X_REQUEST_ID)
            && id.len() <= 128
            && !id.is_empty()
            && self.proxy.is_trusted(peer.addr.ip())
        {
            return id.clone();
        }
        self.request_ids.next()
    }
}

/// What the access log line says about a request, filled in as the phases learn it.
#[derive(Debug, Default)]
struct AccessLog<'a> {
    /// Whether the line will be written: what only the log needs is not copied otherwise.
    enabled: bool,
    path: Option<String>,
    route: Option<usize>,
    user: Option<String>,
    upstream: Option<&'a str>,
}

/// The token of the one `Authorization: Bearer` header. Two `Authorization` headers are a
/// conflict, not a choice.
fn bearer_token(headers: &HeaderMap) -> Result<&str, Error> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Error::MissingToken);
    };
    if values.next().is_some() {
        return Err(Error::ConflictingCredentials);
    }
    let value = value.to_str().map_err(|_| TokenError::Malformed)?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Error::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Malformed.into());
    }
    Ok(token)
}

/// Every role the route requires must be in the token's `roles`.
fn authorize(route: &Route, claims: Option<&Claims>) -> Result<(), Error> {
    if route.required_roles.is_empty() {
        return Ok(());
    }
    let roles = claims.map(|c| c.roles.as_slice()).unwrap_or_default();
    if route
        .required_roles
        .iter()
        .all(|needed| roles.iter().any(|r| r == needed))
    {
        Ok(())
    } else {
        Err(Error::InsufficientScope)
    }
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An error with its causes, for log lines.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Request ids: a random per-process prefix and a counter. Unique across restarts and
/// replicas without a random draw per request.
#[derive(Debug)]
struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        let mut seed = [0u8; 8];
        // Without randomness, time still separates processes well enough for log ids.
        if aws_lc_rs::rand::fill(&mut seed).is_err() {
            seed = (SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()) as u64)
                .to_le_bytes();
        }
        RequestIds {
            prefix: u64::from_le_bytes(seed),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut text = [0u8; 32];
        let bytes = self.prefix.to_be_bytes().into_iter().chain(n.to_be_bytes());
        for (i, byte) in bytes.enumerate() {
            text[2 * i] = HEX[usize::from(byte >> 4)];
            text[2 * i + 1] = HEX[usize::from(byte & 0xf)];
        }
        HeaderValue::from_bytes(&text).expect("hex digits are a valid header value")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                header::AUTHORIZATION,
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(&headers(&["Bearer abc"])).ok(), Some("abc"));
        assert_eq!(bearer_token(&headers(&["bearer abc"])).ok(), Some("abc"));
        assert_eq!(bearer_token(&headers(&["BEARER  abc "])).ok(), Some("abc"));
    }

    #[test]
    fn missing_conflicting_and_foreign_credentials() {
        assert!(matches!(
            bearer_token(&headers(&[])),
            Err(Error::MissingToken)
        ));
        assert!(matches!(
            bearer_token(&headers(&["Basic YTpi"])),
            Err(Error::MissingToken)
        ));
        assert!(matches!(
            bearer_token(&headers(&["Bearer a", "Bearer b"])),
            Err(Error::ConflictingCredentials)
        ));
        assert!(matches!(
            bearer_token(&headers(&["Bearer "])),
            Err(Error::InvalidToken(TokenError::Malformed))
        ));
    }

    #[test]
    fn request_ids_are_unique() {
        let ids = RequestIds::new();
        assert_ne!(ids.next(), ids.next());
        assert_eq!(ids.next().len(), 32);
    }
}
