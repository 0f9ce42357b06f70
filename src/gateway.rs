//! The request path, top to bottom, in one place:
//!
//! 1. **route** — normalize the path (ambiguous spellings are 400), match a route (404);
//! 2. **own endpoints** — the account endpoints and the JWKS are answered here;
//! 3. **authenticate** — one bearer token, verified, not revoked (401);
//! 4. **authorize** — the route's required roles (403);
//! 5. **forward** — header hygiene, identity headers, stream to the upstream (502/504);
//! 6. **log** — one event per request, here and nowhere else.
//!
//! [`Gateway::handle`] is also the one place an [`Error`] becomes a response.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio_util::task::TaskTracker;

use http::header::{HeaderMap, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

use crate::accounts::{Accounts, Endpoint, LoginLimits};
use crate::body::Body;
use crate::config::Config;
use crate::credentials;
use crate::error::{Error, Fault};
use crate::framing::ConflictingFraming;
use crate::headers::X_REQUEST_ID;
use crate::jwt::{Claims, Verifier};
use crate::metrics::{Label, MethodClass, Metrics};
use crate::passwords::Passwords;
use crate::proxy::{Forward, Peer, Proxy};
use crate::revocation::Revocations;
use crate::routes::{self, Auth, Route};
use crate::store::Store;
use crate::token_cache::{Authenticated, TokenCache};

/// Where the public verification keys are published (RFC 8414's well-known JWKS path).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// State that outlives one config: the revocation map, the store, the password hasher and
/// the login limits. A reload builds a new [`Gateway`] over the same `Shared`.
#[derive(Debug, Clone)]
pub struct Shared {
    pub revocations: Arc<Revocations>,
    /// With the passwords and limits of the accounts; `None` without `[store]`.
    pub accounts: Option<AccountsState>,
    pub metrics: Arc<Metrics>,
    /// Work that outlives its request (WebSocket tunnels), awaited by the drain.
    pub tasks: TaskTracker,
    /// One sequence for the process, so ids stay unique and ordered across reloads.
    request_ids: Arc<RequestIds>,
}

impl Shared {
    /// State for a gateway without a store: nothing durable to open.
    pub fn without_store() -> Shared {
        Shared {
            revocations: Arc::new(Revocations::new()),
            accounts: None,
            metrics: Arc::new(Metrics::new()),
            tasks: TaskTracker::new(),
            request_ids: Arc::new(RequestIds::new()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AccountsState {
    pub store: Arc<dyn Store>,
    pub passwords: Passwords,
    pub limits: Arc<LoginLimits>,
}

/// Everything a request needs, built once per config. Shared by all connections behind an
/// `Arc`; immutable but for the revocation map, which has its own concurrency.
#[derive(Debug)]
pub struct Gateway {
    config: Arc<Config>,
    verifier: Verifier,
    proxy: Proxy,
    revocations: Arc<Revocations>,
    accounts: Option<Accounts>,
    metrics: Arc<Metrics>,
    /// Metric labels, made once per config so requests only clone them.
    labels: Labels,
    /// Verified access tokens of this config (a reload starts an empty one).
    cache: TokenCache,
    request_ids: Arc<RequestIds>,
}

/// What answered a request, for its metric label.
#[derive(Debug, Clone, Copy, Default)]
enum Answered {
    /// Refused before routing (an ambiguous path, a malformed request).
    #[default]
    Invalid,
    NoRoute,
    Jwks,
    Own(Endpoint),
    Route(usize),
}

#[derive(Debug)]
struct Labels {
    invalid: Label,
    no_route: Label,
    jwks: Label,
    /// By [`Endpoint`], in declaration order.
    own: Vec<(Endpoint, Label)>,
    /// By route index.
    routes: Vec<Label>,
}

impl Labels {
    fn new(config: &Config) -> Labels {
        let mut routes = vec![Label::new("none"); config.routes.iter().count()];
        for route in config.routes.iter() {
            routes[route.index] = Label::new(&route.pattern.to_string());
        }
        Labels {
            invalid: Label::new("invalid"),
            no_route: Label::new("none"),
            jwks: Label::new("own:jwks"),
            own: Endpoint::ALL
                .iter()
                .map(|e| (*e, Label::new(e.label())))
                .collect(),
            routes,
        }
    }

    fn of(&self, answered: Answered) -> &Label {
        match answered {
            Answered::Invalid => &self.invalid,
            Answered::NoRoute => &self.no_route,
            Answered::Jwks => &self.jwks,
            Answered::Own(endpoint) => self
                .own
                .iter()
                .find(|(e, _)| *e == endpoint)
                .map_or(&self.invalid, |(_, label)| label),
            Answered::Route(index) => self.routes.get(index).unwrap_or(&self.no_route),
        }
    }
}

impl Gateway {
    pub fn new(config: Arc<Config>, shared: &Shared) -> Gateway {
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
        let accounts = shared.accounts.as_ref().map(|state| {
            Accounts::new(
                config.accounts.clone(),
                &config.tokens,
                state.clone(),
                shared.revocations.clone(),
                shared.metrics.clone(),
            )
        });
        Gateway {
            proxy: Proxy::new(&config, shared.tasks.clone()),
            metrics: shared.metrics.clone(),
            labels: Labels::new(&config),
            cache: TokenCache::new(config.tokens.verified_cache),
            verifier,
            config,
            revocations: shared.revocations.clone(),
            accounts,
            request_ids: shared.request_ids.clone(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Lets rate-limit buckets that have refilled go (bounded memory under many keys).
    pub fn forget_idle_limits(&self) {
        if let Some(accounts) = &self.accounts {
            accounts.forget_idle_limits();
        }
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
                if let Some(reason) = error.auth_reason() {
                    self.metrics.auth_failure(reason);
                }
                if let Some((upstream, kind)) = error.upstream_failure() {
                    self.metrics.upstream_error(&Label::new(upstream), kind);
                }
                match error.fault() {
                    Fault::Client | Fault::Auth => {
                        tracing::debug!(request_id = request_id.to_str().unwrap_or("-"), %error, "request refused")
                    }
                    Fault::Upstream => {
                        tracing::warn!(request_id = request_id.to_str().unwrap_or("-"), error = %error_chain(&error), "upstream failed")
                    }
                    Fault::Internal => {
                        tracing::error!(request_id = request_id.to_str().unwrap_or("-"), error = %error_chain(&error), "internal error")
                    }
                }
                error.to_response()
            }
        };
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        self.metrics.request(
            self.labels.of(log.answered),
            MethodClass::of(&method),
            status,
            elapsed,
        );
        tracing::info!(
            target: "authgate::access",
            request_id = request_id.to_str().unwrap_or("-"),
            method = %method,
            path = log.path.as_deref().unwrap_or("-"),
            route = self.labels.of(log.answered).as_str(),
            status,
            user = log.user.as_deref().unwrap_or("-"),
            upstream = log.upstream.unwrap_or("-"),
            latency_us = elapsed.as_micros() as u64,
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
        if req.extensions().get::<ConflictingFraming>().is_some() {
            return Err(Error::BadRequest(
                "the request has both Content-Length and Transfer-Encoding",
            ));
        }
        let normalized = match routes::normalize(req.uri().path()) {
            Ok(Cow::Borrowed(_)) => None,
            Ok(Cow::Owned(path)) => Some(path),
            Err(refused) => {
                if log.enabled {
                    // The refused spelling itself, bounded, so the log shows what it was.
                    log.path = Some(req.uri().path().chars().take(256).collect());
                }
                return Err(refused.into());
            }
        };
        let path = normalized.as_deref().unwrap_or(req.uri().path());
        if log.enabled {
            log.path = Some(path.to_owned());
        }

        // 2. own endpoints
        if path == JWKS_PATH {
            log.answered = Answered::Jwks;
            return self.jwks(req.method());
        }
        if let Some(accounts) = &self.accounts
            && let Some(endpoint) = accounts.endpoint(path)
        {
            log.answered = Answered::Own(endpoint);
            let ip = self.proxy.client_ip(req.headers(), peer);
            // Boxed: the account endpoints' future is kilobytes, and hyper moves every
            // request's future; proxied requests should not carry that space.
            return Box::pin(accounts.handle(endpoint, req, ip, &self.verifier)).await;
        }
        log.answered = Answered::NoRoute;

        let route = self
            .config
            .routes
            .match_request(req.method(), path)
            .ok_or(Error::NotFound)?;
        log.answered = Answered::Route(route.index);
        log.upstream = Some(self.proxy.upstream_name(route.upstream));

        // 3. authenticate
        let authenticated = match route.auth {
            Auth::Public => None,
            Auth::Required => Some(self.authenticate(req.headers())?),
        };
        let claims = authenticated.as_deref().map(|a| &a.claims);
        if log.enabled {
            log.user = claims.map(|c| c.sub.clone());
        }

        // 4. authorize
        authorize(route, claims)?;

        // 5. forward
        let forward = Forward {
            normalized_path: normalized,
            upstream: route.upstream,
            identity: authenticated.as_deref().map_or(&[], |a| &a.headers),
            max_body_bytes: route.max_body_bytes,
            peer,
            request_id,
        };
        self.proxy.forward(req, forward).await
    }

    /// The public keys, for services that verify authgate's tokens themselves.
    fn jwks(&self, method: &http::Method) -> Result<Response<Body>, Error> {
        if method != http::Method::GET && method != http::Method::HEAD {
            return Err(Error::MethodNotAllowed("GET, HEAD"));
        }
        let mut response = crate::error::json_response(http::StatusCode::OK, self.verifier.jwks());
        // Keys change rarely and rotation keeps the old one listed: caching is safe.
        response.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        Ok(response)
    }

    /// The request's access token, verified — or found in the verified-token cache, then
    /// checked again against the clock — and not revoked.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Authenticated>, Error> {
        let token = credentials::bearer_token(headers)?;
        let now = credentials::now_secs();
        let found = match self.cache.get(token) {
            Some(hit) => {
                self.metrics.token_cache(true);
                self.verifier.check_times(&hit.claims, now)?;
                hit
            }
            None => {
                self.metrics.token_cache(false);
                let claims = self.verifier.verify_access(token, now)?;
                let headers = self.proxy.identity_headers(&claims)?;
                let fresh = Arc::new(Authenticated { claims, headers });
                self.cache.insert(token, fresh.clone());
                fresh
            }
        };
        let claims = &found.claims;
        if self
            .revocations
            .is_revoked(claims.jti.as_deref(), &claims.sub, claims.iat)
        {
            return Err(crate::jwt::TokenError::Revoked.into());
        }
        Ok(found)
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
    /// What answered, for the metric label.
    answered: Answered,
    path: Option<String>,
    user: Option<String>,
    upstream: Option<&'a str>,
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

    #[test]
    fn request_ids_are_unique() {
        let ids = RequestIds::new();
        assert_ne!(ids.next(), ids.next());
        assert_eq!(ids.next().len(), 32);
    }
}
