//! The identity headers: what a verified caller becomes on the request the upstream gets
//! (`identity.user_header` and `identity.claim_headers`), and their folded spellings, by
//! which every client copy is recognised and removed.

use http::header::{HeaderName, HeaderValue};

use crate::config::Identity;
use crate::error::Error;
use crate::headers;
use crate::jwt::{Claims, TokenError};

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
        let user = HeaderValue::from_str(&claims.sub).map_err(|_| unforwardable())?;
        headers.push((self.user.clone(), user));
        for (name, claim) in &self.claims {
            // An absent claim, or an empty list, sets no header.
            if let Some(text) = claims.header_text(claim).filter(|t| !t.is_empty()) {
                let value = HeaderValue::from_str(&text).map_err(|_| unforwardable())?;
                headers.push((name.clone(), value));
            }
        }
        Ok(headers)
    }
}
