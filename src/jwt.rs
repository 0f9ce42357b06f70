//! JWT claims, verification and signing: pure functions of a token, the configured keys
//! and the current time. No IO, no clock reads (time comes in as a parameter).
//!
//! Verification is written out step by step rather than delegated to
//! `jsonwebtoken::decode`, because the header must be vetted before any key is chosen:
//! the `kid` selects a key, the key fixes the algorithm, and headers that would let the
//! token pick its own key (`jku`, `x5u`, `jwk`, `x5c`) or demand unknown processing
//! (`crit`) are refused outright. The signature itself is checked by jsonwebtoken's crypto
//! backend (aws-lc-rs).

mod keys;

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

pub use jsonwebtoken::Algorithm;
pub use keys::{Key, KeyError, generate as generate_key};

/// Why a token was refused. Each maps to a fixed `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token header names its own key or critical extensions")]
    ForbiddenHeader,
    #[error("token algorithm not accepted")]
    AlgorithmNotAllowed,
    #[error("token key id unknown")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("token has no exp")]
    MissingExpiry,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("not an access token")]
    NotAccessToken,
    #[error("not a refresh token")]
    NotRefreshToken,
    #[error("refresh token already used")]
    RefreshReused,
    #[error("token revoked")]
    Revoked,
    #[error("a claim cannot be forwarded")]
    UnforwardableClaim,
}

impl TokenError {
    /// A short name for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::ForbiddenHeader => "forbidden_header",
            TokenError::AlgorithmNotAllowed => "algorithm",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::MissingExpiry => "missing_exp",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::NotAccessToken => "not_access_token",
            TokenError::NotRefreshToken => "not_refresh_token",
            TokenError::RefreshReused => "refresh_reused",
            TokenError::Revoked => "revoked",
            TokenError::UnforwardableClaim => "unforwardable_claim",
        }
    }

    /// Text for `error_description`: fixed, printable, free of `"` and `\` (RFC 6750 §3).
    pub fn description(&self) -> &'static str {
        match self {
            TokenError::Malformed => "the token is malformed",
            TokenError::ForbiddenHeader => "the token header carries a forbidden parameter",
            TokenError::AlgorithmNotAllowed => "the token algorithm is not accepted",
            TokenError::UnknownKey => "the token names an unknown key",
            TokenError::BadSignature => "the token signature is invalid",
            TokenError::MissingExpiry => "the token has no expiry",
            TokenError::Expired => "the token has expired",
            TokenError::NotYetValid => "the token is not valid yet",
            TokenError::WrongIssuer => "the token issuer is not accepted",
            TokenError::WrongAudience => "the token audience is not accepted",
            TokenError::NotAccessToken => "the token is not an access token",
            TokenError::NotRefreshToken => "the token is not a refresh token",
            TokenError::RefreshReused => "the refresh token has already been used",
            TokenError::Revoked => "the token has been revoked",
            TokenError::UnforwardableClaim => "a token claim cannot be forwarded as a header",
        }
    }
}

/// `"x"` or `["x", "y"]`, as `aud` and `roles` may be written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn contains(&self, value: &str) -> bool {
        match self {
            OneOrMany::One(one) => one == value,
            OneOrMany::Many(many) => many.iter().any(|v| v == value),
        }
    }

    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(one) => std::slice::from_ref(one),
            OneOrMany::Many(many) => many,
        }
    }
}

impl Default for OneOrMany {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

/// The claims authgate reads and writes: Flask-JWT-Extended's defaults plus `iss`, `aud`
/// and `roles`. Other claims go in `extra`: written when signing, and read when verifying
/// only if `identity.claim_headers` names them (a second parse, paid only then).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(
        default,
        with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub iat: Option<i64>,
    #[serde(
        default,
        with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub nbf: Option<i64>,
    #[serde(
        default,
        with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<OneOrMany>,
    #[serde(default)]
    pub roles: OneOrMany,
    #[serde(skip)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Claim names that [`Claims`] has fields for.
const TYPED_CLAIMS: &[&str] = &[
    "sub", "iat", "nbf", "exp", "jti", "type", "fresh", "iss", "aud", "roles",
];

impl Claims {
    /// A claim as header text: strings as they are, arrays comma-joined, numbers and
    /// booleans printed; `None` when absent or an object.
    pub fn header_text(&self, name: &str) -> Option<Cow<'_, str>> {
        fn join(values: &[String]) -> Cow<'_, str> {
            match values {
                [one] => Cow::Borrowed(one.as_str()),
                many => Cow::Owned(many.join(",")),
            }
        }
        match name {
            "sub" => Some(Cow::Borrowed(self.sub.as_str())),
            "roles" => Some(join(self.roles.as_slice())),
            "jti" => self.jti.as_deref().map(Cow::Borrowed),
            "iss" => self.iss.as_deref().map(Cow::Borrowed),
            "type" => self.token_type.as_deref().map(Cow::Borrowed),
            "aud" => self.aud.as_ref().map(|a| join(a.as_slice())),
            "iat" => self.iat.map(|v| Cow::Owned(v.to_string())),
            "nbf" => self.nbf.map(|v| Cow::Owned(v.to_string())),
            "exp" => self.exp.map(|v| Cow::Owned(v.to_string())),
            "fresh" => self.fresh.map(|v| Cow::Owned(v.to_string())),
            other => match self.extra.get(other)? {
                serde_json::Value::String(s) => Some(Cow::Borrowed(s.as_str())),
                serde_json::Value::Array(items) => Some(Cow::Owned(
                    items
                        .iter()
                        .map(|v| match v {
                            serde_json::Value::String(s) => s.clone(),
                            v => v.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                )),
                serde_json::Value::Object(_) | serde_json::Value::Null => None,
                v => Some(Cow::Owned(v.to_string())),
            },
        }
    }
}

/// NumericDate (RFC 7519 §2): an integer, or a float truncated to whole seconds.
mod numeric_date {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_i64(*v),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Number {
            Int(i64),
            Float(f64),
        }
        Ok(match Option::<Number>::deserialize(d)? {
            None => None,
            Some(Number::Int(i)) => Some(i),
            // `as` saturates, which is what an absurd date deserves.
            Some(Number::Float(f)) => Some(f as i64),
        })
    }
}

/// The JOSE header fields authgate reads. The forbidden ones are captured only to refuse
/// them.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    jku: bool,
    #[serde(default, deserialize_with = "present")]
    x5u: bool,
    #[serde(default, deserialize_with = "present")]
    jwk: bool,
    #[serde(default, deserialize_with = "present")]
    x5c: bool,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

/// True for any value, `null` included: these parameters are refused by their presence.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// The name an algorithm has in a JOSE header.
pub fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        // jsonwebtoken's enum is non-exhaustive; a key can only hold an algorithm that
        // config parsing accepted, so this name never meets a configured key.
        _ => "unsupported",
    }
}

/// Checks access tokens against the configured keys and claims policy.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// The signing key first (it verifies tokens without a `kid`), then `previous_keys`.
    keys: Vec<Key>,
    issuer: String,
    audience: String,
    leeway_secs: i64,
    /// Claims outside [`Claims`]' fields that callers read from `extra`.
    extra_claims: Vec<String>,
}

impl Verifier {
    pub fn new(keys: Vec<Key>, issuer: String, audience: String, leeway_secs: i64) -> Verifier {
        Verifier {
            keys,
            issuer,
            audience,
            leeway_secs,
            extra_claims: Vec::new(),
        }
    }

    /// Also read these claims into `Claims::extra` (those with typed fields are skipped).
    pub fn with_extra_claims<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Verifier {
        self.extra_claims = names
            .into_iter()
            .filter(|n| !TYPED_CLAIMS.contains(n))
            .map(str::to_owned)
            .collect();
        self
    }

    /// Verifies `token` as an access token at `now` (seconds since the epoch). Revocation
    /// is not checked here: that needs state (see `revocation`).
    pub fn verify_access(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let claims = self.verify(token, now)?;
        if claims.token_type.as_deref() != Some("access") {
            return Err(TokenError::NotAccessToken);
        }
        Ok(claims)
    }

    /// Verifies signature and time, issuer and audience claims; any token type.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| TokenError::Malformed)?;
        let header: Header<'_> =
            serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
        if header.jku || header.x5u || header.jwk || header.x5c || header.crit {
            return Err(TokenError::ForbiddenHeader);
        }
        let key = match header.kid.as_deref() {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid == kid)
                .ok_or(TokenError::UnknownKey)?,
            None => self.keys.first().ok_or(TokenError::UnknownKey)?,
        };
        // The key fixes the algorithm; "none" can never equal a configured key's.
        if header.alg != algorithm_name(key.alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        // Room for the largest signature (RSA-8192: 1024 bytes) without a heap allocation.
        let mut signature = [0u8; 1024];
        let signature_len = URL_SAFE_NO_PAD
            .decode_slice(signature_b64, &mut signature)
            .map_err(|_| TokenError::Malformed)?;
        if !key
            .verifying
            .verify(signing_input.as_bytes(), &signature[..signature_len])
        {
            return Err(TokenError::BadSignature);
        }
        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| TokenError::Malformed)?;
        let mut claims: Claims =
            serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        self.check_claims(&claims, now)?;
        if !self.extra_claims.is_empty() {
            let mut all: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
            for name in &self.extra_claims {
                if let Some(value) = all.remove(name) {
                    claims.extra.insert(name.clone(), value);
                }
            }
        }
        Ok(claims)
    }

    fn check_claims(&self, claims: &Claims, now: i64) -> Result<(), TokenError> {
        // The subject becomes the identity header: it must be one, or nobody is forwarded.
        if claims.sub.is_empty() || http::HeaderValue::from_str(&claims.sub).is_err() {
            return Err(TokenError::UnforwardableClaim);
        }
        self.check_times(claims, now)?;
        if claims.iss.as_deref() != Some(self.issuer.as_str()) {
            return Err(TokenError::WrongIssuer);
        }
        if !claims
            .aud
            .as_ref()
            .is_some_and(|aud| aud.contains(&self.audience))
        {
            return Err(TokenError::WrongAudience);
        }
        Ok(())
    }

    /// The checks that depend on the clock: `exp` present and not past, `nbf` not in the
    /// future (leeway applies). Run again on every use of a cached verification.
    pub fn check_times(&self, claims: &Claims, now: i64) -> Result<(), TokenError> {
        let exp = claims.exp.ok_or(TokenError::MissingExpiry)?;
        if exp.saturating_add(self.leeway_secs) <= now {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = claims.nbf
            && nbf > now.saturating_add(self.leeway_secs)
        {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }

    /// The JWK Set of every asymmetric verification key (HMAC secrets are never published).
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .keys
            .iter()
            .filter_map(|k| k.public_jwk.as_ref())
            .collect();
        serde_json::json!({ "keys": keys })
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The clock skew allowed on `exp` and `nbf`, in seconds.
    pub fn leeway_secs(&self) -> i64 {
        self.leeway_secs
    }
}

/// Signs tokens with the configured signing key.
#[derive(Debug, Clone)]
pub struct Signer {
    key: Key,
}

#[derive(Debug, thiserror::Error)]
#[error("token signing failed")]
pub struct SignError(#[source] jsonwebtoken::errors::Error);

impl Signer {
    /// `None` when the key cannot sign (a public key configured as the signing key).
    pub fn new(key: Key) -> Option<Signer> {
        key.can_sign().then_some(Signer { key })
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, SignError> {
        let mut header = jsonwebtoken::Header::new(self.key.alg);
        header.kid = Some(self.key.kid.clone());
        let encoding =
            self.key.encoding.as_ref().ok_or_else(|| {
                SignError(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into())
            })?;
        /// The claims on the wire: the typed fields and `extra`, side by side.
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(flatten)]
            claims: &'a Claims,
            #[serde(flatten)]
            extra: &'a serde_json::Map<String, serde_json::Value>,
        }
        let wire = Wire {
            claims,
            extra: &claims.extra,
        };
        jsonwebtoken::encode(&header, &wire, encoding).map_err(SignError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn claims(token_type: &str) -> Claims {
        Claims {
            sub: "alice".into(),
            iat: Some(NOW),
            nbf: Some(NOW),
            exp: Some(NOW + 900),
            jti: Some("j1".into()),
            token_type: Some(token_type.into()),
            fresh: Some(true),
            iss: Some("authgate".into()),
            aud: Some(OneOrMany::One("authgate".into())),
            roles: OneOrMany::Many(vec!["admin".into()]),
            extra: Default::default(),
        }
    }

    fn setup(alg: Algorithm) -> (Signer, Verifier) {
        let text = generate_key(alg).expect("generate");
        let key = if alg.family() == jsonwebtoken::AlgorithmFamily::Hmac {
            Key::from_secret(alg, text.trim().as_bytes(), None)
        } else {
            Key::from_pem(alg, text.as_bytes(), None)
        }
        .expect("key");
        let verifier = Verifier::new(vec![key.clone()], "authgate".into(), "authgate".into(), 30);
        (Signer::new(key).expect("signer"), verifier)
    }

    #[test]
    fn every_algorithm_round_trips() {
        for alg in [
            Algorithm::HS256,
            Algorithm::HS384,
            Algorithm::HS512,
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ] {
            let (signer, verifier) = setup(alg);
            let token = signer.sign(&claims("access")).expect("sign");
            let got = verifier.verify_access(&token, NOW).expect("verify");
            assert_eq!(got, claims("access"), "{alg:?}");
        }
    }

    #[test]
    fn time_claims_apply_leeway() {
        let (signer, verifier) = setup(Algorithm::HS256);
        let token = signer.sign(&claims("access")).expect("sign");
        assert!(verifier.verify_access(&token, NOW + 900 + 29).is_ok());
        assert_eq!(
            verifier.verify_access(&token, NOW + 900 + 30),
            Err(TokenError::Expired)
        );
        assert!(verifier.verify_access(&token, NOW - 30).is_ok());
        assert_eq!(
            verifier.verify_access(&token, NOW - 31),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn refresh_tokens_are_not_access_tokens() {
        let (signer, verifier) = setup(Algorithm::HS256);
        let token = signer.sign(&claims("refresh")).expect("sign");
        assert!(verifier.verify(&token, NOW).is_ok());
        assert_eq!(
            verifier.verify_access(&token, NOW),
            Err(TokenError::NotAccessToken)
        );
    }

    #[test]
    fn header_parameters_naming_keys_are_refused() {
        let (signer, verifier) = setup(Algorithm::HS256);
        let token = signer.sign(&claims("access")).expect("sign");
        let rest = &token[token.find('.').expect("dot")..];
        for header in [
            r#"{"alg":"HS256","jku":"https://evil/jwks"}"#,
            r#"{"alg":"HS256","x5u":"https://evil/cert"}"#,
            r#"{"alg":"HS256","jwk":{"kty":"oct","k":"AA"}}"#,
            r#"{"alg":"HS256","x5c":["MIIB"]}"#,
            r#"{"alg":"HS256","crit":["exp"]}"#,
        ] {
            let forged = format!("{}{rest}", URL_SAFE_NO_PAD.encode(header));
            assert_eq!(
                verifier.verify(&forged, NOW),
                Err(TokenError::ForbiddenHeader)
            );
        }
        let none = format!("{}{rest}", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
        assert_eq!(
            verifier.verify(&none, NOW),
            Err(TokenError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn claim_header_text() {
        let mut c = claims("access");
        c.roles = OneOrMany::Many(vec!["a".into(), "b".into()]);
        c.extra.insert("team".into(), serde_json::json!("blue"));
        c.extra.insert("level".into(), serde_json::json!(3));
        c.extra.insert("tags".into(), serde_json::json!(["x", 1]));
        assert_eq!(c.header_text("roles").as_deref(), Some("a,b"));
        assert_eq!(c.header_text("team").as_deref(), Some("blue"));
        assert_eq!(c.header_text("level").as_deref(), Some("3"));
        assert_eq!(c.header_text("tags").as_deref(), Some("x,1"));
        assert_eq!(c.header_text("missing"), None);
    }
}
