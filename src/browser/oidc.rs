//! "Log in with ..." (`[[browser.provider]]`): the OpenID Connect authorization code flow
//! (Core §3.1) with PKCE S256 (RFC 7636), `state` and `nonce`.
//!
//! `GET /auth/oidc/start?provider=&rd=` sends the browser to the provider with a fresh
//! state, nonce and PKCE verifier, which it keeps in a short-lived HttpOnly cookie signed
//! with the gateway's key: any replica can read it back, no one can change it, and a
//! callback without it (another browser's, or a forged one) is refused.
//! `GET /auth/oidc/callback` takes a code once: a state seen before on this replica is
//! refused at once, and the provider refuses a code redeemed before. The ID token must
//! verify with the issuer's keys, be for this client and carry this nonce; then the user
//! gets authgate's own session, as after a password login.

use std::net::IpAddr;

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::accounts::{Accounts, Session};
use crate::auth::{Authenticator, now_secs};
use crate::config::Provider;
use crate::error::Error;
use crate::issuers::RedeemError;
use crate::jwt::{TokenError, verified_payload};

use super::redirect;

/// Where the login page's provider buttons lead.
pub(crate) const START_PATH: &str = "/auth/oidc/start";
/// The redirect URI to register at the provider (with this gateway's scheme and host).
pub(crate) const CALLBACK_PATH: &str = "/auth/oidc/callback";
/// The `type` of the flow cookie's token: no endpoint takes it for anything else.
const FLOW_KIND: &str = "oidc_login";
/// How long a browser may spend at the provider's login.
pub(super) const FLOW_SECONDS: i64 = 600;
/// States remembered as used: each is a finished round trip through the provider, and
/// they are forgotten when their flow would have expired anyway.
const MAX_USED_STATES: usize = 100_000;

/// The providers of one config, and the states their callbacks have used.
#[derive(Debug)]
pub(super) struct Flows {
    providers: Vec<Provider>,
    /// State → when its flow expires.
    used: DashMap<String, i64>,
}

/// A flow begun: where the browser goes, and the cookie it keeps meanwhile.
pub(super) struct Begun {
    pub(super) location: String,
    pub(super) cookie: String,
}

/// What the flow cookie carries besides its `sub` (the provider) and `jti` (the state).
#[derive(Deserialize)]
struct FlowState {
    nonce: String,
    verifier: String,
    rd: String,
    redirect_uri: String,
}

/// The callback's query.
#[derive(Deserialize)]
struct Callback {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    /// RFC 9207: which issuer answered, against mix-up attacks.
    iss: Option<String>,
}

impl Flows {
    pub(super) fn new(providers: &[Provider]) -> Flows {
        Flows {
            providers: providers.to_vec(),
            used: DashMap::new(),
        }
    }

    /// The providers' names, for the login page's buttons.
    pub(super) fn names(&self) -> Vec<String> {
        self.providers.iter().map(|p| p.issuer.clone()).collect()
    }

    /// Starts a login at `provider` that comes back to `origin` (this gateway's scheme and
    /// host, as the browser sees it) and then to `rd`.
    pub(super) fn start(
        &self,
        provider: &str,
        rd: &str,
        origin: &str,
        allowed_redirect_hosts: &[String],
        accounts: &Accounts,
        auth: &Authenticator,
    ) -> Result<Begun, Error> {
        let provider = self
            .providers
            .iter()
            .find(|p| p.issuer == provider)
            .ok_or(Error::InvalidInput("no such identity provider"))?;
        let endpoints = auth
            .issuer_named(&provider.issuer)
            .and_then(|issuer| issuer.login_endpoints())
            .ok_or(Error::ProviderUnavailable)?;
        let state = random_b64(32);
        let nonce = random_b64(32);
        let verifier = random_b64(32);
        let challenge =
            URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
        let redirect_uri = format!("{origin}{CALLBACK_PATH}");
        let mut extra = Map::new();
        extra.insert("nonce".into(), Value::from(nonce.as_str()));
        extra.insert("verifier".into(), Value::from(verifier));
        extra.insert(
            "rd".into(),
            Value::from(redirect::target(rd, allowed_redirect_hosts)),
        );
        extra.insert("redirect_uri".into(), Value::from(redirect_uri.as_str()));
        let cookie =
            accounts.state_token(FLOW_KIND, &provider.issuer, &state, FLOW_SECONDS, extra)?;
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &provider.client_id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("scope", &provider.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        let authorization = endpoints.authorization.to_string();
        let joint = if authorization.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(Begun {
            location: format!("{authorization}{joint}{query}"),
            cookie,
        })
    }

    /// The provider's answer: the state must be this browser's flow's and unused, the code
    /// redeemable, the ID token this client's with this nonce. The session and where to
    /// send the browser.
    pub(super) async fn finish(
        &self,
        query: Option<&str>,
        flow_cookie: Option<&str>,
        accounts: &Accounts,
        auth: &Authenticator,
        ip: IpAddr,
    ) -> Result<(Session, String), Error> {
        let callback: Callback = serde_urlencoded::from_str(query.unwrap_or_default())
            .map_err(|_| Error::InvalidInput("the callback's query is malformed"))?;
        let now = now_secs();
        let flow_token = flow_cookie.ok_or(Error::LoginState)?;
        let flow = auth
            .verifier()
            .verify(flow_token, now)
            .ok()
            .filter(|claims| claims.token_type.as_deref() == Some(FLOW_KIND))
            .ok_or(Error::LoginState)?;
        let state: FlowState = verified_payload(flow_token, auth.verifier().keys())
            .ok()
            .and_then(|payload| serde_json::from_slice(&payload).ok())
            .ok_or(Error::LoginState)?;
        let expected = flow.jti.as_deref().ok_or(Error::LoginState)?;
        if callback.state.as_deref() != Some(expected) {
            return Err(Error::LoginState);
        }
        let provider = self
            .providers
            .iter()
            .find(|p| p.issuer == flow.sub)
            .ok_or(Error::LoginState)?;
        let issuer = auth
            .issuer_named(&provider.issuer)
            .ok_or(Error::ProviderUnavailable)?;
        if let Some(error) = callback.error {
            tracing::info!(target: "authgate::audit", event = "provider_login_refused", provider = %provider.issuer, error = %crate::untrusted::Untrusted(&error), ip = %ip);
            return Err(Error::ProviderLogin(
                "the identity provider did not log you in",
            ));
        }
        if callback.iss.is_some_and(|iss| iss != issuer.iss()) {
            return Err(Error::ProviderLogin("the answer came from another issuer"));
        }
        let code = callback
            .code
            .ok_or(Error::InvalidInput("the callback carries no code"))?;
        self.spend(expected, flow.exp.unwrap_or(now), now)?;
        let endpoints = issuer.login_endpoints().ok_or(Error::ProviderUnavailable)?;
        let id_token = issuer
            .redeem_code(
                &endpoints.token,
                (&provider.client_id, &provider.client_secret),
                &code,
                &state.verifier,
                &state.redirect_uri,
            )
            .await
            .map_err(|error| match error {
                RedeemError::Refused { status, code } => {
                    tracing::warn!(provider = %provider.issuer, %status, error = %code, "the identity provider refused a login's code");
                    Error::ProviderLogin("the identity provider refused the code")
                }
                RedeemError::Unavailable(error) => {
                    tracing::warn!(provider = %provider.issuer, error = %crate::error::error_chain(&error), "cannot redeem a login's code");
                    Error::ProviderUnavailable
                }
                RedeemError::NoIdToken => Error::ProviderLogin("the identity provider sent no ID token"),
            })?;
        let claims = issuer
            .verify_id_token(&id_token, &provider.client_id)
            .await
            .and_then(|claims| auth.verifier().check_times(&claims, now_secs()).map(|()| claims))
            .map_err(|error| {
                tracing::warn!(provider = %provider.issuer, reason = error.reason(), "an ID token is refused");
                Error::ProviderLogin(id_token_refusal(&error))
            })?;
        if claims.extra.get("nonce").and_then(Value::as_str) != Some(state.nonce.as_str()) {
            return Err(Error::ProviderLogin(
                "the ID token is not for this login (nonce)",
            ));
        }
        let roles = claims.roles.as_slice().to_vec();
        let session = accounts
            .sign_in_provider(&provider.issuer, claims.sub, roles, ip)
            .await?;
        Ok((session, state.rd))
    }

    /// Marks `state` used: a second callback with it is a replay.
    fn spend(&self, state: &str, exp: i64, now: i64) -> Result<(), Error> {
        if self.used.len() >= MAX_USED_STATES {
            self.used.retain(|_, until| *until > now);
            if self.used.len() >= MAX_USED_STATES {
                return Err(Error::Busy);
            }
        }
        match self.used.entry(state.to_owned()) {
            dashmap::Entry::Occupied(_) => Err(Error::LoginState),
            dashmap::Entry::Vacant(slot) => {
                slot.insert(exp);
                Ok(())
            }
        }
    }
}

/// Why an ID token is refused, for the page: fixed text, nothing of the token.
fn id_token_refusal(error: &TokenError) -> &'static str {
    match error {
        TokenError::WrongAudience => "the ID token is for another client",
        TokenError::WrongIssuer => "the ID token is from another issuer",
        TokenError::Expired | TokenError::NotYetValid => "the ID token is out of date",
        TokenError::UnforwardableClaim => "the ID token names no usable user",
        _ => "the ID token does not verify",
    }
}

/// `n` random bytes, base64url: unguessable state, nonce and PKCE verifier (32 bytes give
/// the 43 characters RFC 7636 §4.1 asks of a verifier at least).
fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    // The system RNG failing is not recoverable; aws-lc aborts before returning an error.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}
