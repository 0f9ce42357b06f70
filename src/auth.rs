//! Who is calling: the one [`Authenticator`] that turns a request's credentials into a
//! verified [`Caller`], or refuses them. Routes, the account endpoints and the identity
//! headers all ask it; nothing else verifies a credential.
//!
//! | part | its one job |
//! | --- | --- |
//! | `credentials` | the credential sources, one function each |
//! | `cache` | verified access tokens and API keys, so a repeated one costs a lookup |
//! | `certificates` | callers by client certificate, per `[[client_identity]]` |
//! | `identity` | the identity headers a caller becomes upstream |
//! | `issuer` | minting tokens, for the account endpoints and `token mint` |
//!
//! A bearer token whose `iss` names an `[[issuer]]` is verified with that issuer's keys
//! (`crate::issuers`) instead of the local ones, and its claims mapped into the same
//! [`Claims`]; from there on it is a caller like any other. Only such a token naming a
//! `kid` its issuer has not published makes [`Authenticator::authenticate_fetching`]
//! wait, for one refetch.
//!
//! Whatever the source and whether the cache answered, the same checks end every
//! decision: the credential's times against the clock and the revocation map (an API
//! key's id is revoked as a token's `jti` is).

mod cache;
mod certificates;
mod credentials;
mod identity;
mod issuer;

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::api_keys::{self, ApiKeys, LiveKey};
use crate::client_cert::ClientCert;
use crate::config::Config;
use crate::error::Error;
use crate::issuers::{IssuerKeys, Issuers};
use crate::jwt::{Claims, TokenError, Verifier};
use crate::metrics::Metrics;
use crate::revocation::Revocations;
use crate::routes::CallerKind;

pub use cache::TokenCache;
pub use credentials::bearer_token;
pub(crate) use credentials::{ACCESS_COOKIE, cookie, cookie_pairs};
pub(crate) use identity::IdentityHeaders;
pub(crate) use issuer::{Issuer, Login, random_uuid};

use certificates::CertCallers;
use credentials::Credential;

/// A verified caller: who it is (`claims.sub`), its roles and claims, the identity headers
/// it becomes upstream, and how it proved itself.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Claims,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub via: Via,
    /// The live key, for an API-key caller: its expiry and last use.
    pub(crate) key: Option<Arc<LiveKey>>,
}

impl Caller {
    /// A caller that is not an API key's.
    pub fn new(claims: Claims, headers: Vec<(HeaderName, HeaderValue)>, via: Via) -> Caller {
        Caller {
            claims,
            headers,
            via,
            key: None,
        }
    }

    /// The caller's name, as the identity header carries it.
    pub fn name(&self) -> &str {
        &self.claims.sub
    }

    pub fn roles(&self) -> &[String] {
        self.claims.roles.as_slice()
    }
}

/// How a caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// An access token in `Authorization: Bearer`.
    Bearer,
    /// An API key, from any of its sources.
    ApiKey,
    /// An access token in a browser session's cookie (`[browser]`).
    Cookie,
    /// The connection's verified client certificate, named by a `[[client_identity]]`.
    ClientCert,
}

impl Via {
    /// The kind of caller this makes, as a route's `require.kind` asks for it.
    pub fn kind(self) -> CallerKind {
        match self {
            Via::Bearer | Via::Cookie => CallerKind::User,
            Via::ApiKey => CallerKind::ApiKey,
            Via::ClientCert => CallerKind::ClientCert,
        }
    }
}

/// Verifies credentials for one config (its keys, issuer, audience, identity headers);
/// a reload builds a new one, with an empty cache.
#[derive(Debug)]
pub(crate) struct Authenticator {
    /// Shared with the tunnels whose tokens it checks again (`Grant`).
    verifier: Arc<Verifier>,
    cache: TokenCache,
    identity: IdentityHeaders,
    keys: Arc<ApiKeys>,
    certificates: CertCallers,
    /// Whether the browser session cookie is a credential (`[browser]` on).
    cookies: bool,
    /// `[[issuer]]`: other issuers' keys, refreshed in the background while this lives.
    issuers: Issuers,
    revocations: Arc<Revocations>,
    metrics: Arc<Metrics>,
}

/// What checking a request's credential came to, short of a refusal.
enum Outcome {
    Caller(Arc<Caller>),
    /// A token of this issuer names a `kid` it has not published (yet): worth one refetch.
    UnknownKid(Arc<IssuerKeys>),
}

impl Authenticator {
    pub(crate) fn new(
        config: &Config,
        keys: Arc<ApiKeys>,
        revocations: Arc<Revocations>,
        metrics: Arc<Metrics>,
    ) -> Authenticator {
        let tokens = &config.tokens;
        let verifier =
            Verifier::new(
                tokens.keys.clone(),
                tokens.issuer.clone(),
                tokens.audience.clone(),
                i64::try_from(tokens.leeway.as_secs()).unwrap_or(i64::MAX),
            )
            .with_max_lifetime(i64::try_from(tokens.max_lifetime.as_secs()).unwrap_or(i64::MAX))
            .with_extra_claims(
                config
                    .identity
                    .claim_headers
                    .iter()
                    .map(|(_, claim)| claim.as_str())
                    .chain(config.routes.iter().flat_map(|route| {
                        route.require.claims.iter().map(|(claim, _)| claim.as_str())
                    }))
                    // Cookie sessions' double-submit value; read only where there are any.
                    .chain(config.browser.as_ref().map(|_| crate::jwt::CSRF_CLAIM)),
            );
        let identity = IdentityHeaders::new(&config.identity);
        Authenticator {
            verifier: Arc::new(verifier),
            cache: TokenCache::new(tokens.verified_cache),
            certificates: CertCallers::new(&config.client_identities, &identity),
            identity,
            keys,
            cookies: config.browser.is_some(),
            issuers: Issuers::new(&config.issuers, &metrics),
            revocations,
            metrics,
        }
    }

    /// The verifier of this config's tokens, for the account endpoints that take refresh
    /// tokens and for the published keys.
    pub(crate) fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The caller the request's one credential stands for. A token of an `[[issuer]]` whose
    /// `kid` is unknown waits for one refetch of its keys (single-flight, bounded by the
    /// fetch timeout) and is tried once more; every other credential, and every token
    /// whose key is known, is decided without waiting on anything.
    pub(crate) async fn authenticate_fetching(
        &self,
        headers: &HeaderMap,
    ) -> Result<Arc<Caller>, Error> {
        match self.attempt(headers)? {
            Outcome::Caller(caller) => Ok(caller),
            Outcome::UnknownKid(issuer) => {
                issuer.refetch().await;
                self.authenticate(headers)
            }
        }
    }

    /// The caller the request's one credential stands for, decided now: a token naming a
    /// key not (yet) known is refused.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Caller>, Error> {
        match self.attempt(headers)? {
            Outcome::Caller(caller) => Ok(caller),
            Outcome::UnknownKid(_) => Err(TokenError::UnknownKey.into()),
        }
    }

    fn attempt(&self, headers: &HeaderMap) -> Result<Outcome, Error> {
        let outcome = match credentials::extract(headers, self.cookies)? {
            Credential::Bearer(token) => self.access_token(token, Via::Bearer)?,
            Credential::Cookie(token) => self.access_token(token, Via::Cookie)?,
            Credential::ApiKey(key) => Outcome::Caller(self.api_key(&key)?),
        };
        if let Outcome::Caller(caller) = &outcome
            && self.revocations.refuses(&caller.claims)
        {
            return Err(TokenError::Revoked.into());
        }
        Ok(outcome)
    }

    /// The caller of a session's new access token, as if it had come in its cookie (a
    /// renewal in passing).
    pub(crate) fn session_caller(&self, access: &str) -> Result<Arc<Caller>, Error> {
        let Outcome::Caller(caller) = self.access_token(access, Via::Cookie)? else {
            return Err(TokenError::UnknownKey.into());
        };
        if self.revocations.refuses(&caller.claims) {
            return Err(TokenError::Revoked.into());
        }
        Ok(caller)
    }

    /// The caller a connection's verified client certificate stands for (`auth =
    /// "client_cert"`): 401 without one, 403 when no `[[client_identity]]` names it. Not
    /// checked against revocations: those are of tokens and users, not certificates.
    pub(crate) fn client_cert(&self, cert: Option<&ClientCert>) -> Result<Arc<Caller>, Error> {
        self.certificates.caller(cert)
    }

    /// An access token, verified — or found in the verified-token cache, then checked
    /// again against the clock.
    /// The token came `via` a header or a cookie: a cached caller keeps how it came, since a
    /// cookie's request must pass the CSRF check that a header's need not.
    fn access_token(&self, token: &str, via: Via) -> Result<Outcome, Error> {
        let now = now_secs();
        if let Some(hit) = self.cache.get(token) {
            self.metrics.token_cache(true);
            self.verifier.check_times(&hit.claims, now)?;
            if hit.via != via {
                // The same token from the other source (rare): cached as it came last,
                // so a token that keeps coming one way costs a plain hit.
                let caller = Arc::new(Caller {
                    via,
                    ..Caller::clone(&hit)
                });
                self.cache.insert(token, caller.clone());
                return Ok(Outcome::Caller(caller));
            }
            return Ok(Outcome::Caller(hit));
        }
        self.metrics.token_cache(false);
        let claims = match self.external_issuer(token) {
            None => self.verifier.verify_access(token, now)?,
            // Only that issuer's keys, algorithms and audiences; then the same clock checks
            // as the gateway's own tokens.
            Some(issuer) => match issuer.verify(token, now, self.verifier.extra_claims()) {
                Err(TokenError::UnknownKey) => return Ok(Outcome::UnknownKid(issuer.clone())),
                Err(refused) => return Err(refused.into()),
                Ok(claims) => {
                    self.verifier.check_times(&claims, now)?;
                    claims
                }
            },
        };
        let caller = Arc::new(Caller {
            headers: self.identity.render(&claims)?,
            claims,
            via,
            key: None,
        });
        self.cache.insert(token, caller.clone());
        Ok(Outcome::Caller(caller))
    }

    /// The `[[issuer]]` of this name (a `[[browser.provider]]`'s).
    pub(crate) fn issuer_named(&self, name: &str) -> Option<&Arc<IssuerKeys>> {
        self.issuers.by_name(name)
    }

    /// The `[[issuer]]` a token's (unverified) `iss` names; `None` for the gateway's own
    /// tokens and unknown issuers, which the local verifier refuses as today. Without any
    /// `[[issuer]]` the payload is not even looked at.
    fn external_issuer(&self, token: &str) -> Option<&Arc<IssuerKeys>> {
        if self.issuers.is_empty() {
            return None;
        }
        crate::jwt::by_unverified_issuer(token, |iss| self.issuers.by_iss(iss))
    }

    /// An API key: a typo fails the checksum before any lookup; a live key is found in
    /// memory by its hash, then cached as a token is. Its expiry is checked on every hit,
    /// its revocation by [`Self::authenticate`].
    fn api_key(&self, key: &str) -> Result<Arc<Caller>, Error> {
        let now = now_secs();
        let caller = match self.cache.get(key) {
            Some(hit) => {
                self.metrics.token_cache(true);
                hit
            }
            None => {
                self.metrics.token_cache(false);
                if !api_keys::well_formed(key) {
                    return Err(TokenError::KeyChecksum.into());
                }
                let live = self.keys.find(key).ok_or(TokenError::UnknownApiKey)?;
                let claims = Claims {
                    sub: live.name.clone(),
                    jti: Some(live.id.clone()),
                    iat: Some(live.created_at),
                    exp: live.expires_at,
                    roles: crate::jwt::OneOrMany::Many(live.roles.clone()),
                    ..Claims::default()
                };
                let caller = Arc::new(Caller {
                    headers: self.identity.render(&claims)?,
                    claims,
                    via: Via::ApiKey,
                    key: Some(live),
                });
                self.cache.insert(key, caller.clone());
                caller
            }
        };
        if let Some(live) = &caller.key {
            if live.expired(now) {
                return Err(TokenError::Expired.into());
            }
            live.used(now);
        }
        Ok(caller)
    }
}

/// How often a tunnel's token is checked again: a tunnel outlives its token's expiry or
/// revocation by at most this (plus the store follower's 250 ms for a revocation made on
/// another replica).
const GRANT_RECHECK: Duration = Duration::from_secs(1);

impl Authenticator {
    /// What a long-lived exchange (a WebSocket tunnel) of `caller` holds on to.
    pub(crate) fn grant(&self, caller: &Arc<Caller>) -> Grant {
        Grant {
            caller: caller.clone(),
            revocations: self.revocations.clone(),
            verifier: self.verifier.clone(),
        }
    }
}

/// A caller's token, checked again while something it opened lives on: the tunnel ends
/// when the token expires or is revoked, as a new request with it would be refused.
#[derive(Debug)]
pub(crate) struct Grant {
    caller: Arc<Caller>,
    revocations: Arc<Revocations>,
    verifier: Arc<Verifier>,
}

impl Grant {
    /// Whether the credential still stands at `now`: the checks of a request that brought
    /// it again — a token's times or a key's expiry, and the revocation map.
    fn holds(&self, now: i64) -> bool {
        let caller = &self.caller;
        let in_time = match caller.via {
            // A certificate was verified for the connection the tunnel lives on, for its life.
            Via::ClientCert => return true,
            Via::ApiKey => caller.key.as_ref().is_some_and(|key| !key.expired(now)),
            Via::Bearer | Via::Cookie => self.verifier.check_times(&caller.claims, now).is_ok(),
        };
        in_time && !self.revocations.refuses(&caller.claims)
    }

    /// Resolves once the token no longer stands.
    pub(crate) async fn lapsed(&self) {
        let mut every = tokio::time::interval(GRANT_RECHECK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if !self.holds(now_secs()) {
                return;
            }
        }
    }
}

pub use crate::jwt::now_secs;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{Algorithm, Key};
    use crate::store::ApiKey;

    /// A tunnel lives as long as a new request with its credential would pass: a key
    /// without `exp` holds until it expires or is revoked, a certificate for its
    /// connection, a token without `exp` not at all.
    #[test]
    fn a_tunnel_holds_while_its_credential_would_pass() {
        let key = Key::from_secret(Algorithm::HS256, &[7; 32], None).expect("key");
        let verifier = Arc::new(Verifier::new(
            vec![key],
            "authgate".into(),
            "authgate".into(),
            30,
        ));
        let revocations = Arc::new(Revocations::new());
        let keys = ApiKeys::new();
        let text = api_keys::mint();
        keys.load(
            &[ApiKey {
                name: "bot".into(),
                id: "bot-id".into(),
                hash: api_keys::digest(&text),
                roles: Vec::new(),
                created_at: 1,
                expires_at: Some(1000),
                last_used_at: None,
            }],
            1,
        );
        let grant = |via, key: Option<Arc<LiveKey>>| Grant {
            caller: Arc::new(Caller {
                claims: Claims {
                    sub: "bot".into(),
                    jti: Some("bot-id".into()),
                    ..Claims::default()
                },
                headers: Vec::new(),
                via,
                key,
            }),
            revocations: revocations.clone(),
            verifier: verifier.clone(),
        };
        let by_key = grant(Via::ApiKey, keys.find(&text));
        assert!(by_key.holds(999));
        assert!(!by_key.holds(1000), "expired");
        assert!(grant(Via::ClientCert, None).holds(now_secs()));
        assert!(!grant(Via::Bearer, None).holds(999), "a token without exp");
        revocations.revoke_token("bot-id", i64::MAX);
        assert!(!by_key.holds(999), "revoked");
    }
}
