//! Signing and verification keys, each bound to exactly one algorithm when it is loaded.
//!
//! A key never changes algorithm afterwards: a token's `alg` header can only be compared
//! with the key's, never choose it. Loading checks that the key's type and size fit the
//! algorithm (an EC P-256 key for ES256, RSA of 2048 bits or more for RS*/PS*, a secret at
//! least as long as the hash for HS*), so a mismatch is a config error at start, not a
//! runtime surprise.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{KeyPair as _, ParsedPublicKey, VerificationAlgorithm};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};

/// Why key material was refused. Messages describe the key, never print it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM file (expected -----BEGIN PRIVATE KEY----- or PUBLIC KEY)")]
    NotPem,
    #[error(
        "unsupported PEM block \"{0}\" (expected PRIVATE KEY, EC PRIVATE KEY, RSA PRIVATE KEY, PUBLIC KEY or RSA PUBLIC KEY)"
    )]
    UnsupportedPem(String),
    #[error("{alg:?} needs {needs}, but this is {found}")]
    WrongType {
        alg: Algorithm,
        needs: &'static str,
        found: &'static str,
    },
    #[error("{alg:?} needs a secret of at least {min} bytes, this one has {len}")]
    SecretTooShort {
        alg: Algorithm,
        min: usize,
        len: usize,
    },
    #[error("{alg:?} is an HMAC algorithm: give `secret`, not a PEM key")]
    SecretExpected { alg: Algorithm },
    #[error("{alg:?} is not an HMAC algorithm: give a PEM key, not a secret")]
    PemExpected { alg: Algorithm },
    #[error("RSA keys below 2048 bits are refused (this one has {bits})")]
    RsaTooSmall { bits: usize },
    #[error("the key could not be parsed: {0}")]
    Invalid(String),
}

/// A key bound to one algorithm, with its `kid`.
#[derive(Clone)]
pub struct Key {
    pub kid: String,
    pub alg: Algorithm,
    /// The verification half, parsed once: no key parsing per request.
    pub(crate) verifying: Verifying,
    /// Present when the key can sign (a private key or a secret).
    pub(crate) encoding: Option<EncodingKey>,
    /// The public JWK with `kid`, `alg` and `use` set, for JWKS; `None` for HMAC secrets,
    /// which are never published.
    pub public_jwk: Option<Jwk>,
}

/// A key ready to check signatures.
#[derive(Clone)]
pub(crate) enum Verifying {
    Hmac(Arc<aws_lc_rs::hmac::Key>),
    Public(Arc<ParsedPublicKey>),
}

impl Verifying {
    /// Whether `signature` signs `message`. HMAC tags are compared in constant time.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Verifying::Hmac(key) => aws_lc_rs::hmac::verify(key, message, signature).is_ok(),
            Verifying::Public(key) => key.verify_sig(message, signature).is_ok(),
        }
    }
}

/// The aws-lc-rs verification algorithm that implements a JWS asymmetric algorithm.
fn verification_algorithm(alg: Algorithm) -> &'static dyn VerificationAlgorithm {
    use aws_lc_rs::signature as sig;
    match alg {
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &sig::ED25519,
        _ => &sig::RSA_PKCS1_2048_8192_SHA256,
    }
}

/// The public key bytes aws-lc-rs parses: DER for RSA (PKCS#1 or SubjectPublicKeyInfo),
/// the uncompressed point for EC, the raw 32 bytes for Ed25519.
fn public_key_bytes(jwk: &Jwk, rsa_der: Option<&[u8]>) -> Result<Vec<u8>, KeyError> {
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    let b64 = |text: &str| {
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| KeyError::Invalid("bad public key encoding".into()))
    };
    match &jwk.algorithm {
        P::EllipticCurve(ec) => {
            let mut point = vec![0x04];
            point.extend(b64(&ec.x)?);
            point.extend(b64(&ec.y)?);
            Ok(point)
        }
        P::OctetKeyPair(ed) => b64(&ed.x),
        P::RSA(_) => rsa_der
            .map(<[u8]>::to_vec)
            .ok_or_else(|| KeyError::Invalid("RSA public key unavailable".into())),
        _ => Err(KeyError::Invalid("not an asymmetric key".into())),
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("can_sign", &self.encoding.is_some())
            .finish_non_exhaustive()
    }
}

/// What a PEM block holds, for matching against an algorithm and for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
    Unknown,
}

impl KeyType {
    fn describe(self, private: bool) -> &'static str {
        match (self, private) {
            (KeyType::Rsa, true) => "an RSA private key",
            (KeyType::Rsa, false) => "an RSA public key",
            (KeyType::EcP256, true) => "an EC P-256 private key",
            (KeyType::EcP256, false) => "an EC P-256 public key",
            (KeyType::EcP384, true) => "an EC P-384 private key",
            (KeyType::EcP384, false) => "an EC P-384 public key",
            (KeyType::Ed25519, true) => "an Ed25519 private key",
            (KeyType::Ed25519, false) => "an Ed25519 public key",
            (KeyType::Unknown, _) => "a key of an unsupported type",
        }
    }

    /// Reads the algorithm OIDs of a PKCS#8 or SubjectPublicKeyInfo structure.
    fn of_der(der: &[u8]) -> KeyType {
        const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        const EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
        const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
        const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
        // The algorithm identifier sits in the first few dozen bytes of either structure.
        let head = &der[..der.len().min(40)];
        let has = |oid: &[u8]| head.windows(oid.len()).any(|w| w == oid);
        if has(RSA) {
            KeyType::Rsa
        } else if has(EC) && has(P256) {
            KeyType::EcP256
        } else if has(EC) && has(P384) {
            KeyType::EcP384
        } else if has(ED25519) {
            KeyType::Ed25519
        } else {
            KeyType::Unknown
        }
    }
}

/// What each algorithm needs, in the words of an error message.
fn needs(alg: Algorithm) -> (KeyType, &'static str) {
    match alg {
        Algorithm::ES256 => (KeyType::EcP256, "an EC P-256 key"),
        Algorithm::ES384 => (KeyType::EcP384, "an EC P-384 key"),
        Algorithm::EdDSA => (KeyType::Ed25519, "an Ed25519 key"),
        _ => (KeyType::Rsa, "an RSA key"),
    }
}

impl Key {
    /// Loads a PEM private or public key for `alg`. A private key can sign and verify; a
    /// public key only verifies (a `previous_keys` entry, say).
    pub fn from_pem(alg: Algorithm, pem_text: &[u8], kid: Option<String>) -> Result<Key, KeyError> {
        if alg.family() == AlgorithmFamily::Hmac {
            return Err(KeyError::SecretExpected { alg });
        }
        let block = pem::parse(pem_text).map_err(|_| KeyError::NotPem)?;
        let (found, private, der) = match block.tag() {
            "PRIVATE KEY" => (
                KeyType::of_der(block.contents()),
                true,
                block.contents().to_vec(),
            ),
            "PUBLIC KEY" => (
                KeyType::of_der(block.contents()),
                false,
                block.contents().to_vec(),
            ),
            "RSA PRIVATE KEY" => (KeyType::Rsa, true, block.contents().to_vec()),
            "RSA PUBLIC KEY" => (KeyType::Rsa, false, block.contents().to_vec()),
            "EC PRIVATE KEY" => sec1_to_pkcs8(alg, block.contents())?,
            other => return Err(KeyError::UnsupportedPem(other.to_owned())),
        };
        let (needed, needs_text) = needs(alg);
        if found != needed {
            return Err(KeyError::WrongType {
                alg,
                needs: needs_text,
                found: found.describe(private),
            });
        }
        let invalid = |e: jsonwebtoken::errors::Error| KeyError::Invalid(e.to_string());
        let rejected = |e: aws_lc_rs::error::KeyRejected| KeyError::Invalid(e.to_string());
        // RSA public key DER for the verifier: the block itself, or derived from the
        // private key.
        let rsa_der: Option<Vec<u8>> = match (found, private, block.tag()) {
            (KeyType::Rsa, false, _) => Some(der.clone()),
            (KeyType::Rsa, true, "RSA PRIVATE KEY") => Some(
                aws_lc_rs::rsa::KeyPair::from_der(&der)
                    .map_err(rejected)?
                    .public_key()
                    .as_ref()
                    .to_vec(),
            ),
            (KeyType::Rsa, true, _) => Some(
                aws_lc_rs::rsa::KeyPair::from_pkcs8(&der)
                    .map_err(rejected)?
                    .public_key()
                    .as_ref()
                    .to_vec(),
            ),
            _ => None,
        };
        let (encoding, jwk) = if private {
            // Re-encoded so an RSA PKCS#1 or EC SEC1 block reaches jsonwebtoken as the PEM
            // form it reads.
            let tag = if block.tag() == "RSA PRIVATE KEY" {
                "RSA PRIVATE KEY"
            } else {
                "PRIVATE KEY"
            };
            let pem_again = pem::encode(&pem::Pem::new(tag, der));
            let encoding = match alg.family() {
                AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(pem_again.as_bytes()),
                AlgorithmFamily::Ec => EncodingKey::from_ec_pem(pem_again.as_bytes()),
                _ => EncodingKey::from_ed_pem(pem_again.as_bytes()),
            }
            .map_err(invalid)?;
            let jwk = Jwk::from_encoding_key(&encoding, alg).map_err(invalid)?;
            (Some(encoding), jwk)
        } else {
            let decoding = match alg.family() {
                AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem_text),
                AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem_text),
                _ => DecodingKey::from_ed_pem(pem_text),
            }
            .map_err(invalid)?;
            (
                None,
                Jwk::from_decoding_key(&decoding, Some(alg)).map_err(invalid)?,
            )
        };
        if let jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
            let bits = URL_SAFE_NO_PAD
                .decode(&rsa.n)
                .map(|n| n.len() * 8)
                .unwrap_or(0);
            if bits < 2048 {
                return Err(KeyError::RsaTooSmall { bits });
            }
        }
        let public = public_key_bytes(&jwk, rsa_der.as_deref())?;
        let parsed = ParsedPublicKey::new(verification_algorithm(alg), public).map_err(rejected)?;
        let kid = match kid {
            Some(kid) => kid,
            None => jwk.thumbprint(ThumbprintHash::SHA256).map_err(invalid)?,
        };
        let mut jwk = jwk;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(Key {
            kid,
            alg,
            verifying: Verifying::Public(Arc::new(parsed)),
            encoding,
            public_jwk: Some(jwk),
        })
    }

    /// A verification-only key from a JWKS entry's public key bytes (DER for RSA, the
    /// uncompressed point for EC, the raw 32 bytes for Ed25519), bound to `alg`, which
    /// the caller chose from the entry's kty/crv/alg. RSA below 2048 bits is refused here
    /// as in a PEM file.
    pub fn from_public_bytes(
        alg: Algorithm,
        kid: String,
        public: Vec<u8>,
    ) -> Result<Key, KeyError> {
        if alg.family() == AlgorithmFamily::Hmac {
            return Err(KeyError::PemExpected { alg });
        }
        let parsed = ParsedPublicKey::new(verification_algorithm(alg), public)
            .map_err(|e| KeyError::Invalid(e.to_string()))?;
        Ok(Key {
            kid,
            alg,
            verifying: Verifying::Public(Arc::new(parsed)),
            encoding: None,
            public_jwk: None,
        })
    }

    /// Loads an HMAC secret for `alg`; it must be at least as long as the hash (RFC 7518 §3.2).
    pub fn from_secret(
        alg: Algorithm,
        secret: &[u8],
        kid: Option<String>,
    ) -> Result<Key, KeyError> {
        let min = match alg {
            Algorithm::HS256 => 32,
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => return Err(KeyError::PemExpected { alg }),
        };
        if secret.len() < min {
            return Err(KeyError::SecretTooShort {
                alg,
                min,
                len: secret.len(),
            });
        }
        let invalid = |e: jsonwebtoken::errors::Error| KeyError::Invalid(e.to_string());
        // The kid is an HMAC of a fixed label under the secret: stable, and it tells an
        // observer nothing a token's own signature does not.
        let kid = kid.unwrap_or_else(|| {
            let tag = aws_lc_rs::hmac::sign(
                &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret),
                b"authgate key id",
            );
            format!("hs-{}", URL_SAFE_NO_PAD.encode(&tag.as_ref()[..12]))
        });
        Ok(Key {
            kid,
            alg,
            verifying: Verifying::Hmac(Arc::new(aws_lc_rs::hmac::Key::new(
                match alg {
                    Algorithm::HS384 => aws_lc_rs::hmac::HMAC_SHA384,
                    Algorithm::HS512 => aws_lc_rs::hmac::HMAC_SHA512,
                    _ => aws_lc_rs::hmac::HMAC_SHA256,
                },
                secret,
            ))),
            encoding: Some(EncodingKey::from_secret(secret).map_err(invalid)?),
            public_jwk: None,
        })
    }

    pub fn can_sign(&self) -> bool {
        self.encoding.is_some()
    }
}

/// An EC SEC1 (`EC PRIVATE KEY`) block as PKCS#8, the form jsonwebtoken reads.
fn sec1_to_pkcs8(alg: Algorithm, sec1: &[u8]) -> Result<(KeyType, bool, Vec<u8>), KeyError> {
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
    };
    for (curve, key_type) in [
        (&ECDSA_P256_SHA256_FIXED_SIGNING, KeyType::EcP256),
        (&ECDSA_P384_SHA384_FIXED_SIGNING, KeyType::EcP384),
    ] {
        if let Ok(pair) = EcdsaKeyPair::from_private_key_der(curve, sec1) {
            let pkcs8 = pair
                .to_pkcs8v1()
                .map_err(|_| KeyError::Invalid("EC key could not be re-encoded".into()))?;
            return Ok((key_type, true, pkcs8.as_ref().to_vec()));
        }
    }
    Err(KeyError::WrongType {
        alg,
        needs: needs(alg).1,
        found: "an EC private key on an unsupported curve",
    })
}

/// A fresh key for `alg`, as the text of the file `authgate key generate` writes: a PKCS#8
/// PEM private key, or for HMAC 64 random hex characters (the secret is those characters).
pub fn generate(alg: Algorithm) -> Result<String, KeyError> {
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        Ed25519KeyPair,
    };
    let failed = |_| KeyError::Invalid("key generation failed".into());
    let der: Vec<u8> = match alg.family() {
        AlgorithmFamily::Hmac => {
            let mut bytes = vec![0u8; needs_secret_len(alg)];
            aws_lc_rs::rand::fill(&mut bytes).map_err(failed)?;
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            return Ok(hex + "\n");
        }
        AlgorithmFamily::Rsa => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(failed)?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der<'_> = pair.as_der().map_err(failed)?;
            der.as_ref().to_vec()
        }
        AlgorithmFamily::Ec => {
            let curve = if alg == Algorithm::ES384 {
                &ECDSA_P384_SHA384_FIXED_SIGNING
            } else {
                &ECDSA_P256_SHA256_FIXED_SIGNING
            };
            let pair = EcdsaKeyPair::generate(curve).map_err(failed)?;
            pair.to_pkcs8v1().map_err(failed)?.as_ref().to_vec()
        }
        AlgorithmFamily::Ed => {
            let pair = Ed25519KeyPair::generate().map_err(failed)?;
            pair.to_pkcs8v1().map_err(failed)?.as_ref().to_vec()
        }
    };
    Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", der)))
}

/// Random bytes in a generated HMAC secret: as many as the hash has (RFC 7518 §3.2).
fn needs_secret_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_for_their_algorithm() {
        for alg in [
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::EdDSA,
        ] {
            let pem_text = generate(alg).expect("generate");
            let key = Key::from_pem(alg, pem_text.as_bytes(), None).expect("load");
            assert!(key.can_sign());
            assert_eq!(key.kid.len(), 43, "RFC 7638 SHA-256 thumbprint, base64url");
            let jwk = key.public_jwk.expect("jwk");
            assert_eq!(jwk.common.key_id.as_deref(), Some(key.kid.as_str()));
        }
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let secret = generate(alg).expect("generate");
            let key = Key::from_secret(alg, secret.trim().as_bytes(), None).expect("load");
            assert!(key.public_jwk.is_none());
            assert!(key.kid.starts_with("hs-"));
        }
    }

    #[test]
    fn a_key_of_the_wrong_type_is_refused() {
        let ec = generate(Algorithm::ES256).expect("generate");
        let err = Key::from_pem(Algorithm::RS256, ec.as_bytes(), None).expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            "RS256 needs an RSA key, but this is an EC P-256 private key"
        );
        let err = Key::from_pem(Algorithm::ES384, ec.as_bytes(), None).expect_err("curve");
        assert!(matches!(err, KeyError::WrongType { .. }));
        let err = Key::from_pem(Algorithm::HS256, ec.as_bytes(), None).expect_err("hmac");
        assert!(matches!(err, KeyError::SecretExpected { .. }));
        let err = Key::from_secret(Algorithm::ES256, b"x", None).expect_err("secret");
        assert!(matches!(err, KeyError::PemExpected { .. }));
        let err = Key::from_secret(Algorithm::HS256, b"short", None).expect_err("short");
        assert!(matches!(err, KeyError::SecretTooShort { min: 32, .. }));
    }

    #[test]
    fn a_public_key_verifies_but_cannot_sign() {
        let private = generate(Algorithm::ES256).expect("generate");
        let key = Key::from_pem(Algorithm::ES256, private.as_bytes(), None).expect("load");
        let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pem::parse(private.as_bytes()).expect("pem").contents(),
        )
        .expect("pair");
        use aws_lc_rs::signature::KeyPair as _;
        let spki = pair.public_key().as_der().expect("spki");
        let public_pem = pem::encode(&pem::Pem::new("PUBLIC KEY", spki.as_ref().to_vec()));
        let public = Key::from_pem(Algorithm::ES256, public_pem.as_bytes(), None).expect("load");
        assert!(!public.can_sign());
        assert_eq!(public.kid, key.kid, "same key, same thumbprint");
    }
}
