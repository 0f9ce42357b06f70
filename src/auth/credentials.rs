//! The credential sources: where a request may carry who it is, one function per source.
//! A new source is one function here and one [`Credential`] variant; [`extract`] is the
//! one place that decides which source a request used.

use http::header::{self, HeaderMap};

use crate::error::Error;
use crate::jwt::TokenError;

/// A credential as found on a request, not yet verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credential<'a> {
    /// `Authorization: Bearer <token>`: an access token.
    Bearer(&'a str),
}

/// The request's one credential; none is [`Error::MissingToken`].
pub(crate) fn extract(headers: &HeaderMap) -> Result<Credential<'_>, Error> {
    bearer_token(headers).map(Credential::Bearer)
}

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
        assert_eq!(
            extract(&headers(&["Bearer abc"])).ok(),
            Some(Credential::Bearer("abc"))
        );
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
