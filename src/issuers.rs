//! Other issuers (`[[issuer]]`): their keys, fetched from their JWKS and kept fresh in the
//! background, and the verification of their tokens into the gateway's [`Claims`].
//!
//! | part | its one job |
//! | --- | --- |
//! | `jwks` | a JWK Set → keys, each bound to one algorithm |
//! | `fetch` | one fetch: discovery, then the JWK Set, over the issuer's TLS |
//!
//! The request path never waits on the network for a key it knows: each issuer's keys sit
//! in an `ArcSwap`, read with one atomic load. Only a token naming an unknown `kid` asks
//! for a refetch ([`IssuerKeys::refetch`]), and that is single-flight (one fetch however
//! many requests ask), at most once per [`KID_REFETCH_INTERVAL`] per issuer, and waited
//! on for at most the issuer's fetch timeout.

mod fetch;
mod jwks;

pub(crate) use fetch::LoginEndpoints;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::ExternalIssuer;
use crate::jwt::{Claims, Key, OneOrMany, TokenError, is_forwardable, verified_payload};
use crate::metrics::{Label, Metrics};

/// Unknown `kid`s cause at most one refetch per issuer in this long: a flood of made-up
/// `kid`s costs the provider one request per 30 s, not one per token.
pub(crate) const KID_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Refresh interval when the JWKS response names no `max-age`.
pub(crate) const DEFAULT_REFRESH: Duration = Duration::from_secs(10 * 60);
/// Bounds on a response's `max-age`: a minute keeps a `no-cache` provider from being
/// polled in a loop; a day keeps rotated-out keys from living on for a week.
pub(crate) const MIN_REFRESH: Duration = Duration::from_secs(60);
pub(crate) const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// The first retry after a failed fetch; each further failure doubles it, up to
/// [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(5 * 60);
/// The last good keys keep verifying this long after they were fetched while the issuer
/// is unreachable; then its tokens are refused (a key it revoked meanwhile must die).
pub(crate) const MAX_STALENESS_SECS: i64 = 24 * 3600;

/// Every configured issuer's keys; dropping it stops their refresh tasks.
#[derive(Debug)]
pub(crate) struct Issuers {
    all: Vec<Arc<IssuerKeys>>,
    _stop: Option<DropGuard>,
}

impl Issuers {
    /// Starts each issuer's background fetch (the first one at once). A start never waits
    /// on, or fails for, an issuer that is down: its tokens are refused until keys come.
    pub(crate) fn new(configs: &[ExternalIssuer], metrics: &Arc<Metrics>) -> Issuers {
        let all: Vec<Arc<IssuerKeys>> = configs
            .iter()
            .map(|config| Arc::new(IssuerKeys::new(config.clone(), metrics.clone())))
            .collect();
        // A reload that drops an issuer drops it from `/readyz` too.
        metrics.keep_issuers(&configs.iter().map(|c| c.name.as_str()).collect::<Vec<_>>());
        let stop = CancellationToken::new();
        // Outside a runtime (a command that only loads the config) nothing is fetched.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            for issuer in &all {
                runtime.spawn(issuer.clone().refresh(stop.clone()));
            }
        }
        Issuers {
            all,
            _stop: Some(stop.drop_guard()),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The issuer whose tokens carry this `iss`.
    pub(crate) fn by_iss(&self, iss: &str) -> Option<&Arc<IssuerKeys>> {
        self.all.iter().find(|issuer| issuer.config.issuer == iss)
    }

    /// The issuer of this `[[issuer]] name`.
    pub(crate) fn by_name(&self, name: &str) -> Option<&Arc<IssuerKeys>> {
        self.all.iter().find(|issuer| issuer.config.name == name)
    }
}

/// Why a code could not be redeemed at a provider's token endpoint.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedeemError {
    /// The provider said no (an expired, reused or foreign code): the login fails.
    #[error("the token endpoint refused the code ({status}, {code})")]
    Refused {
        status: http::StatusCode,
        code: String,
    },
    /// The provider could not be asked, or answered nonsense.
    #[error(transparent)]
    Unavailable(#[from] fetch::JwksError),
    #[error("the token endpoint's answer has no id_token")]
    NoIdToken,
}

/// The keys the last good fetch brought, and when.
#[derive(Debug, Default)]
struct KeySet {
    keys: Vec<Key>,
    /// Seconds since the epoch; `None` before the first good fetch.
    fetched_at: Option<i64>,
    /// The login endpoints its discovery document named.
    login: Option<LoginEndpoints>,
}

/// One issuer: its config, its current keys, and the state of its fetches.
#[derive(Debug)]
pub(crate) struct IssuerKeys {
    config: ExternalIssuer,
    label: Label,
    /// Read on every verification (one atomic load), replaced whole by a fetch.
    keys: ArcSwap<KeySet>,
    fetcher: fetch::Fetcher,
    /// Held by the one fetch in flight (single-flight).
    fetching: AtomicBool,
    /// When the last unknown-`kid` refetch began, in ms since `epoch`.
    last_kid_fetch: AtomicI64,
    epoch: Instant,
    /// Bumped when a fetch ends, good or bad: what waiting requests wake on.
    done: watch::Sender<u64>,
    metrics: Arc<Metrics>,
}

impl IssuerKeys {
    fn new(config: ExternalIssuer, metrics: Arc<Metrics>) -> IssuerKeys {
        IssuerKeys {
            label: Label::new(&config.name),
            fetcher: fetch::Fetcher::new(&config),
            config,
            keys: ArcSwap::from_pointee(KeySet::default()),
            fetching: AtomicBool::new(false),
            last_kid_fetch: AtomicI64::new(i64::MIN / 2),
            epoch: Instant::now(),
            done: watch::Sender::new(0),
            metrics,
        }
    }

    /// Verifies `token` with this issuer's keys only, and maps its claims: the
    /// `username_claim` becomes `sub`, the `roles_claim` path `roles`, and the claims in
    /// `extra` are kept. Times are the caller's to check (the same checks as local tokens).
    pub(crate) fn verify(
        &self,
        token: &str,
        now: i64,
        extra: &[String],
    ) -> Result<Claims, TokenError> {
        let set = self.keys.load();
        if set
            .fetched_at
            .is_some_and(|at| now.saturating_sub(at) > MAX_STALENESS_SECS)
        {
            return Err(TokenError::IssuerUnavailable);
        }
        let payload = verified_payload(token, &set.keys)?;
        let claims: Map<String, Value> =
            serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        map_claims(&self.config, claims, extra, &self.config.audiences)
    }

    /// An ID token of a login through this issuer (OpenID Connect Core §3.1.3.7): signed
    /// by its keys (one refetch for a new `kid`), from it, for `client_id` (and, with
    /// several audiences, authorized for it). The `nonce` is kept in `extra` for the
    /// caller to compare; times are the caller's to check.
    pub(crate) async fn verify_id_token(
        self: &Arc<Self>,
        token: &str,
        client_id: &str,
    ) -> Result<Claims, TokenError> {
        let wanted = ["nonce".to_owned(), "azp".to_owned()];
        let audience = [client_id.to_owned()];
        let verify = || -> Result<Claims, TokenError> {
            let set = self.keys.load();
            let payload = verified_payload(token, &set.keys)?;
            let claims: Map<String, Value> =
                serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
            map_claims(&self.config, claims, &wanted, &audience)
        };
        let claims = match verify() {
            Err(TokenError::UnknownKey) => {
                self.refetch().await;
                verify()?
            }
            other => other?,
        };
        let several = claims.aud.as_ref().is_some_and(|aud| match aud {
            OneOrMany::One(_) => false,
            OneOrMany::Many(all) => all.len() > 1,
        });
        let azp = claims.extra.get("azp").and_then(Value::as_str);
        if (several || azp.is_some()) && azp != Some(client_id) {
            return Err(TokenError::WrongAudience);
        }
        Ok(claims)
    }

    /// The `iss` its tokens carry.
    pub(crate) fn iss(&self) -> &str {
        &self.config.issuer
    }

    /// The authorization and token endpoints its discovery document named, once fetched.
    pub(crate) fn login_endpoints(&self) -> Option<LoginEndpoints> {
        self.keys.load().login.clone()
    }

    /// Redeems an authorization code at the token endpoint (RFC 6749 §4.1.3, with the
    /// PKCE verifier of RFC 7636 §4.5, the client authenticated by HTTP Basic): the ID
    /// token, unverified. Bounded by the issuer's timeout.
    pub(crate) async fn redeem_code(
        &self,
        token_endpoint: &http::Uri,
        client: (&str, &str),
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<String, RedeemError> {
        let form = serde_urlencoded::to_string([
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ])
        .unwrap_or_default();
        // RFC 6749 §2.3.1: the id and secret are form-encoded before they are joined.
        let (id, secret) = client;
        let encoded =
            |text: &str| form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            encoded(id),
            encoded(secret)
        ));
        let (status, body) = self
            .fetcher
            .post_form(token_endpoint, &basic, form, self.config.timeout)
            .await?;
        #[derive(serde::Deserialize)]
        struct Answer {
            id_token: Option<String>,
            error: Option<String>,
        }
        let answer: Option<Answer> = serde_json::from_slice(&body).ok();
        if status != http::StatusCode::OK {
            // Only the provider's error code: its description may echo what was sent.
            let code = answer
                .and_then(|a| a.error)
                .filter(|code| crate::jwt::is_forwardable(code) && code.len() <= 64)
                .unwrap_or_else(|| "-".to_owned());
            return Err(RedeemError::Refused { status, code });
        }
        answer
            .and_then(|a| a.id_token)
            .ok_or(RedeemError::NoIdToken)
    }

    /// Asked by a request whose token names a `kid` this issuer has not got: starts a
    /// fetch unless one ran for that reason in the last [`KID_REFETCH_INTERVAL`], and
    /// waits for the fetch in flight (this one or any other), at most the fetch timeout.
    pub(crate) async fn refetch(self: &Arc<Self>) {
        // Subscribed before anything is looked at, so a fetch ending in between is seen.
        let mut done = self.done.subscribe();
        if !self.fetching.load(Ordering::Acquire) {
            let now = i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX);
            let last = self.last_kid_fetch.load(Ordering::Acquire);
            if now.saturating_sub(last) < KID_REFETCH_INTERVAL.as_millis() as i64 {
                return;
            }
            // One request wins the slot; the others wait for the fetch it starts.
            if self
                .last_kid_fetch
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
                && self.begin()
            {
                // Spawned: a request that stops waiting (or goes away) leaves it running.
                let this = self.clone();
                tokio::spawn(async move {
                    this.fetch_and_store().await;
                    this.end();
                });
            }
        }
        let _ = tokio::time::timeout(self.config.timeout, done.changed()).await;
    }

    /// Takes the single-flight slot.
    fn begin(&self) -> bool {
        self.fetching
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn end(&self) {
        self.fetching.store(false, Ordering::Release);
        self.done.send_modify(|generation| *generation += 1);
    }

    /// One fetch; its keys replace the current ones when it succeeds, and the current ones
    /// stay when it fails. `Some(max_age)` on success.
    async fn fetch_and_store(&self) -> Option<Option<Duration>> {
        match self.fetcher.fetch(&self.config).await {
            Ok(fetched) => {
                if fetched.keys.is_empty() {
                    tracing::warn!(issuer = %self.config.name, skipped = fetched.skipped, "the issuer publishes no key usable with its algorithms");
                } else {
                    tracing::debug!(issuer = %self.config.name, keys = fetched.keys.len(), skipped = fetched.skipped, "issuer keys fetched");
                }
                self.keys.store(Arc::new(KeySet {
                    keys: fetched.keys,
                    fetched_at: Some(crate::jwt::now_secs()),
                    login: fetched.login,
                }));
                self.metrics.jwks_fetch(&self.label, true);
                Some(fetched.max_age)
            }
            Err(error) => {
                let kept = self.keys.load().keys.len();
                tracing::warn!(
                    issuer = %self.config.name,
                    error = %crate::error::error_chain(&error),
                    kept,
                    "cannot fetch the issuer's keys; the last good ones stay in use"
                );
                self.metrics.jwks_fetch(&self.label, false);
                None
            }
        }
    }

    /// The background refresh: at once, then as the response's `max-age` says (bounded),
    /// sooner after a failure.
    async fn refresh(self: Arc<Self>, stop: CancellationToken) {
        let mut retry = FIRST_RETRY;
        loop {
            let wait = if self.begin() {
                let outcome = self.fetch_and_store().await;
                self.end();
                match outcome {
                    Some(max_age) => {
                        retry = FIRST_RETRY;
                        refresh_interval(max_age)
                    }
                    None => {
                        let wait = retry;
                        retry = (retry * 2).min(MAX_RETRY);
                        wait
                    }
                }
            } else {
                // An unknown-kid refetch is in flight: it stands for this round.
                FIRST_RETRY
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The refresh interval a response's `max-age` asks for, within bounds.
fn refresh_interval(max_age: Option<Duration>) -> Duration {
    max_age
        .unwrap_or(DEFAULT_REFRESH)
        .clamp(MIN_REFRESH, MAX_REFRESH)
}

/// An external token's claims as the gateway's: `iss` and `aud` checked against the
/// issuer, the username claim as `sub`, the roles from their path. No `type` is asked
/// for: other issuers do not write one.
fn map_claims(
    issuer: &ExternalIssuer,
    mut all: Map<String, Value>,
    extra: &[String],
    audiences: &[String],
) -> Result<Claims, TokenError> {
    if all.get("iss").and_then(Value::as_str) != Some(issuer.issuer.as_str()) {
        return Err(TokenError::WrongIssuer);
    }
    let aud: Option<OneOrMany> = all
        .get("aud")
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    if !aud
        .as_ref()
        .is_some_and(|aud| audiences.iter().any(|a| aud.contains(a)))
    {
        return Err(TokenError::WrongAudience);
    }
    let sub = match all.get(&issuer.username_claim) {
        Some(Value::String(name)) if !name.is_empty() && is_forwardable(name) => name.clone(),
        _ => return Err(TokenError::UnforwardableClaim),
    };
    let roles = roles_at(&all, &issuer.roles_claim);
    let date = |name: &str| match all.get(name) {
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        _ => None,
    };
    let mut claims = Claims {
        sub,
        iat: date("iat"),
        nbf: date("nbf"),
        exp: date("exp"),
        auth_time: date("auth_time"),
        jti: all.get("jti").and_then(Value::as_str).map(str::to_owned),
        iss: Some(issuer.issuer.clone()),
        aud,
        roles: OneOrMany::Many(roles),
        ..Claims::default()
    };
    for name in extra {
        if let Some(value) = all.remove(name) {
            claims.extra.insert(name.clone(), value);
        }
    }
    Ok(claims)
}

/// The roles at a dotted path: an array's strings, or a space-separated string's words;
/// nothing when the path leads elsewhere.
fn roles_at(claims: &Map<String, Value>, path: &[String]) -> Vec<String> {
    let Some((first, rest)) = path.split_first() else {
        return Vec::new();
    };
    let mut value = claims.get(first);
    for segment in rest {
        value = value.and_then(|v| v.get(segment));
    }
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(words)) => words.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(text: &str) -> Vec<String> {
        text.split('.').map(str::to_owned).collect()
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("an object"),
        }
    }

    #[test]
    fn roles_are_found_at_a_dotted_path() {
        let claims = object(json!({
            "realm_access": { "roles": ["admin", "user", 7] },
            "roles": ["top"],
            "scope": "read write  admin",
            "nested": { "deeper": { "roles": "a b" } },
            "flat": { "roles": { "not": "a list" } },
        }));
        assert_eq!(
            roles_at(&claims, &path("realm_access.roles")),
            ["admin", "user"]
        );
        assert_eq!(roles_at(&claims, &path("roles")), ["top"]);
        assert_eq!(
            roles_at(&claims, &path("scope")),
            ["read", "write", "admin"]
        );
        assert_eq!(roles_at(&claims, &path("nested.deeper.roles")), ["a", "b"]);
        assert!(roles_at(&claims, &path("flat.roles")).is_empty());
        assert!(roles_at(&claims, &path("realm_access.missing")).is_empty());
        assert!(roles_at(&claims, &path("missing.roles")).is_empty());
        assert!(roles_at(&claims, &path("scope.roles")).is_empty());
    }

    fn corp() -> ExternalIssuer {
        ExternalIssuer {
            name: "corp".into(),
            issuer: "https://idp.example/realms/corp".into(),
            jwks: crate::config::JwksSource::Uri("https://idp.example/jwks".parse().expect("uri")),
            audiences: vec!["gateway".into(), "api".into()],
            algorithms: vec![crate::jwt::Algorithm::RS256],
            username_claim: "preferred_username".into(),
            roles_claim: path("realm_access.roles"),
            tls: Arc::new(crate::tls::client_config_without_roots()),
            bearer: None,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn external_claims_map_to_the_gateways() {
        let token = json!({
            "iss": "https://idp.example/realms/corp",
            "aud": ["account", "api"],
            "sub": "f3a1-uuid",
            "preferred_username": "alice",
            "realm_access": { "roles": ["admin"] },
            "exp": 2_000_000_000, "iat": 1_999_999_000, "jti": "j-1",
            "email": "alice@example.com",
        });
        let claims = map_claims(
            &corp(),
            object(token.clone()),
            &["email".to_owned()],
            &corp().audiences,
        )
        .expect("claims");
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.roles.as_slice(), ["admin"]);
        assert_eq!(claims.exp, Some(2_000_000_000));
        assert_eq!(claims.jti.as_deref(), Some("j-1"));
        assert_eq!(claims.token_type, None, "no type needed");
        assert_eq!(claims.extra["email"], "alice@example.com");

        let with = |key: &str, value: Value| {
            let mut token = object(token.clone());
            token.insert(key.to_owned(), value);
            map_claims(&corp(), token, &[], &corp().audiences)
        };
        assert_eq!(
            with("aud", json!("account")).err(),
            Some(TokenError::WrongAudience)
        );
        assert_eq!(
            with("iss", json!("https://other")).err(),
            Some(TokenError::WrongIssuer)
        );
        assert_eq!(
            with("preferred_username", json!(["a"])).err(),
            Some(TokenError::UnforwardableClaim)
        );
        assert_eq!(
            with("preferred_username", json!("al\nice\u{e9}")).err(),
            Some(TokenError::UnforwardableClaim)
        );
    }

    #[tokio::test]
    async fn keys_older_than_a_day_verify_nothing() {
        let issuer = IssuerKeys::new(corp(), Arc::new(Metrics::new()));
        let now = 1_900_000_000;
        issuer.keys.store(Arc::new(KeySet {
            keys: Vec::new(),
            fetched_at: Some(now - MAX_STALENESS_SECS - 1),
            login: None,
        }));
        assert_eq!(
            issuer.verify("a.b.c", now, &[]).err(),
            Some(TokenError::IssuerUnavailable)
        );
        issuer.keys.store(Arc::new(KeySet {
            keys: Vec::new(),
            fetched_at: Some(now - MAX_STALENESS_SECS),
            login: None,
        }));
        assert_eq!(
            issuer.verify("a.b.c", now, &[]).err(),
            Some(TokenError::Malformed)
        );
    }

    #[test]
    fn the_refresh_interval_follows_max_age_within_bounds() {
        assert_eq!(refresh_interval(None), DEFAULT_REFRESH);
        assert_eq!(refresh_interval(Some(Duration::ZERO)), MIN_REFRESH);
        assert_eq!(
            refresh_interval(Some(Duration::from_secs(3600))),
            Duration::from_secs(3600)
        );
        assert_eq!(
            refresh_interval(Some(Duration::from_secs(7 * 86_400))),
            MAX_REFRESH
        );
    }
}
