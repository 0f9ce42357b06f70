//! The credential sources: where a request may carry who it is, one function per source.
//! A new source is one function here and one [`Credential`] variant; [`extract`] is the
//! one place that decides which source a request used.

use std::borrow::Cow;

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName};

use crate::api_keys::looks_like_key;
use crate::error::Error;
use crate::headers::X_API_KEY;
use crate::jwt::TokenError;

/// A credential as found on a request, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Credential<'a> {
    /// `Authorization: Bearer <token>`: an access token.
    Bearer(&'a str),
    /// An API key (`agk_...`): as the Bearer token, in `X-API-Key`, or as the password of
    /// `Authorization: Basic` (any user name), for tools that only speak Basic.
    ApiKey(Cow<'a, str>),
    /// The access token in the session cookie of a browser (`[browser]` only).
    Cookie(&'a str),
}

/// The browser session's access token cookie, as Flask-JWT-Extended names it.
pub(crate) const ACCESS_COOKIE: &str = "access_token_cookie";

/// The request's one credential; none is [`Error::MissingToken`]. Two different ones (a
/// token and a key, two keys, a header token and a cookie) are a conflict, not a choice.
/// The session cookie counts only with `cookies` (`[browser]` on).
pub(crate) fn extract(headers: &HeaderMap, cookies: bool) -> Result<Credential<'_>, Error> {
    let header = match (authorization(headers)?, api_key_header(headers)?) {
        (None, None) => None,
        (Some(credential), None) => Some(credential),
        (None, Some(key)) => Some(Credential::ApiKey(Cow::Borrowed(key))),
        (Some(Credential::ApiKey(a)), Some(b)) if a == b => Some(Credential::ApiKey(a)),
        (Some(_), Some(_)) => return Err(Error::ConflictingCredentials),
    };
    let cookie = cookies.then(|| cookie(headers, ACCESS_COOKIE)).flatten();
    match (header, cookie) {
        (None, None) => Err(Error::MissingToken),
        (Some(credential), None) => Ok(credential),
        (None, Some(token)) => Ok(Credential::Cookie(token)),
        (Some(Credential::Bearer(a)), Some(b)) if a == b => Ok(Credential::Cookie(b)),
        (Some(_), Some(_)) => Err(Error::ConflictingCredentials),
    }
}

/// The value of cookie `name`, if the request carries exactly one value for it (a second,
/// different one — say planted by a sibling subdomain — makes it absent rather than
/// guessed).
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut found = None;
    for (key, value) in cookie_pairs(headers) {
        if key == name {
            match found {
                None => found = Some(value),
                Some(seen) if seen == value => {}
                Some(_) => return None,
            }
        }
    }
    found.filter(|v| !v.is_empty())
}

/// Every `name=value` pair of every `Cookie` header.
pub(crate) fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.trim(), value.trim().trim_matches('"')))
        })
}

/// The credential in the one `Authorization` header: a Bearer token or key, or a key as
/// a Basic password. Another scheme (an upstream's own Basic auth) is no credential of
/// ours.
fn authorization(headers: &HeaderMap) -> Result<Option<Credential<'_>>, Error> {
    let Some(value) = one(headers, &header::AUTHORIZATION)? else {
        return Ok(None);
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(TokenError::Malformed.into());
        }
        return Ok(Some(if looks_like_key(rest) {
            Credential::ApiKey(Cow::Borrowed(rest))
        } else {
            Credential::Bearer(rest)
        }));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        return Ok(basic_password(rest)
            .filter(|password| looks_like_key(password))
            .map(|key| Credential::ApiKey(Cow::Owned(key))));
    }
    Ok(None)
}

/// The password of a Basic credential (`base64(user:password)`), if it decodes.
fn basic_password(encoded: &str) -> Option<String> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_owned())
}

fn api_key_header(headers: &HeaderMap) -> Result<Option<&str>, Error> {
    Ok(one(headers, &X_API_KEY)?.map(str::trim))
}

/// The value of a header that may appear once; two are a conflict.
fn one<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, Error> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::ConflictingCredentials);
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| TokenError::Malformed.into())
}

/// The token of the one `Authorization: Bearer` header (the account endpoints' refresh
/// and logout tokens). Two `Authorization` headers are a conflict, not a choice.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, Error> {
    let value = one(headers, &header::AUTHORIZATION)?.ok_or(Error::MissingToken)?;
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
            extract(&headers(&["Bearer abc"]), false).ok(),
            Some(Credential::Bearer("abc"))
        );
    }

    fn with(mut h: HeaderMap, name: &str, value: &str) -> HeaderMap {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
        h
    }

    #[test]
    fn a_key_comes_as_bearer_x_api_key_or_basic_password() {
        let key = "agk_0123";
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("any:{key}"));
        for h in [
            headers(&["Bearer agk_0123"]),
            with(HeaderMap::new(), "x-api-key", key),
            headers(&[&format!("Basic {basic}")]),
            // The same key twice is one credential.
            with(headers(&["Bearer agk_0123"]), "x-api-key", key),
        ] {
            assert_eq!(
                extract(&h, false).ok(),
                Some(Credential::ApiKey(key.into())),
                "{h:?}"
            );
        }
        // A Basic password that is not a key is the upstream's business.
        let plain = base64::engine::general_purpose::STANDARD.encode("user:secret");
        assert!(matches!(
            extract(&headers(&[&format!("Basic {plain}")]), false),
            Err(Error::MissingToken)
        ));
    }

    #[test]
    fn the_session_cookie_counts_only_for_browsers_and_never_beside_another_token() {
        let cookie = with(
            HeaderMap::new(),
            "cookie",
            "theme=x; access_token_cookie=a.b.c",
        );
        assert_eq!(
            extract(&cookie, true).ok(),
            Some(Credential::Cookie("a.b.c"))
        );
        assert!(matches!(extract(&cookie, false), Err(Error::MissingToken)));
        let same = with(
            headers(&["Bearer a.b.c"]),
            "cookie",
            "access_token_cookie=a.b.c",
        );
        assert_eq!(extract(&same, true).ok(), Some(Credential::Cookie("a.b.c")));
        for other in [
            with(
                headers(&["Bearer d.e.f"]),
                "cookie",
                "access_token_cookie=a.b.c",
            ),
            with(
                with(HeaderMap::new(), "x-api-key", "agk_1"),
                "cookie",
                "access_token_cookie=a.b.c",
            ),
        ] {
            assert!(
                matches!(extract(&other, true), Err(Error::ConflictingCredentials)),
                "{other:?}"
            );
        }
    }

    #[test]
    fn two_different_credentials_conflict() {
        for h in [
            with(headers(&["Bearer a.b.c"]), "x-api-key", "agk_1"),
            with(headers(&["Bearer agk_2"]), "x-api-key", "agk_1"),
            with(
                with(HeaderMap::new(), "x-api-key", "agk_1"),
                "x-api-key",
                "agk_1",
            ),
        ] {
            assert!(
                matches!(extract(&h, false), Err(Error::ConflictingCredentials)),
                "{h:?}"
            );
        }
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
