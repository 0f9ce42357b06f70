//! The gateway's own account endpoints: register, login, refresh, logout, me. The only
//! code that issues tokens.
//!
//! The flow is Flask-JWT-Extended's: a password login returns a fresh access token and a
//! refresh token; the refresh token buys new tokens; logout revokes. Refresh tokens rotate:
//! each use spends the token and issues the next of its *family*; presenting a spent token
//! again means it was copied, so the whole family is revoked (the newest token included)
//! and the event is audited. Two concurrent refreshes of one token are the same case: the
//! store lets exactly one spend it, the other is a reuse, and the family dies — clients
//! must not refresh in parallel (documented in the README).
//!
//! Every revocation is written to the store first, then to the in-memory map, and only
//! then answered, so an acknowledged logout survives a crash.

mod limits;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::auth::{Authenticator, Issuer, Login, bearer_token, now_secs, random_uuid};
use crate::body::Body;
use crate::config::{AccountsConfig, Config};
use crate::error::{Error, json_response};
use crate::jwt::{CSRF_CLAIM, TokenError};
use crate::metrics::Metrics;
use crate::passwords::{MAX_PASSWORD_BYTES, PasswordError, Passwords};
use crate::revocation::Revocations;
use crate::store::{RefreshToken, Rotation, Store, StoreError, User};
use crate::untrusted::Untrusted;

pub(crate) use limits::LoginLimits;

/// Bodies of the account endpoints are small JSON or form documents.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// What the accounts keep across configs: the store, the password hasher, the login
/// limits (shared by every config a reload makes).
#[derive(Debug, Clone)]
pub(crate) struct AccountsState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) passwords: Passwords,
    pub(crate) limits: Arc<LoginLimits>,
}

/// One of the gateway's own endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Register,
    Login,
    Refresh,
    Logout,
    Me,
}

impl Endpoint {
    pub(crate) const ALL: [Endpoint; 5] = [
        Endpoint::Register,
        Endpoint::Login,
        Endpoint::Refresh,
        Endpoint::Logout,
        Endpoint::Me,
    ];

    /// The metric label of the endpoint.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Endpoint::Register => "own:register",
            Endpoint::Login => "own:login",
            Endpoint::Refresh => "own:refresh",
            Endpoint::Logout => "own:logout",
            Endpoint::Me => "own:me",
        }
    }

    fn method(self) -> Method {
        match self {
            Endpoint::Me => Method::GET,
            _ => Method::POST,
        }
    }
}

/// Accounts, bound to one config (its store, keys and limits).
#[derive(Debug)]
pub(crate) struct Accounts {
    settings: AccountsConfig,
    store: Arc<dyn Store>,
    passwords: Passwords,
    issuer: Issuer,
    limits: Arc<LoginLimits>,
    revocations: Arc<Revocations>,
    metrics: Arc<Metrics>,
}

/// `{"username", "password"}`, as JSON or as a form.
#[derive(Deserialize)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: String,
}

/// The tokens a login or a refresh issued.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) access: String,
    pub(crate) refresh: String,
    /// The `csrf` claim both tokens carry (cookie sessions only).
    pub(crate) csrf: Option<String>,
}

/// The optional tokens of a refresh or logout body.
#[derive(Deserialize, Default)]
struct TokenBody {
    refresh_token: Option<String>,
    access_token: Option<String>,
}

impl Accounts {
    pub(crate) fn new(
        config: &Config,
        state: AccountsState,
        revocations: Arc<Revocations>,
        metrics: Arc<Metrics>,
    ) -> Accounts {
        Accounts {
            limits: state.limits,
            store: state.store,
            passwords: state.passwords,
            issuer: Issuer::new(&config.tokens).expect(
                "config validation requires a signing key that can sign when accounts are on",
            ),
            settings: config.accounts.clone(),
            revocations,
            metrics,
        }
    }

    pub(crate) fn forget_idle_limits(&self) {
        self.limits.forget_idle();
    }

    /// The endpoint at this normalized path, if it is one of ours.
    pub(crate) fn endpoint(&self, path: &str) -> Option<Endpoint> {
        let paths = &self.settings.paths;
        [
            (&paths.register, Endpoint::Register),
            (&paths.login, Endpoint::Login),
            (&paths.refresh, Endpoint::Refresh),
            (&paths.logout, Endpoint::Logout),
            (&paths.me, Endpoint::Me),
        ]
        .into_iter()
        .find_map(|(at, endpoint)| (at == path).then_some(endpoint))
    }

    pub(crate) async fn handle(
        &self,
        endpoint: Endpoint,
        req: Request<Incoming>,
        ip: IpAddr,
        auth: &Authenticator,
    ) -> Result<Response<Body>, Error> {
        if *req.method() != endpoint.method() {
            return Err(Error::MethodNotAllowed(if endpoint == Endpoint::Me {
                "GET"
            } else {
                "POST"
            }));
        }
        let mut response = match endpoint {
            Endpoint::Register => self.register(req, ip).await,
            Endpoint::Login => self.login(req, ip).await,
            Endpoint::Refresh => self.refresh(req, ip, auth).await,
            Endpoint::Logout => self.logout(req, ip, auth).await,
            Endpoint::Me => self.me(&req, auth),
        }?;
        // Tokens and account data must not be cached (RFC 6749 §5.1).
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }

    async fn register(&self, req: Request<Incoming>, ip: IpAddr) -> Result<Response<Body>, Error> {
        if !self.settings.registration {
            return Err(Error::RegistrationClosed);
        }
        let creds: Credentials = read_form_or_json(req).await?;
        check_username(&creds.username)?;
        if creds.password.chars().count() < self.settings.min_password_length {
            return Err(Error::InvalidInput("the password is too short"));
        }
        if creds.password.len() > MAX_PASSWORD_BYTES {
            return Err(Error::InvalidInput("the password is too long"));
        }
        // Spent only by a registration that will cost a hash and a row, and never the
        // login budget: junk bodies are refused above for the price of parsing them.
        if let Err(limited) = self.limits.register(ip) {
            audit("register_limited", &creds.username, ip);
            return Err(limited);
        }
        let password_hash = self
            .passwords
            .hash(creds.password)
            .await
            .map_err(password_error)?;
        let user = User::new(
            creds.username.clone(),
            password_hash,
            Vec::new(),
            now_secs(),
        );
        match self.blocking(move |s| s.create_user(&user)).await {
            Err(Error::UsernameTaken) => {
                audit("register_conflict", &creds.username, ip);
                return Err(Error::UsernameTaken);
            }
            other => other?,
        }
        audit("register", &creds.username, ip);
        Ok(json_response(
            StatusCode::CREATED,
            serde_json::json!({ "username": creds.username }),
        ))
    }

    async fn login(&self, req: Request<Incoming>, ip: IpAddr) -> Result<Response<Body>, Error> {
        let creds: Credentials = read_form_or_json(req).await?;
        let session = self.sign_in(creds, ip, false).await?;
        Ok(self.token_response(session.access, session.refresh))
    }

    /// A password login: the user's first tokens, of a new refresh family. With `csrf`,
    /// they carry a `csrf` claim for the double-submit check of cookie sessions.
    pub(crate) async fn sign_in(
        &self,
        creds: Credentials,
        ip: IpAddr,
        csrf: bool,
    ) -> Result<Session, Error> {
        // Admitted with its tokens in hand, before any hash: given back if the password is
        // right, kept if not (see `limits`).
        let attempt = match self.limits.login(ip, &creds.username) {
            Ok(attempt) => attempt,
            Err(limited) => {
                self.metrics.login("limited");
                audit("login_limited", &creds.username, ip);
                return Err(limited);
            }
        };
        let name = creds.username.clone();
        // An impossible name is looked up as nobody: same work, same answer.
        let user = if check_username(&name).is_ok() && creds.password.len() <= MAX_PASSWORD_BYTES {
            self.blocking(move |s| s.user(&name)).await?
        } else {
            None
        };
        // A provider's user has no password: checked against the dummy, like nobody.
        let hash = user
            .as_ref()
            .filter(|u| u.provider.is_none())
            .map(|u| u.password_hash.clone());
        let matches = self
            .passwords
            .verify(creds.password, hash)
            .await
            .map_err(password_error)?;
        let user = match user {
            Some(user) if matches && !user.disabled => {
                attempt.succeeded();
                user
            }
            _ => {
                attempt.failed();
                self.metrics.login("failed");
                audit("login_failed", &creds.username, ip);
                return Err(Error::InvalidCredentials);
            }
        };
        self.open_session(&user, ip, csrf, "password").await
    }

    /// A login through `[[browser.provider]]` `provider`, whose ID token named `name` with
    /// `roles`: the user created or updated as that provider's, then a cookie session as
    /// for a password login. A name that is a local user's or another provider's is
    /// refused (409): an identity provider never takes over an account it did not make.
    pub(crate) async fn sign_in_provider(
        &self,
        provider: &str,
        name: String,
        roles: Vec<String>,
        ip: IpAddr,
    ) -> Result<Session, Error> {
        check_username(&name)?;
        let user = User {
            provider: Some(provider.to_owned()),
            ..User::new(name, String::new(), roles, now_secs())
        };
        let user = match self.blocking(move |s| s.upsert_provider_user(&user)).await {
            Ok(user) => user,
            Err(refused) => {
                self.metrics.login("failed");
                return Err(refused);
            }
        };
        if user.disabled {
            self.metrics.login("failed");
            audit("login_failed", &user.name, ip);
            return Err(Error::InvalidCredentials);
        }
        self.open_session(&user, ip, true, provider).await
    }

    /// A new refresh family for `user`, who has just proven who they are (by `method`: a
    /// password or a provider's name), and its first tokens.
    async fn open_session(
        &self,
        user: &User,
        ip: IpAddr,
        csrf: bool,
        method: &str,
    ) -> Result<Session, Error> {
        // A revocation refuses every token issued up to its (whole) second; a login right
        // after one waits for that second to pass, so its tokens are not born revoked.
        let revoked_before = user
            .revoked_before
            .into_iter()
            .chain(self.revocations.user_revoked_before(&user.name))
            .max();
        let now = wait_past(revoked_before).await;
        let refresh = RefreshToken {
            jti: random_uuid(),
            family: random_uuid(),
            user: user.name.clone(),
            exp: now + self.issuer.refresh_ttl(),
        };
        // The login happened now: both tokens say so, and every refresh carries it on.
        let csrf = csrf.then(random_uuid);
        let access = self.access_token(user, now, true, Some(now), csrf.as_deref())?;
        let refresh_jwt = self.refresh_token(
            &user.name,
            &refresh.jti,
            now,
            refresh.exp,
            Some(now),
            csrf.as_deref(),
        )?;
        let first = refresh.clone();
        self.blocking(move |s| s.start_family(&first, now)).await?;
        self.metrics.login("ok");
        tracing::info!(target: "authgate::audit", event = "login_ok", user = %Untrusted(&user.name), ip = %ip, method = %Untrusted(method));
        Ok(Session {
            access,
            refresh: refresh_jwt,
            csrf,
        })
    }

    /// Signs a browser's state for a round trip elsewhere (see [`Issuer::state_token`]).
    pub(crate) fn state_token(
        &self,
        kind: &str,
        sub: &str,
        jti: &str,
        lifetime: i64,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, Error> {
        let now = now_secs();
        self.issuer
            .state_token(kind, sub, jti, now, now + lifetime, extra)
            .map_err(Error::Signing)
    }

    async fn refresh(
        &self,
        req: Request<Incoming>,
        ip: IpAddr,
        auth: &Authenticator,
    ) -> Result<Response<Body>, Error> {
        let (bearer, body) = bearer_and_body(req).await?;
        let token = one_token(bearer, body.refresh_token)?;
        let session = self.renew(&token, ip, auth).await?;
        Ok(self.token_response(session.access, session.refresh))
    }

    /// Spends a refresh token for the next tokens of its family. A session that had a
    /// `csrf` claim (a cookie session) gets a new one.
    pub(crate) async fn renew(
        &self,
        token: &str,
        ip: IpAddr,
        auth: &Authenticator,
    ) -> Result<Session, Error> {
        let now = now_secs();
        let claims = auth.verifier().verify(token, now)?;
        if claims.token_type.as_deref() != Some("refresh") {
            return Err(TokenError::NotRefreshToken.into());
        }
        let jti = claims.jti.clone().ok_or(TokenError::Malformed)?;
        if self.revocations.is_revoked(None, &claims.sub, claims.iat) {
            return Err(TokenError::Revoked.into());
        }
        let next_jti = random_uuid();
        let next_exp = now + self.issuer.refresh_ttl();
        let (presented, next) = (jti.clone(), next_jti.clone());
        let rotation = self
            .blocking(move |s| s.rotate(&presented, &next, next_exp, now))
            .await?;
        match rotation {
            Rotation::Rotated { user } if user == claims.sub => {}
            Rotation::Rotated { .. } | Rotation::Revoked | Rotation::Unknown => {
                audit("refresh_refused", &claims.sub, ip);
                return Err(TokenError::Revoked.into());
            }
            Rotation::Reused { family, user } => {
                self.metrics.refresh_reuse();
                tracing::warn!(
                    target: "authgate::audit",
                    event = "refresh_reuse_detected",
                    user = %Untrusted(&user),
                    family = %family,
                    ip = %ip,
                    "a spent refresh token was presented again: its family is revoked"
                );
                return Err(TokenError::RefreshReused.into());
            }
        }
        let name = claims.sub.clone();
        let user = self.blocking(move |s| s.user(&name)).await?;
        let Some(user) = user.filter(|u| !u.disabled) else {
            let spent = next_jti.clone();
            self.blocking(move |s| s.revoke_family_of(&spent, now))
                .await?;
            audit("refresh_refused", &claims.sub, ip);
            return Err(TokenError::Revoked.into());
        };
        let csrf = claims.extra.contains_key(CSRF_CLAIM).then(random_uuid);
        let access = self.access_token(&user, now, false, claims.auth_time, csrf.as_deref())?;
        let refresh = self.refresh_token(
            &user.name,
            &next_jti,
            now,
            next_exp,
            claims.auth_time,
            csrf.as_deref(),
        )?;
        audit("refresh", &user.name, ip);
        Ok(Session {
            access,
            refresh,
            csrf,
        })
    }

    async fn logout(
        &self,
        req: Request<Incoming>,
        ip: IpAddr,
        auth: &Authenticator,
    ) -> Result<Response<Body>, Error> {
        let (bearer, body) = bearer_and_body(req).await?;
        let tokens: Vec<String> = [bearer, body.refresh_token, body.access_token]
            .into_iter()
            .flatten()
            .collect();
        self.sign_out(&tokens, ip, auth).await?;
        let mut response = Response::new(crate::body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    /// Revokes a session's tokens: a refresh token's whole family, an access token until
    /// it expires.
    pub(crate) async fn sign_out(
        &self,
        tokens: &[String],
        ip: IpAddr,
        auth: &Authenticator,
    ) -> Result<(), Error> {
        if tokens.is_empty() {
            return Err(Error::MissingToken);
        }
        let now = now_secs();
        let mut user = None;
        for token in tokens {
            let claims = auth.verifier().verify(token, now)?;
            let jti = claims.jti.clone().ok_or(TokenError::Malformed)?;
            match claims.token_type.as_deref() {
                Some("refresh") => {
                    self.blocking(move |s| s.revoke_family_of(&jti, now))
                        .await?;
                }
                Some("access") => {
                    let exp = claims.exp.unwrap_or(now);
                    let revoked = jti.clone();
                    self.blocking(move |s| s.revoke_token(&revoked, exp))
                        .await?;
                    self.revocations.revoke_token(&jti, exp);
                }
                _ => return Err(TokenError::Malformed.into()),
            }
            user = Some(claims.sub);
        }
        audit("logout", user.as_deref().unwrap_or("-"), ip);
        Ok(())
    }

    fn me<B>(&self, req: &Request<B>, auth: &Authenticator) -> Result<Response<Body>, Error> {
        let caller = auth.authenticate(req.headers())?;
        Ok(json_response(
            StatusCode::OK,
            serde_json::json!({
                "logged_in_as": caller.name(),
                "roles": caller.roles(),
                "exp": caller.claims.exp,
            }),
        ))
    }

    /// Runs a store call on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Error> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || call(store.as_ref())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(StoreError::Conflict)) => Err(Error::UsernameTaken),
            Ok(Err(error)) => Err(Error::StoreUnavailable(error)),
            Err(failed) => Err(Error::TaskFailed(failed)),
        }
    }

    /// `fresh`: true only right after a password login.
    fn access_token(
        &self,
        user: &User,
        now: i64,
        fresh: bool,
        auth_time: Option<i64>,
        csrf: Option<&str>,
    ) -> Result<String, Error> {
        let exp = now + self.issuer.access_ttl();
        let signed = self.issuer.access_token(
            &user.name,
            &user.roles,
            now,
            exp,
            Login {
                fresh,
                auth_time,
                csrf,
            },
        );
        signed.map_err(Error::Signing)
    }

    fn refresh_token(
        &self,
        user: &str,
        jti: &str,
        now: i64,
        exp: i64,
        auth_time: Option<i64>,
        csrf: Option<&str>,
    ) -> Result<String, Error> {
        let signed = self
            .issuer
            .refresh_token(user, jti, now, exp, auth_time, csrf);
        signed.map_err(Error::Signing)
    }

    /// `tokens.refresh_ttl` in seconds.
    pub(crate) fn refresh_ttl(&self) -> i64 {
        self.issuer.refresh_ttl()
    }

    fn token_response(&self, access: String, refresh: String) -> Response<Body> {
        json_response(
            StatusCode::OK,
            serde_json::json!({
                "access_token": access,
                "refresh_token": refresh,
                "token_type": "Bearer",
                "expires_in": self.issuer.access_ttl(),
            }),
        )
    }
}

/// Usernames become the identity header: short, printable, unambiguous.
pub(crate) fn check_username(name: &str) -> Result<(), Error> {
    let valid_length = (3..=64).contains(&name.len());
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    let starts_well = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    if valid_length && valid_chars && starts_well {
        Ok(())
    } else {
        Err(Error::InvalidInput(
            "a username is 3 to 64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit",
        ))
    }
}

fn password_error(e: PasswordError) -> Error {
    match e {
        PasswordError::Busy => Error::Busy,
        PasswordError::Hashing => Error::Internal("password hashing failed"),
    }
}

/// Reads a small body: the bytes, or 413 above the limit.
async fn read_body(body: Incoming) -> Result<Bytes, Error> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::PayloadTooLarge),
        Err(_) => Err(Error::BadRequest("the request body could not be read")),
    }
}

/// A JSON object or a form, told apart by the body itself: `curl -d '{...}'` labels JSON
/// as a form, and a form never starts with `{`.
/// A form body (the browser's login and logout forms).
pub(crate) async fn read_form<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Error> {
    let bytes = read_body(req.into_body()).await?;
    serde_urlencoded::from_bytes(&bytes).map_err(|_| Error::InvalidInput("the form is incomplete"))
}

async fn read_form_or_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Error> {
    let bytes = read_body(req.into_body()).await?;
    let bad = || Error::InvalidInput("the body must be JSON (or a form) with the expected fields");
    if bytes.trim_ascii_start().starts_with(b"{") {
        serde_json::from_slice(&bytes).map_err(|_| bad())
    } else {
        serde_urlencoded::from_bytes(&bytes).map_err(|_| bad())
    }
}

/// The bearer token (if any) and the JSON body (if any) of a refresh or logout.
async fn bearer_and_body(req: Request<Incoming>) -> Result<(Option<String>, TokenBody), Error> {
    let bearer = match bearer_token(req.headers()) {
        Ok(token) => Some(token.to_owned()),
        Err(Error::MissingToken) => None,
        Err(e) => return Err(e),
    };
    let bytes = read_body(req.into_body()).await?;
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        TokenBody::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|_| {
            Error::InvalidInput("the body must be JSON with refresh_token or access_token")
        })?
    };
    Ok((bearer, body))
}

/// The one token of a request that may carry it twice; two different ones are a conflict.
fn one_token(bearer: Option<String>, body: Option<String>) -> Result<String, Error> {
    match (bearer, body) {
        (Some(a), Some(b)) if a != b => Err(Error::ConflictingCredentials),
        (Some(token), _) | (None, Some(token)) => Ok(token),
        (None, None) => Err(Error::MissingToken),
    }
}

/// The current second, once it is at least `before` (at most about a second away: a
/// revocation's instant is the second after it was made).
async fn wait_past(before: Option<i64>) -> i64 {
    let Some(before) = before else {
        return now_secs();
    };
    loop {
        let now = now_secs();
        if now >= before || before - now > 2 {
            return now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// One audit event: who, what, from where. Never a password or a token.
fn audit(event: &'static str, user: &str, ip: IpAddr) {
    tracing::info!(target: "authgate::audit", event, user = %Untrusted(user), ip = %ip);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["alice", "bob.smith", "a_b-c", "user@example.com", "abc"] {
            assert!(check_username(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ab",
            "-alice",
            "al ice",
            "al\nice",
            "ålice",
            &"a".repeat(65),
        ] {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_token_refuses_two_different_ones() {
        assert_eq!(one_token(Some("a".into()), None).ok(), Some("a".into()));
        assert_eq!(one_token(None, Some("b".into())).ok(), Some("b".into()));
        assert_eq!(
            one_token(Some("a".into()), Some("a".into())).ok(),
            Some("a".into())
        );
        assert!(matches!(
            one_token(Some("a".into()), Some("b".into())),
            Err(Error::ConflictingCredentials)
        ));
        assert!(matches!(one_token(None, None), Err(Error::MissingToken)));
    }
}
