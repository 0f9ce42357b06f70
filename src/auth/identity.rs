//! The identity headers: what a verified caller becomes on the request the upstream gets
//! (`identity.user_header` and `identity.claim_headers`), and their folded spellings, by
//! which every client copy is recognised and removed.

use http::header::{HeaderName, HeaderValue};

use crate::config::Identity;
use crate::error::Error;
use crate::headers;
use crate::jwt::{Claims, TokenError, is_forwardable};

/// The identity headers of one config.
#[derive(Debug)]
pub(crate) struct IdentityHeaders {
    user: HeaderName,
    claims: Vec<(HeaderName, String)>,
    /// Folded spellings of every identity header, for stripping client copies.
    folded: Vec<String>,
}

impl IdentityHeaders {
    pub(crate) fn new(identity: &Identity) -> IdentityHeaders {
        IdentityHeaders {
            user: identity.user_header.clone(),
            claims: identity.claim_headers.clone(),
            folded: identity
                .header_names()
                .map(|h| headers::fold(h.as_str()).into_owned())
                .collect(),
        }
    }

    /// How many headers a caller makes at most.
    pub(crate) fn len(&self) -> usize {
        1 + self.claims.len()
    }

    /// Whether a header name (in its folded spelling) is one of the identity headers.
    pub(crate) fn is_identity(&self, folded: &str) -> bool {
        self.folded.iter().any(|f| f == folded)
    }

    /// The identity headers verified claims make, built once per token (the verified-token
    /// cache keeps them). A claim that cannot be a header value refuses the request:
    /// forwarding it without its identity would be worse.
    pub(crate) fn render(&self, claims: &Claims) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
        let unforwardable = || Error::InvalidToken(TokenError::UnforwardableClaim);
        let mut headers = Vec::with_capacity(self.len());
        // Visible ASCII only: `HeaderValue` would take bytes above 0x7f too, and hand the
        // upstream raw non-ASCII it may read in any charset.
        let value = |text: &str| {
            if is_forwardable(text) {
                HeaderValue::from_str(text).map_err(|_| unforwardable())
            } else {
                Err(unforwardable())
            }
        };
        headers.push((self.user.clone(), value(&claims.sub)?));
        for (name, claim) in &self.claims {
            // An absent claim, or an empty list, sets no header.
            if let Some(text) = claims.header_text(claim).filter(|t| !t.is_empty()) {
                headers.push((name.clone(), value(&text)?));
            }
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::OneOrMany;

    fn identity() -> IdentityHeaders {
        IdentityHeaders::new(&Identity {
            user_header: HeaderName::from_static("x-auth-user"),
            claim_headers: vec![
                (HeaderName::from_static("x-auth-roles"), "roles".into()),
                (HeaderName::from_static("x-auth-team"), "team".into()),
            ],
            forward_authorization: false,
        })
    }

    fn claims(sub: &str, roles: &[&str], team: serde_json::Value) -> Claims {
        let mut extra = serde_json::Map::new();
        extra.insert("team".into(), team);
        Claims {
            sub: sub.into(),
            roles: OneOrMany::Many(roles.iter().map(|r| (*r).to_owned()).collect()),
            extra,
            ..Claims::default()
        }
    }

    /// Regression (issue 9 item 7): `HeaderValue::from_str` takes bytes above 0x7f, so a
    /// non-ASCII claim reached the upstream as raw bytes.
    #[test]
    fn no_header_carries_a_byte_outside_visible_ascii() {
        let ids = identity();
        let ok = ids
            .render(&claims("alice", &["a", "b c"], serde_json::json!("blue")))
            .expect("render");
        let rendered: Vec<(&str, &[u8])> =
            ok.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        assert_eq!(
            rendered,
            [
                ("x-auth-user", &b"alice"[..]),
                ("x-auth-roles", b"a,b c"),
                ("x-auth-team", b"blue"),
            ]
        );
        for bad in [
            claims("ålice", &[], serde_json::Value::Null),
            claims("alice", &["rôle"], serde_json::Value::Null),
            claims("alice", &[], serde_json::json!("bl\u{fc}e")),
            claims("alice", &[], serde_json::json!(["x", "\u{7f}"])),
            claims("alice", &[" admin"], serde_json::Value::Null),
        ] {
            assert!(
                matches!(
                    ids.render(&bad),
                    Err(Error::InvalidToken(TokenError::UnforwardableClaim))
                ),
                "{bad:?}"
            );
        }
    }
}
