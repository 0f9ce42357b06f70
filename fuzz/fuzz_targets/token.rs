//! The bearer token: the `Authorization` header and the JWT behind it. Nothing panics, and
//! nothing verifies but the one token the key signed (the seed corpus may hold it).
#![no_main]

use std::sync::LazyLock;

use authgate::auth::bearer_token;
use authgate::jwt::{Algorithm, Claims, Key, OneOrMany, Signer, Verifier};
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_800_000_000;
const SECRET: &[u8] = b"fuzzing-secret-of-at-least-32-bytes!";

struct Fixture {
    verifier: Verifier,
    signed: String,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let key = Key::from_secret(Algorithm::HS256, SECRET, Some("k1".into())).expect("key");
    let claims = Claims {
        sub: "alice".into(),
        iat: Some(NOW),
        nbf: Some(NOW),
        exp: Some(NOW + 600),
        jti: Some("0123456789abcdef".into()),
        token_type: Some("access".into()),
        fresh: Some(false),
        auth_time: None,
        iss: Some("authgate".into()),
        aud: Some(OneOrMany::One("authgate".into())),
        roles: OneOrMany::Many(vec!["user".into()]),
        extra: Default::default(),
    };
    let signed = Signer::new(key.clone())
        .expect("signer")
        .sign(&claims)
        .expect("sign");
    let verifier = Verifier::new(vec![key], "authgate".into(), "authgate".into(), 30);
    Fixture { verifier, signed }
});

fuzz_target!(|data: &[u8]| {
    let fixture = &*FIXTURE;
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value);
    let Ok(token) = bearer_token(&headers) else {
        return;
    };
    if fixture.verifier.verify_access(token, NOW).is_ok() {
        assert_eq!(
            token, fixture.signed,
            "a token the key never signed verified"
        );
    }
});
