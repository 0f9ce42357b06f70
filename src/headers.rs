//! Header names the gateway manages, and the folded spelling used to compare them.
//!
//! Many servers (CGI, PHP, Django, Rails via Rack) read `X_Auth_User` and `x-auth-user` as
//! the same variable, so a client-sent header is matched against the gateway's identity
//! headers by its folded spelling: lower case, `_` read as `-`.

use std::borrow::Cow;

use http::HeaderName;

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Where machines commonly send an API key.
pub(crate) static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// Envoy's header for the client certificate the gateway verified; only the gateway sets it.
pub(crate) static X_FORWARDED_CLIENT_CERT: HeaderName =
    HeaderName::from_static("x-forwarded-client-cert");

/// `name` lower-cased with `_` read as `-`. Header names from `http` are already lower case.
pub(crate) fn fold(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b == b'_' || b.is_ascii_uppercase()) {
        Cow::Owned(
            name.bytes()
                .map(|b| {
                    if b == b'_' {
                        '-'
                    } else {
                        char::from(b.to_ascii_lowercase())
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(name)
    }
}

/// Headers the gateway sets or relies on itself; an identity header may not take one of
/// these (folded) names.
pub(crate) fn is_reserved(folded: &str) -> bool {
    const RESERVED: &[&str] = &[
        "host",
        "authorization",
        "cookie",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "x-request-id",
        "forwarded",
        "x-real-ip",
    ];
    RESERVED.contains(&folded) || is_forwarding(folded)
}

/// Forwarding headers, which only a trusted proxy may send (`folded` spelling).
pub(crate) fn is_forwarding(folded: &str) -> bool {
    folded.starts_with("x-forwarded-") || folded == "forwarded" || folded == "x-real-ip"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_reads_underscores_as_dashes() {
        assert_eq!(fold("x-auth-user"), "x-auth-user");
        assert_eq!(fold("x_auth_user"), "x-auth-user");
        assert_eq!(fold("X_Auth-USER"), "x-auth-user");
        assert!(matches!(fold("x-auth-user"), Cow::Borrowed(_)));
    }
}
