//! The request path, from accept to the upstream write, one phase per line:
//!
//! 0. **accept** — `server` accepts, finishes TLS, picks the protocol, and hands each
//!    request here with its [`Peer`];
//! 1. **peer** — whether the peer is a trusted proxy; the request id (`peer`,
//!    `request_id`);
//! 2. **route** — refuse a head the upstream could read otherwise: two framings, a bad
//!    or doubled Host, CONNECT (`head`); normalize the path (ambiguous spellings are
//!    400), match a route by host and path (404) (`routes`); a CORS preflight is answered
//!    by its route's policy (`cors`);
//! 3. **own endpoints** — the JWKS and the account endpoints are answered here
//!    (`accounts`);
//! 4. **authenticate** — the request's one credential, verified, not revoked, or on a
//!    `client_cert` route the connection's certificate, named (401, 403) (`auth`);
//! 5. **authorize** — the route's requirements (403) (`routes`), then its rate limit
//!    (429) (`route_limits`);
//! 6. **forward** — header hygiene, identity headers, stream to the upstream (502/504)
//!    (`proxy`);
//! 7. **log** — one event and the counters per request, here and nowhere else.
//!
//! [`Gateway::handle`] is also the one place an [`Error`] becomes a response.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use http::header::{CONNECTION, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;

use crate::accounts::{Accounts, Endpoint};
use crate::auth::{Authenticator, now_secs};
use crate::body::Body;
use crate::browser::BrowserSessions;
use crate::config::Config;
use crate::cors::{self, Cors};
use crate::error::{Error, Fault, error_chain, json_response};
use crate::head;
use crate::headers::X_REQUEST_ID;
use crate::metrics::{Label, MethodClass, Metrics};
use crate::peer::{Peer, TrustedProxies};
use crate::proxy::{Forward, Proxy};
use crate::request_id::RequestIds;
use crate::route_limits::RouteLimits;
use crate::routes::{self, Auth};
use crate::shared::Shared;
use crate::untrusted::Untrusted;

/// Where the public verification keys are published (RFC 8414's well-known JWKS path).
const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Everything a request needs, built once per config. Shared by all connections behind an
/// `Arc`; immutable but for the caches and maps inside, which have their own concurrency.
#[derive(Debug)]
pub(crate) struct Gateway {
    config: Arc<Config>,
    trusted_proxies: TrustedProxies,
    auth: Authenticator,
    proxy: Proxy,
    accounts: Option<Accounts>,
    /// `[browser]`: the login page and cookie sessions (with `accounts` only).
    browser: Option<BrowserSessions>,
    metrics: Arc<Metrics>,
    /// Metric labels, made once per config so requests only clone them.
    labels: Labels,
    request_ids: Arc<RequestIds>,
    limits: RouteLimits,
}

impl Gateway {
    pub(crate) fn new(config: Arc<Config>, shared: &Shared) -> Gateway {
        let accounts = shared.accounts.as_ref().map(|state| {
            Accounts::new(
                &config,
                state.clone(),
                shared.revocations.clone(),
                shared.metrics.clone(),
            )
        });
        Gateway {
            trusted_proxies: TrustedProxies::new(config.server.trusted_proxies.clone()),
            auth: Authenticator::new(
                &config,
                shared.api_keys.clone(),
                shared.revocations.clone(),
                shared.metrics.clone(),
            ),
            proxy: Proxy::new(&config, shared.tasks.clone()),
            browser: accounts
                .as_ref()
                .and_then(|_| BrowserSessions::new(&config)),
            accounts,
            metrics: shared.metrics.clone(),
            labels: Labels::new(&config),
            request_ids: shared.request_ids.clone(),
            limits: RouteLimits::new(&config.routes),
            config,
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// Lets rate-limit buckets that have refilled go (bounded memory under many keys).
    pub(crate) fn forget_idle_limits(&self) {
        if let Some(accounts) = &self.accounts {
            accounts.forget_idle_limits();
        }
        self.limits.forget_idle();
    }

    pub(crate) async fn handle(&self, req: Request<Incoming>, peer: &Peer) -> Response<Body> {
        let started = Instant::now();
        // 1. peer
        let trusted = self.trusted_proxies.trust(peer);
        let request_id = self.request_ids.of(req.headers(), trusted);
        let method = req.method().clone();
        // A refusal leaves the body unread, and hyper then closes an HTTP/1 connection: say
        // so, or a keep-alive client writes its next request into a closed socket.
        let close_if_refused = req.version() <= Version::HTTP_11 && !req.body().is_end_stream();
        let mut log = AccessLog {
            enabled: tracing::enabled!(target: "authgate::access", tracing::Level::INFO),
            ..AccessLog::default()
        };
        let seen = Seen {
            peer,
            trusted,
            request_id: &request_id,
        };
        let mut response = match self.process(req, seen, &mut log).await {
            Ok(response) => response,
            Err(error) => {
                let mut response = self.refuse(&error, &request_id);
                if close_if_refused {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        };
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        // Refusals too: a page can read why it was refused only with the CORS headers.
        if let Some((cors, origin)) = log.cors.take() {
            cors.decorate(response.headers_mut(), origin);
        }
        if peer.tls
            && let Some(hsts) = self.browser.as_ref().and_then(BrowserSessions::hsts)
        {
            response
                .headers_mut()
                .insert(http::header::STRICT_TRANSPORT_SECURITY, hsts);
        }
        // 7. log
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        let label = self.labels.of(log.answered);
        self.metrics
            .request(label, MethodClass::of(&method), status, elapsed);
        tracing::info!(
            target: "authgate::access",
            request_id = request_id.to_str().unwrap_or("-"),
            method = %Untrusted(method.as_str()),
            path = %Untrusted(log.path.as_deref().unwrap_or("-")),
            route = label.as_str(),
            status,
            user = %Untrusted(log.user.as_deref().unwrap_or("-")),
            upstream = log.upstream.unwrap_or("-"),
            latency_us = elapsed.as_micros() as u64,
        );
        response
    }

    async fn process<'a>(
        &'a self,
        req: Request<Incoming>,
        seen: Seen<'_>,
        log: &mut AccessLog<'a>,
    ) -> Result<Response<Body>, Error> {
        // 2. route
        head::check(&req)?;
        let normalized = match routes::normalize(req.uri().path()) {
            Ok(Cow::Borrowed(_)) => None,
            Ok(Cow::Owned(path)) => Some(path),
            Err(refused) => {
                if log.enabled {
                    // The refused spelling itself, so the log shows what it was.
                    log.path = Some(req.uri().path().to_owned());
                }
                return Err(refused.into());
            }
        };
        let path = normalized.as_deref().unwrap_or(req.uri().path());
        if log.enabled {
            log.path = Some(path.to_owned());
        }

        // 3. own endpoints
        if path == JWKS_PATH {
            log.answered = Answered::Jwks;
            return self.jwks(req.method());
        }
        if let (Some(browser), Some(accounts)) = (&self.browser, &self.accounts)
            && let Some(page) = browser.page(&req, path)
        {
            log.answered = Answered::Own(page.endpoint());
            let ip = self.trusted_proxies.client_ip(req.headers(), seen.peer);
            let https = seen.peer.tls || (seen.trusted && forwarded_https(req.headers()));
            return Box::pin(browser.handle(page, req, accounts, &self.auth, ip, https)).await;
        }
        if let Some(accounts) = &self.accounts
            && let Some(endpoint) = accounts.endpoint(path)
        {
            log.answered = Answered::Own(endpoint);
            let ip = self.trusted_proxies.client_ip(req.headers(), seen.peer);
            // Boxed: the account endpoints' future is kilobytes, and hyper moves every
            // request's future; proxied requests should not carry that space.
            return Box::pin(accounts.handle(endpoint, req, ip, &self.auth)).await;
        }
        log.answered = Answered::NoRoute;
        let routes = &self.config.routes;
        let host = head::host(&req);
        // A CORS preflight is routed by the method it asks about, and answered here,
        // without authentication, by a route with a CORS policy.
        if let Some(method) = cors::preflight_method(&req)
            && let Some(route) = routes.match_request(&method, host, path)
            && let Some(cors) = &route.cors
        {
            log.answered = Answered::Route(route.index);
            return Ok(cors.preflight(&req, &method));
        }
        let route = routes
            .match_request(req.method(), host, path)
            .ok_or(Error::NotFound)?;
        log.answered = Answered::Route(route.index);
        log.cors = route
            .cors
            .as_ref()
            .map(|cors| (cors, cors.allowed_origin(req.headers())));

        // 4. authenticate
        let mut renewed_cookies = None;
        let caller = match route.auth {
            Auth::Public => None,
            Auth::Required => match self.auth.authenticate_fetching(req.headers()).await {
                Ok(caller) => Some(caller),
                // A browser's expired session renewed in passing, or the login page.
                Err(refused) => match self.session_lapsed(&req, refused, seen).await? {
                    Lapsed::Renewed(caller, cookies) => {
                        renewed_cookies = Some(cookies);
                        Some(caller)
                    }
                    Lapsed::ToLogin(response) => return Ok(response),
                },
            },
            Auth::Optional => match self.auth.authenticate_fetching(req.headers()).await {
                Ok(caller) => Some(caller),
                Err(Error::MissingToken) => None,
                Err(refused) => return Err(refused),
            },
            Auth::ClientCert => Some(self.auth.client_cert(seen.peer.client_cert())?),
        };
        if log.enabled {
            log.user = caller.as_deref().map(|c| c.name().to_owned());
        }

        // 5. authorize (a cookie session's CSRF and origin first), then count
        if let (Some(browser), Some(caller)) = (&self.browser, &caller) {
            browser.check_csrf(&req, caller)?;
        }
        if !route.permits(
            caller.as_deref().map(|c| (&c.claims, c.via.kind())),
            now_secs,
        ) {
            return Err(Error::InsufficientScope);
        }
        if route.rate_limit.is_some() {
            let ip = self.trusted_proxies.client_ip(req.headers(), seen.peer);
            self.limits.check(route, caller.as_deref(), ip)?;
        }

        // 6. forward (only now does the log name the upstream)
        log.upstream = Some(self.proxy.upstream_name(route.upstream));
        let forward = Forward {
            // The path the decision was made on, rewritten only by the route's own rule.
            normalized_path: route.rewritten(path).or(normalized),
            upstream: route.upstream,
            caller: caller.as_ref(),
            auth: &self.auth,
            websocket: route.websocket,
            max_body_bytes: route.max_body_bytes,
            peer: seen.peer,
            trusted: seen.trusted,
            request_id: seen.request_id,
        };
        let mut response = self.proxy.forward(req, forward).await?;
        if let Some(cookies) = renewed_cookies {
            response.headers_mut().extend(cookies);
        }
        Ok(response)
    }

    /// A request refused for its credential, seen by the browser side: an expired or
    /// absent access cookie with a good refresh cookie is renewed in passing; a browser
    /// navigation without a session goes to the login page; anything else stays refused.
    async fn session_lapsed(
        &self,
        req: &Request<Incoming>,
        refused: Error,
        seen: Seen<'_>,
    ) -> Result<Lapsed, Error> {
        let (Some(browser), Some(accounts)) = (&self.browser, &self.accounts) else {
            return Err(refused);
        };
        let renewable = matches!(
            refused,
            Error::MissingToken | Error::InvalidToken(crate::jwt::TokenError::Expired)
        ) && !req.headers().contains_key(http::header::AUTHORIZATION)
            && !req.headers().contains_key(&crate::headers::X_API_KEY);
        if renewable {
            let ip = self.trusted_proxies.client_ip(req.headers(), seen.peer);
            if let Some((caller, cookies)) =
                browser.renew(req.headers(), accounts, &self.auth, ip).await
            {
                return Ok(Lapsed::Renewed(caller, cookies));
            }
        }
        if refused.status() == http::StatusCode::UNAUTHORIZED && BrowserSessions::is_navigation(req)
        {
            let target = req
                .uri()
                .path_and_query()
                .map_or("/", http::uri::PathAndQuery::as_str);
            return Ok(Lapsed::ToLogin(browser.to_login(target)));
        }
        Err(refused)
    }

    /// The public keys, for services that verify authgate's tokens themselves.
    fn jwks(&self, method: &Method) -> Result<Response<Body>, Error> {
        if method != Method::GET && method != Method::HEAD {
            return Err(Error::MethodNotAllowed("GET, HEAD"));
        }
        let mut response = json_response(StatusCode::OK, self.auth.verifier().jwks());
        // Keys change rarely and rotation keeps the old one listed: caching is safe.
        response.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        Ok(response)
    }

    /// An error as the client gets it, counted and logged at its fault's level.
    fn refuse(&self, error: &Error, request_id: &HeaderValue) -> Response<Body> {
        if let Some(reason) = error.auth_reason() {
            self.metrics.auth_failure(reason);
        }
        if let Some((upstream, kind)) = error.upstream_failure() {
            self.metrics.upstream_error(&Label::new(upstream), kind);
        }
        let request_id = request_id.to_str().unwrap_or("-");
        match error.fault() {
            Fault::Client | Fault::Auth => {
                tracing::debug!(request_id, %error, "request refused")
            }
            Fault::Upstream => {
                tracing::warn!(request_id, error = %error_chain(error), "upstream failed")
            }
            Fault::Internal => {
                tracing::error!(request_id, error = %error_chain(error), "internal error")
            }
        }
        error.to_response_as(self.config.error_body)
    }
}

/// A trusted proxy in front says the browser reached it over https.
fn forwarded_https(headers: &http::HeaderMap) -> bool {
    headers
        .get(&crate::headers::X_FORWARDED_PROTO)
        .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// What became of a request whose credential was refused, for a browser.
enum Lapsed {
    /// The session renewed: its new caller, and the cookies the response sets.
    Renewed(Arc<crate::auth::Caller>, http::HeaderMap),
    /// A navigation sent to the login page.
    ToLogin(Response<Body>),
}

/// What the peer phase learned about a request.
#[derive(Debug, Clone, Copy)]
struct Seen<'a> {
    peer: &'a Peer,
    /// Whether the peer is a trusted proxy.
    trusted: bool,
    request_id: &'a HeaderValue,
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
    /// The matched route's CORS policy and the request's origin if it allows it, for the
    /// response's headers (not logged).
    cors: Option<(&'a Cors, Option<HeaderValue>)>,
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
