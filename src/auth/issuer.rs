//! The one place tokens are minted: access and refresh tokens for the account endpoints
//! and for `authgate token mint` alike, with the claims Flask-JWT-Extended writes (plus
//! `iss`, `aud` and `roles`) and a random UUID as `jti`.

use crate::config::Tokens;
use crate::jwt::{Claims, OneOrMany, SignError, Signer};

/// What an access token says about the login behind it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Login<'a> {
    /// Right after a password login, not a refresh.
    pub(crate) fresh: bool,
    /// When the password was entered (none for a minted token).
    pub(crate) auth_time: Option<i64>,
    /// A cookie session's double-submit value.
    pub(crate) csrf: Option<&'a str>,
}

/// Signs tokens with the configured signing key, for the configured issuer and audience.
#[derive(Debug)]
pub(crate) struct Issuer {
    signer: Signer,
    issuer: String,
    audience: String,
    access_ttl: i64,
    refresh_ttl: i64,
}

/// Seconds of a configured lifetime, kept far from overflow when added to a timestamp.
fn seconds(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

impl Issuer {
    /// `None` when the signing key cannot sign (a public key).
    pub(crate) fn new(tokens: &Tokens) -> Option<Issuer> {
        Some(Issuer {
            signer: Signer::new(tokens.keys.first()?.clone())?,
            issuer: tokens.issuer.clone(),
            audience: tokens.audience.clone(),
            access_ttl: seconds(tokens.access_ttl),
            refresh_ttl: seconds(tokens.refresh_ttl),
        })
    }

    /// `tokens.access_ttl` in seconds.
    pub(crate) fn access_ttl(&self) -> i64 {
        self.access_ttl
    }

    /// `tokens.refresh_ttl` in seconds.
    pub(crate) fn refresh_ttl(&self) -> i64 {
        self.refresh_ttl
    }

    /// An access token of `sub` with `roles`, valid until `exp`, for the login `login`
    /// describes.
    pub(crate) fn access_token(
        &self,
        sub: &str,
        roles: &[String],
        now: i64,
        exp: i64,
        login: Login<'_>,
    ) -> Result<String, SignError> {
        let mut claims = self.claims(sub, "access", random_uuid(), now, exp, login.csrf);
        claims.roles = OneOrMany::Many(roles.to_vec());
        claims.fresh = Some(login.fresh);
        claims.auth_time = login.auth_time;
        self.signer.sign(&claims)
    }

    /// The refresh token `jti` of `sub` (its id is the store's), valid until `exp`.
    pub(crate) fn refresh_token(
        &self,
        sub: &str,
        jti: &str,
        now: i64,
        exp: i64,
        auth_time: Option<i64>,
        csrf: Option<&str>,
    ) -> Result<String, SignError> {
        let mut claims = self.claims(sub, "refresh", jti.to_owned(), now, exp, csrf);
        claims.auth_time = auth_time;
        self.signer.sign(&claims)
    }

    /// A token of type `kind` that no endpoint takes as an access or refresh token: a
    /// browser's state kept across a round trip elsewhere (an OpenID Connect login), signed
    /// so every replica can read it back and no one can change it.
    pub(crate) fn state_token(
        &self,
        kind: &str,
        sub: &str,
        jti: &str,
        now: i64,
        exp: i64,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, SignError> {
        let mut claims = self.claims(sub, kind, jti.to_owned(), now, exp, None);
        claims.extra = extra;
        self.signer.sign(&claims)
    }

    /// The timestamps are all `now` but `exp`; `csrf` for a cookie session's tokens.
    fn claims(
        &self,
        sub: &str,
        token_type: &str,
        jti: String,
        now: i64,
        exp: i64,
        csrf: Option<&str>,
    ) -> Claims {
        let mut extra = serde_json::Map::new();
        if let Some(csrf) = csrf {
            extra.insert(crate::jwt::CSRF_CLAIM.to_owned(), csrf.into());
        }
        Claims {
            sub: sub.to_owned(),
            iat: Some(now),
            nbf: Some(now),
            exp: Some(exp),
            jti: Some(jti),
            token_type: Some(token_type.to_owned()),
            fresh: Some(false),
            auth_time: None,
            iss: Some(self.issuer.clone()),
            aud: Some(OneOrMany::One(self.audience.clone())),
            roles: OneOrMany::Many(Vec::new()),
            extra,
        }
    }
}

/// A random UUID (version 4), the `jti` format Flask-JWT-Extended uses.
pub(crate) fn random_uuid() -> String {
    let mut b = [0u8; 16];
    // The system RNG failing is not recoverable; aws-lc aborts before returning an error.
    let _ = aws_lc_rs::rand::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let id = random_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(random_uuid(), id);
    }
}
