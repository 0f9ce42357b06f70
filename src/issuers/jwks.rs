//! A JWK Set → verification keys, each bound to exactly one algorithm from its own
//! kty/crv/alg and the issuer's `algorithms`. Pure: bytes in, keys out.
//!
//! The set is read entry by entry with a small struct of its own rather than
//! `jsonwebtoken::jwk::JwkSet`, because one entry that crate cannot read (a new `kty`, an
//! encryption key's `alg`) would fail the whole set, and every key of it with it; here
//! such an entry is skipped and the others stay usable.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::jwt::{Algorithm, Key};

/// The members of a JWK authgate reads.
#[derive(Debug, Default, Deserialize)]
struct Jwk {
    #[serde(default)]
    kty: String,
    crv: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    kid: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Value>,
}

/// The one algorithm a key of this `kty`/`crv`/`alg` verifies, if `allowed` permits it:
/// RSA → its `alg` if given (an RSA algorithm), else RS256; EC P-256 → ES256, P-384 →
/// ES384; OKP Ed25519 → EdDSA. `oct` (and anything else) → none: an HMAC key published
/// in a JWKS is a key anyone can sign with.
pub(super) fn bind(
    kty: &str,
    crv: Option<&str>,
    alg: Option<&str>,
    allowed: &[Algorithm],
) -> Option<Algorithm> {
    let bound = match (kty, crv) {
        ("RSA", _) => match alg {
            None => Algorithm::RS256,
            Some(name) => match name.parse::<Algorithm>().ok()? {
                alg @ (Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512) => alg,
                _ => return None,
            },
        },
        ("EC", Some("P-256")) => Algorithm::ES256,
        ("EC", Some("P-384")) => Algorithm::ES384,
        ("OKP", Some("Ed25519")) => Algorithm::EdDSA,
        _ => return None,
    };
    // An `alg` that disagrees with the curve is a broken entry, not a choice.
    if kty != "RSA" && alg.is_some_and(|name| name != crate::jwt::algorithm_name(bound)) {
        return None;
    }
    allowed.contains(&bound).then_some(bound)
}

/// The usable keys of a JWK Set; the entries that cannot be used are skipped (and
/// counted in the second value, for the log).
pub(super) fn keys(
    body: &[u8],
    allowed: &[Algorithm],
) -> Result<(Vec<Key>, usize), serde_json::Error> {
    let set: JwkSet = serde_json::from_slice(body)?;
    let mut keys = Vec::new();
    let mut skipped = 0;
    for value in set.keys {
        match serde_json::from_value::<Jwk>(value)
            .ok()
            .and_then(|jwk| key(&jwk, allowed))
        {
            Some(key) => keys.push(key),
            None => skipped += 1,
        }
    }
    Ok((keys, skipped))
}

fn key(jwk: &Jwk, allowed: &[Algorithm]) -> Option<Key> {
    if jwk.usage.as_deref().is_some_and(|usage| usage != "sig") {
        return None;
    }
    let alg = bind(&jwk.kty, jwk.crv.as_deref(), jwk.alg.as_deref(), allowed)?;
    let b64 = |text: &Option<String>| URL_SAFE_NO_PAD.decode(text.as_deref()?).ok();
    let public = match alg {
        Algorithm::ES256 | Algorithm::ES384 => {
            let mut point = vec![0x04];
            point.extend(b64(&jwk.x)?);
            point.extend(b64(&jwk.y)?);
            point
        }
        Algorithm::EdDSA => b64(&jwk.x)?,
        _ => rsa_public_key_der(&b64(&jwk.n)?, &b64(&jwk.e)?),
    };
    Key::from_public_bytes(alg, jwk.kid.clone().unwrap_or_default(), public).ok()
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`, DER.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn length(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend(&bytes[skip..]);
        }
    }
    fn integer(out: &mut Vec<u8>, value: &[u8]) {
        let value = &value[value.iter().take_while(|b| **b == 0).count()..];
        // A leading zero keeps a high first bit from reading as negative.
        let pad = value.first().is_none_or(|b| b & 0x80 != 0);
        out.push(0x02);
        length(out, value.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend(value);
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(&mut body, n);
    integer(&mut body, e);
    let mut out = vec![0x30];
    length(&mut out, body.len());
    out.extend(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Algorithm] = &[
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    #[test]
    fn each_key_is_bound_to_one_algorithm_by_its_own_type() {
        let rs256 = &[Algorithm::RS256][..];
        for (kty, crv, alg, allowed, bound) in [
            ("RSA", None, None, rs256, Some(Algorithm::RS256)),
            ("RSA", None, Some("RS384"), ALL, Some(Algorithm::RS384)),
            ("RSA", None, Some("PS256"), ALL, Some(Algorithm::PS256)),
            // Its own alg is not allowed: skipped, never rebound to one that is.
            ("RSA", None, Some("RS384"), rs256, None),
            // No alg, RS256 not allowed: nothing.
            ("RSA", None, None, &[Algorithm::PS256][..], None),
            ("RSA", None, Some("ES256"), ALL, None),
            ("RSA", None, Some("RSA-OAEP"), ALL, None),
            ("RSA", None, Some("HS256"), ALL, None),
            ("EC", Some("P-256"), None, ALL, Some(Algorithm::ES256)),
            (
                "EC",
                Some("P-256"),
                Some("ES256"),
                ALL,
                Some(Algorithm::ES256),
            ),
            ("EC", Some("P-256"), Some("ES384"), ALL, None),
            ("EC", Some("P-384"), None, ALL, Some(Algorithm::ES384)),
            ("EC", Some("P-256"), None, rs256, None),
            ("EC", Some("P-521"), None, ALL, None),
            ("EC", None, None, ALL, None),
            ("OKP", Some("Ed25519"), None, ALL, Some(Algorithm::EdDSA)),
            ("OKP", Some("X25519"), None, ALL, None),
            ("oct", None, Some("HS256"), ALL, None),
            ("oct", None, None, ALL, None),
        ] {
            assert_eq!(
                bind(kty, crv, alg, allowed),
                bound,
                "{kty} {crv:?} {alg:?} {allowed:?}"
            );
        }
    }

    #[test]
    fn unusable_entries_are_skipped_and_the_others_kept() {
        let text = crate::jwt::generate_key(Algorithm::ES256).expect("key");
        let key = Key::from_pem(Algorithm::ES256, text.as_bytes(), Some("ec".into())).expect("key");
        let mut jwk = serde_json::to_value(key.public_jwk.as_ref().expect("jwk")).expect("json");
        jwk["kid"] = "ec".into();
        let mut enc = jwk.clone();
        enc["use"] = "enc".into();
        enc["kid"] = "enc".into();
        let set = serde_json::json!({ "keys": [
            jwk,
            enc,
            { "kty": "oct", "k": "c2VjcmV0", "kid": "hmac" },
            { "kty": "weird", "kid": "new" },
            "not even an object",
        ]});
        let (keys, skipped) = keys(set.to_string().as_bytes(), ALL).expect("a set");
        let kids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, ["ec"]);
        assert_eq!(keys[0].alg, Algorithm::ES256);
        assert_eq!(skipped, 4);
    }

    #[test]
    fn an_rsa_jwk_verifies_what_its_private_key_signed() {
        let text = crate::jwt::generate_key(Algorithm::RS256).expect("key");
        let private =
            Key::from_pem(Algorithm::RS256, text.as_bytes(), Some("r".into())).expect("key");
        let signer = crate::jwt::Signer::new(private.clone()).expect("signer");
        let claims = crate::jwt::Claims {
            sub: "a".into(),
            ..Default::default()
        };
        let token = signer.sign(&claims).expect("sign");
        let jwk = serde_json::to_value(private.public_jwk.as_ref().expect("jwk")).expect("json");
        let set = serde_json::json!({ "keys": [jwk] }).to_string();
        let (keys, _) = keys(set.as_bytes(), &[Algorithm::RS256]).expect("set");
        assert_eq!(keys.len(), 1);
        assert!(crate::jwt::verified_payload(&token, &keys).is_ok());
    }
}
