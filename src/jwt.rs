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
    #[error("token lifetime too long")]
    LifetimeTooLong,
    #[error("API key checksum mismatch")]
    KeyChecksum,
    #[error("unknown API key")]
    UnknownApiKey,
    #[error("the issuer's keys are unavailable")]
    IssuerUnavailable,
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
            TokenError::LifetimeTooLong => "lifetime_too_long",
            TokenError::KeyChecksum => "api_key_checksum",
            TokenError::UnknownApiKey => "api_key_unknown",
            TokenError::IssuerUnavailable => "issuer_unavailable",
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
            TokenError::LifetimeTooLong => "the token lifetime exceeds the accepted maximum",
            TokenError::KeyChecksum => "the API key is mistyped: its checksum does not match",
            TokenError::UnknownApiKey => "the API key is unknown or revoked",
            TokenError::IssuerUnavailable => "the token issuer's keys are unavailable",
        }
    }
}

/// Seconds since the epoch: the one clock read behind token checks and issuing.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The claim that binds a cookie session's tokens to its `csrf_*` cookies (as
/// Flask-JWT-Extended names it).
pub const CSRF_CLAIM: &str = "csrf";

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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// When the user last entered a password (OpenID Connect's `auth_time`): set at login
    /// and carried through every refresh, for routes with `max_auth_age`.
    #[serde(
        default,
        with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub auth_time: Option<i64>,
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
    "sub",
    "iat",
    "nbf",
    "exp",
    "jti",
    "type",
    "fresh",
    "auth_time",
    "iss",
    "aud",
    "roles",
];

impl Claims {
    /// Whether claim `name` is `wanted`, or contains it: as one of an array's items, or as
    /// one of the space-separated words of a string (OAuth's `scope`).
    pub fn claim_holds(&self, name: &str, wanted: &str) -> bool {
        match name {
            "roles" => self.roles.contains(wanted),
            "aud" => self.aud.as_ref().is_some_and(|a| a.contains(wanted)),
            name if TYPED_CLAIMS.contains(&name) => {
                self.header_text(name).is_some_and(|text| text == wanted)
            }
            name => match self.extra.get(name) {
                Some(serde_json::Value::String(s)) => {
                    s == wanted || s.split(' ').any(|word| word == wanted)
                }
                Some(serde_json::Value::Array(items)) => items.iter().any(|item| item == wanted),
                Some(serde_json::Value::Bool(b)) => wanted.parse() == Ok(*b),
                Some(serde_json::Value::Number(n)) => {
                    n.as_i64().is_some_and(|n| wanted.parse() == Ok(n))
                }
                _ => false,
            },
        }
    }

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
            "auth_time" => self.auth_time.map(|v| Cow::Owned(v.to_string())),
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

/// Whether `text` can travel as an identity header value exactly as it is: visible ASCII
/// and inner spaces (RFC 9110 `field-content` without `obs-text` or tabs). Anything else
/// would reach the upstream as raw non-ASCII bytes, or be trimmed into another name.
pub fn is_forwardable(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().all(|b| matches!(b, b' '..=b'~'))
        && bytes.first() != Some(&b' ')
        && bytes.last() != Some(&b' ')
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
    /// Longest accepted `exp - iat` (or `exp - now` without `iat`): a signed token with an
    /// absurd `exp` would otherwise outlive every key rotation and TTL change.
    max_lifetime_secs: i64,
    /// Claims outside [`Claims`]' fields that callers read from `extra`.
    extra_claims: Vec<String>,
}

impl Verifier {
    /// A verifier without a lifetime cap until [`Verifier::with_max_lifetime`] sets one
    /// (the gateway always does, from `tokens.max_lifetime`).
    pub fn new(keys: Vec<Key>, issuer: String, audience: String, leeway_secs: i64) -> Verifier {
        Verifier {
            keys,
            issuer,
            audience,
            leeway_secs,
            max_lifetime_secs: i64::MAX,
            extra_claims: Vec::new(),
        }
    }

    /// Refuses tokens whose `exp` lies more than `secs` after their `iat` (or after now,
    /// for a token without `iat`).
    pub fn with_max_lifetime(mut self, secs: i64) -> Verifier {
        self.max_lifetime_secs = secs;
        self
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
        let payload = verified_payload(token, &self.keys)?;
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
        // The subject becomes the identity header: it must be one, byte for byte, or nobody
        // is forwarded.
        if claims.sub.is_empty() || !is_forwardable(&claims.sub) {
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

    /// The checks that depend on the clock: `exp` present and not past; `nbf` and `iat` not
    /// in the future (leeway applies); `exp` no further from `iat` (or from now, without
    /// `iat`) than the lifetime cap. Run again on every use of a cached verification.
    pub fn check_times(&self, claims: &Claims, now: i64) -> Result<(), TokenError> {
        let exp = claims.exp.ok_or(TokenError::MissingExpiry)?;
        if exp.saturating_add(self.leeway_secs) <= now {
            return Err(TokenError::Expired);
        }
        let latest_start = now.saturating_add(self.leeway_secs);
        // A future `iat` is refused like a future `nbf`: `user revoke` refuses tokens issued
        // before an instant, and a token dated after it would survive the revocation.
        if claims.nbf.is_some_and(|nbf| nbf > latest_start)
            || claims.iat.is_some_and(|iat| iat > latest_start)
        {
            return Err(TokenError::NotYetValid);
        }
        // Saturating: an `exp` of 1e30 or an `iat` of -2^63 is simply too long a lifetime.
        if exp.saturating_sub(claims.iat.unwrap_or(now)) > self.max_lifetime_secs {
            return Err(TokenError::LifetimeTooLong);
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

    /// The claims outside [`Claims`]' fields that the identity headers and routes read.
    pub fn extra_claims(&self) -> &[String] {
        &self.extra_claims
    }
}

/// The payload of `token`, decoded, once its header has been vetted and its signature
/// checked with one of `keys`: the `kid` selects the key (no `kid`: the first), the key
/// fixes the algorithm. Shared by the local [`Verifier`] and the external issuers, whose
/// claims differ but whose signatures are checked alike.
pub fn verified_payload(token: &str, keys: &[Key]) -> Result<Vec<u8>, TokenError> {
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
        Some(kid) => keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(TokenError::UnknownKey)?,
        None => keys.first().ok_or(TokenError::UnknownKey)?,
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
    URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| TokenError::Malformed)
}

/// What `pick` makes of a token's unverified `iss`, to choose whose keys verify it:
/// nothing is trusted from it but that choice. `None` when the payload is unreadable or
/// has no `iss`.
pub fn by_unverified_issuer<T>(token: &str, pick: impl FnOnce(&str) -> Option<T>) -> Option<T> {
    #[derive(Deserialize)]
    struct Iss<'a> {
        #[serde(borrow, default)]
        iss: Option<Cow<'a, str>>,
    }
    let payload_b64 = token.split('.').nth(1)?;
    let payload = URL_SAFE_NO_PAD.decode(payload_b64).ok()?;
    let iss: Iss<'_> = serde_json::from_slice(&payload).ok()?;
    pick(iss.iss.as_deref()?)
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
            auth_time: None,
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

    /// An HS256 verifier with a 30 s leeway and a one-day lifetime cap, and a signer of
    /// raw payloads for it (numbers serde would never write).
    fn raw_setup() -> (Verifier, impl Fn(serde_json::Value) -> String) {
        let secret = b"0123456789abcdef0123456789abcdef";
        let key = Key::from_secret(Algorithm::HS256, secret, None).expect("key");
        let verifier = Verifier::new(vec![key], "authgate".into(), "authgate".into(), 30)
            .with_max_lifetime(86_400);
        let encoding = jsonwebtoken::EncodingKey::from_secret(secret).expect("encoding key");
        let sign = move |payload: serde_json::Value| {
            let header = jsonwebtoken::Header::new(Algorithm::HS256);
            jsonwebtoken::encode(&header, &payload, &encoding).expect("encode")
        };
        (verifier, sign)
    }

    fn payload(exp: serde_json::Value, iat: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "sub": "alice", "exp": exp, "iat": iat, "type": "access",
            "iss": "authgate", "aud": "authgate",
        })
    }

    /// Regression (issue 9 item 7): a token dated in the future survived `user revoke`,
    /// which refuses tokens issued before an instant.
    #[test]
    fn an_iat_beyond_the_leeway_is_refused() {
        let (signer, verifier) = setup(Algorithm::HS256);
        let mut future = claims("access");
        future.iat = Some(NOW + 31);
        future.nbf = None;
        let token = signer.sign(&future).expect("sign");
        assert_eq!(
            verifier.verify_access(&token, NOW),
            Err(TokenError::NotYetValid)
        );
        future.iat = Some(NOW + 30);
        let token = signer.sign(&future).expect("sign");
        assert!(verifier.verify_access(&token, NOW).is_ok());
    }

    /// Regression (issue 9 item 7): `exp` of 1e30 or 2^63 was accepted.
    #[test]
    fn absurd_lifetimes_are_refused() {
        let (verifier, sign) = raw_setup();
        let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("json");
        for exp in [
            "1e30",
            "9223372036854775808",
            "18446744073709551615",
            "1.7e308",
        ] {
            let token = sign(payload(json(exp), json(&NOW.to_string())));
            assert_eq!(
                verifier.verify_access(&token, NOW),
                Err(TokenError::LifetimeTooLong),
                "exp {exp}"
            );
            let without_iat = sign(payload(json(exp), serde_json::Value::Null));
            assert_eq!(
                verifier.verify_access(&without_iat, NOW),
                Err(TokenError::LifetimeTooLong),
                "exp {exp} without iat"
            );
        }
        // An iat far in the past stretches the lifetime just the same.
        for iat in ["-9223372036854775808", "-1e30", "0"] {
            let token = sign(payload(json(&(NOW + 60).to_string()), json(iat)));
            assert_eq!(
                verifier.verify_access(&token, NOW),
                Err(TokenError::LifetimeTooLong),
                "iat {iat}"
            );
        }
        // Exactly the cap passes; a second more does not; floats are whole seconds.
        let at_cap = sign(payload(
            json(&(NOW + 86_400).to_string()),
            json(&NOW.to_string()),
        ));
        assert!(verifier.verify_access(&at_cap, NOW).is_ok());
        let float = sign(payload(
            json(&format!("{}.9", NOW + 86_400)),
            json(&format!("{NOW}.0")),
        ));
        assert!(verifier.verify_access(&float, NOW).is_ok());
        let over = sign(payload(
            json(&(NOW + 86_401).to_string()),
            json(&NOW.to_string()),
        ));
        assert_eq!(
            verifier.verify_access(&over, NOW),
            Err(TokenError::LifetimeTooLong)
        );
    }

    /// Numbers at and past every edge of i64 are refused without a panic.
    #[test]
    fn numeric_dates_at_the_edges_do_not_panic() {
        let (verifier, sign) = raw_setup();
        let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("json");
        for exp in [
            "-1",
            "-1e30",
            "-9223372036854775808",
            "-9223372036854775809",
            "0.5",
            "-0.5",
        ] {
            let token = sign(payload(json(exp), serde_json::Value::Null));
            assert_eq!(
                verifier.verify_access(&token, NOW),
                Err(TokenError::Expired),
                "exp {exp}"
            );
        }
        for (exp, iat) in [
            ("9223372036854775807", "9223372036854775807"),
            ("1e300", "1e300"),
        ] {
            let token = sign(payload(json(exp), json(iat)));
            assert_eq!(
                verifier.verify_access(&token, NOW),
                Err(TokenError::NotYetValid),
                "exp {exp} iat {iat}"
            );
        }
        // Not a number at all: malformed.
        let token = sign(payload(serde_json::json!("soon"), serde_json::Value::Null));
        assert_eq!(
            verifier.verify_access(&token, NOW),
            Err(TokenError::Malformed)
        );
        // Time itself at the edges.
        let token = sign(payload(
            json("9223372036854775807"),
            serde_json::Value::Null,
        ));
        assert_eq!(
            verifier.verify_access(&token, i64::MAX),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verifier.verify_access(&token, i64::MIN),
            Err(TokenError::LifetimeTooLong)
        );
    }

    /// Regression (issue 9 item 7): a non-ASCII `sub` was forwarded as raw bytes in
    /// `X-Auth-User`.
    #[test]
    fn subjects_that_are_not_visible_ascii_are_refused() {
        let (signer, verifier) = setup(Algorithm::HS256);
        for sub in [
            "ålice",
            "alice\u{80}",
            "al\tice",
            " alice",
            "alice ",
            "a\u{7f}",
            "",
        ] {
            let mut c = claims("access");
            c.sub = sub.into();
            let token = signer.sign(&c).expect("sign");
            assert_eq!(
                verifier.verify_access(&token, NOW),
                Err(TokenError::UnforwardableClaim),
                "{sub:?}"
            );
        }
        let mut c = claims("access");
        c.sub = "Alice Smith <a@b.c>".into();
        let token = signer.sign(&c).expect("sign");
        assert!(verifier.verify_access(&token, NOW).is_ok());
    }

    #[test]
    fn forwardable_header_text() {
        for ok in ["alice", "a b", "x,y", "~!\"#", ""] {
            assert!(is_forwardable(ok), "{ok:?}");
        }
        for bad in ["é", " a", "a ", "a\tb", "a\r\nb", "\u{0}", "\u{7f}"] {
            assert!(!is_forwardable(bad), "{bad:?}");
        }
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
