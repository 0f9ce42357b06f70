//! Credentials on a request: the one bearer token it carries, and the verified identity
//! that token stands for. Used by the route path and by the account endpoints alike.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap};

use crate::error::Error;
use crate::jwt::{Claims, TokenError, Verifier};
use crate::revocation::Revocations;

/// The token of the one `Authorization: Bearer` header. Two `Authorization` headers are a
/// conflict, not a choice.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, Error> {
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

/// The verified claims of the request's access token, refused if revoked.
pub fn authenticate(
    headers: &HeaderMap,
    verifier: &Verifier,
    revocations: &Revocations,
) -> Result<Claims, Error> {
    let token = bearer_token(headers)?;
    let claims = verifier.verify_access(token, now_secs())?;
    if revocations.is_revoked(claims.jti.as_deref(), &claims.sub, claims.iat) {
        return Err(TokenError::Revoked.into());
    }
    Ok(claims)
}

/// Seconds since the epoch: the one clock read behind token checks and issuing.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

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
}
