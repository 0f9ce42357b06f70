//! Token verification through the real gateway (real TLS, a real recording upstream):
//! every way a token is refused, with the exact RFC 6750 challenge, the JSON error body
//! and nothing reaching the upstream; the missing / foreign / conflicting credential
//! cases; the role check; every configured algorithm; key rotation.

mod common;

use authgate::jwt::{Algorithm, Claims, Key, OneOrMany, Signer};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Gateway, Setup, TestKey, access_claims, hs256_token, now};
use serde_json::json;

/// Descriptions of `TokenError::description` (src/jwt.rs), as the client must see them.
const MALFORMED: &str = "the token is malformed";
const FORBIDDEN_HEADER: &str = "the token header carries a forbidden parameter";
const ALGORITHM_NOT_ALLOWED: &str = "the token algorithm is not accepted";
const UNKNOWN_KEY: &str = "the token names an unknown key";
const BAD_SIGNATURE: &str = "the token signature is invalid";
const MISSING_EXPIRY: &str = "the token has no expiry";
const EXPIRED: &str = "the token has expired";
const NOT_YET_VALID: &str = "the token is not valid yet";
const WRONG_ISSUER: &str = "the token issuer is not accepted";
const WRONG_AUDIENCE: &str = "the token audience is not accepted";
const NOT_ACCESS_TOKEN: &str = "the token is not an access token";

const BARE_CHALLENGE: &str = r#"Bearer realm="authgate""#;

fn b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

/// Claims of a valid access token for alice, then changed by `change`.
fn claims_with(change: impl FnOnce(&mut Claims)) -> Claims {
    let mut claims = access_claims("alice", &["user"]);
    change(&mut claims);
    claims
}

fn payload_json(claims: &Claims) -> String {
    serde_json::to_string(claims).expect("claims json")
}

/// The three parts of a compact JWS.
fn parts(token: &str) -> (&str, &str, &str) {
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        panic!("not a three-part token: {token}");
    };
    (h, p, s)
}

/// The HMAC secret the harness configured for an HS* setup.
fn hmac_secret(setup: &Setup) -> Vec<u8> {
    setup.key.text.trim().as_bytes().to_vec()
}

/// A token signed by `alg` with `pem`, with a header that carries no `kid`.
fn sign_without_kid(alg: Algorithm, pem: &str, claims: &Claims) -> String {
    let header = jsonwebtoken::Header::new(alg);
    assert!(header.kid.is_none());
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => {
            jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes())
        }
        Algorithm::EdDSA => jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()),
        _ => jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .expect("encoding key");
    jsonwebtoken::encode(&header, claims, &key).expect("encode")
}

/// Sends `GET path` with the given `Authorization` value (none when `None`).
async fn get(
    setup: &Setup,
    gw: &Gateway,
    path: &str,
    authorization: Option<&str>,
) -> reqwest::Response {
    let mut req = setup.client().get(gw.url(path));
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    req.send().await.expect("send")
}

/// Asserts a refusal: status, the one `WWW-Authenticate` value (or its absence), a JSON
/// body of exactly `{"error", "error_description"}`, and that `secret` is not echoed.
async fn assert_refusal(
    resp: reqwest::Response,
    status: u16,
    challenge: Option<&str>,
    code: &str,
    description: &str,
    secret: &str,
) {
    assert_eq!(resp.status().as_u16(), status, "status");
    let challenges: Vec<String> = resp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().expect("ascii challenge").to_owned())
        .collect();
    match challenge {
        Some(expected) => assert_eq!(challenges, [expected], "WWW-Authenticate"),
        None => assert!(
            challenges.is_empty(),
            "no challenge expected: {challenges:?}"
        ),
    }
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().expect("ascii").to_owned());
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let text = resp.text().await.expect("body");
    if secret.len() >= 8 {
        assert!(!text.contains(secret), "the body echoes the token: {text}");
    }
    let body: serde_json::Value = serde_json::from_str(&text).expect("JSON body");
    assert_eq!(
        body,
        json!({ "error": code, "error_description": description }),
        "body"
    );
}

fn invalid_token_challenge(description: &str) -> String {
    format!(r#"Bearer realm="authgate", error="invalid_token", error_description="{description}""#)
}

/// Asserts that `token` is refused with 401 `invalid_token` and `description`, and that
/// the upstream received nothing.
async fn assert_invalid_token(setup: &Setup, gw: &Gateway, token: &str, description: &str) {
    let resp = get(setup, gw, "/hello", Some(&format!("Bearer {token}"))).await;
    assert_refusal(
        resp,
        401,
        Some(&invalid_token_challenge(description)),
        "invalid_token",
        description,
        token,
    )
    .await;
    let received = setup.upstream.received();
    assert!(
        received.is_empty(),
        "the upstream received a request for token {token}: {received:?}"
    );
}

/// Asserts that `token` passes on `/hello` and the upstream sees `sub`.
async fn assert_accepted(setup: &Setup, gw: &Gateway, token: &str, sub: &str) {
    setup.upstream.clear();
    let resp = get(setup, gw, "/hello", Some(&format!("Bearer {token}"))).await;
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 200, "token refused: {text}");
    let received = setup.upstream.received();
    assert_eq!(received.len(), 1, "upstream requests");
    assert_eq!(received[0].headers["x-auth-user"], sub);
    setup.upstream.clear();
}

// --- time claims ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let now = now();
    let token = setup.key.sign(&claims_with(|c| {
        c.iat = Some(now - 700);
        c.nbf = Some(now - 700);
        c.exp = Some(now - 60);
    }));
    assert_invalid_token(&setup, &gw, &token, EXPIRED).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_not_valid_yet_is_refused() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let now = now();
    let token = setup.key.sign(&claims_with(|c| c.nbf = Some(now + 60)));
    assert_invalid_token(&setup, &gw, &token, NOT_YET_VALID).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_claims_within_the_leeway_are_accepted() {
    // The harness config has leeway = "5s".
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let now = now();
    let just_expired = setup.key.sign(&claims_with(|c| {
        c.iat = Some(now - 600);
        c.nbf = Some(now - 600);
        c.exp = Some(now - 1);
    }));
    assert_accepted(&setup, &gw, &just_expired, "alice").await;
    let almost_valid = setup.key.sign(&claims_with(|c| c.nbf = Some(now + 2)));
    assert_accepted(&setup, &gw, &almost_valid, "alice").await;
    gw.stop().await;
}

// --- signatures ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_payload_is_refused() {
    for alg in [Algorithm::ES256, Algorithm::HS256] {
        let setup = Setup::new(alg).await;
        let gw = setup.start().await;
        let token = setup.token("alice", &["user"]);
        let (header, _, signature) = parts(&token);
        let elevated = payload_json(&claims_with(|c| {
            c.sub = "root".into();
            c.roles = OneOrMany::Many(vec!["admin".into()]);
        }));
        let forged = format!("{header}.{}.{signature}", b64(&elevated));
        assert_invalid_token(&setup, &gw, &forged, BAD_SIGNATURE).await;
        // The untouched token passes on the same gateway.
        assert_accepted(&setup, &gw, &token, "alice").await;
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_signature_is_refused() {
    for alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::HS256] {
        let setup = Setup::new(alg).await;
        let gw = setup.start().await;
        let token = setup.token("alice", &["user"]);
        let (header, payload, signature) = parts(&token);
        // Change the first character: still base64url of the same length.
        let first = if signature.starts_with('A') { "B" } else { "A" };
        let forged = format!("{header}.{payload}.{first}{}", &signature[1..]);
        assert_invalid_token(&setup, &gw, &forged, BAD_SIGNATURE).await;
        // A signature cut short is no signature either.
        let short = format!("{header}.{payload}.{}", &signature[..signature.len() / 2]);
        let resp = get(&setup, &gw, "/hello", Some(&format!("Bearer {short}"))).await;
        assert_eq!(resp.status(), 401, "{alg:?}: truncated signature");
        assert!(setup.upstream.received().is_empty());
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_is_refused() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start().await;
    let payload = b64(&payload_json(&access_claims("alice", &["admin"])));
    let kid = setup.key.key.kid.clone();
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#.to_owned(),
        r#"{"alg":"None"}"#.to_owned(),
        r#"{"alg":"NONE"}"#.to_owned(),
        format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#),
    ] {
        let forged = format!("{}.{payload}.", b64(&header));
        assert_invalid_token(&setup, &gw, &forged, ALGORITHM_NOT_ALLOWED).await;
    }
    gw.stop().await;
}

/// An HS256 token whose HMAC secret is the gateway's public key (the classic RS/ES → HS
/// confusion): refused whatever the form of the public key and with or without `kid`.
async fn hmac_with_the_public_key_is_refused(alg: Algorithm) {
    let setup = Setup::new(alg).await;
    let gw = setup.start().await;
    let public_pem = setup.key.public_pem();
    let lf_pem = public_pem.replace("\r\n", "\n");
    let der = pem::parse(public_pem.as_bytes())
        .expect("pem")
        .into_contents();
    let payload = payload_json(&access_claims("alice", &["admin"]));
    let kid = setup.key.key.kid.clone();
    let headers = [
        format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#),
        r#"{"alg":"HS256","typ":"JWT"}"#.to_owned(),
    ];
    for header in &headers {
        for secret in [public_pem.as_bytes(), lf_pem.as_bytes(), &der[..]] {
            let forged = hs256_token(header, &payload, secret);
            assert_invalid_token(&setup, &gw, &forged, ALGORITHM_NOT_ALLOWED).await;
        }
    }
    // The real key still works on this gateway.
    assert_accepted(&setup, &gw, &setup.token("alice", &[]), "alice").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_signed_with_the_rs256_public_key_is_refused() {
    hmac_with_the_public_key_is_refused(Algorithm::RS256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_signed_with_the_es256_public_key_is_refused() {
    hmac_with_the_public_key_is_refused(Algorithm::ES256).await;
}

// --- keys ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_is_refused() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let claims = access_claims("alice", &["user"]);
    // The configured key itself, under a kid the gateway does not know.
    let renamed = Key::from_pem(
        Algorithm::ES256,
        setup.key.text.as_bytes(),
        Some("unknown-kid".into()),
    )
    .expect("key");
    let token = Signer::new(renamed)
        .expect("signer")
        .sign(&claims)
        .expect("sign");
    assert!(parts(&token).0 != parts(&setup.key.sign(&claims)).0);
    assert_invalid_token(&setup, &gw, &token, UNKNOWN_KEY).await;
    // Another key of the same algorithm, with its own kid.
    let stranger = TestKey::generate(Algorithm::ES256);
    assert_invalid_token(&setup, &gw, &stranger.sign(&claims), UNKNOWN_KEY).await;
    // The same claims under the configured kid pass.
    assert_accepted(&setup, &gw, &setup.key.sign(&claims), "alice").await;
    gw.stop().await;
}

// --- claims ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_issuer_is_refused() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    for iss in [Some("someone-else"), Some("Authgate"), Some(""), None] {
        let token = setup
            .key
            .sign(&claims_with(|c| c.iss = iss.map(str::to_owned)));
        assert_invalid_token(&setup, &gw, &token, WRONG_ISSUER).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_audience_is_refused() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    for aud in [
        Some(OneOrMany::One("other".into())),
        Some(OneOrMany::Many(vec!["other".into(), "x".into()])),
        Some(OneOrMany::Many(vec![])),
        None,
    ] {
        let token = setup.key.sign(&claims_with(|c| c.aud = aud));
        assert_invalid_token(&setup, &gw, &token, WRONG_AUDIENCE).await;
    }
    // An audience list that includes ours is accepted (RFC 7519 §4.1.3).
    let token = setup.key.sign(&claims_with(|c| {
        c.aud = Some(OneOrMany::Many(vec!["other".into(), "authgate".into()]));
    }));
    assert_accepted(&setup, &gw, &token, "alice").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_exp_is_refused() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let token = setup.key.sign(&claims_with(|c| c.exp = None));
    assert!(!payload_json(&claims_with(|c| c.exp = None)).contains("exp"));
    assert_invalid_token(&setup, &gw, &token, MISSING_EXPIRY).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_is_refused_on_a_protected_route() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let refresh = setup
        .key
        .sign(&claims_with(|c| c.token_type = Some("refresh".into())));
    assert_invalid_token(&setup, &gw, &refresh, NOT_ACCESS_TOKEN).await;
    // A token that does not say it is an access token is not one either.
    let untyped = setup.key.sign(&claims_with(|c| c.token_type = None));
    assert_invalid_token(&setup, &gw, &untyped, NOT_ACCESS_TOKEN).await;
    gw.stop().await;
}

// --- headers ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_parameters_that_name_a_key_are_refused() {
    // HS256, so each forgery carries a valid signature under the configured secret: the
    // header alone is the reason for the refusal.
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start().await;
    let secret = hmac_secret(&setup);
    let kid = setup.key.key.kid.clone();
    let payload = payload_json(&access_claims("alice", &["admin"]));
    for extra in [
        r#""jku":"https://127.0.0.1:1/jwks.json""#,
        r#""x5u":"https://127.0.0.1:1/cert.pem""#,
        r#""jwk":{"kty":"oct","k":"c2VjcmV0"}"#,
        r#""x5c":["MIIBszCCAVmgAwIBAgIUEm"]"#,
        r#""crit":["exp"]"#,
    ] {
        let header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}",{extra}}}"#);
        let forged = hs256_token(&header, &payload, &secret);
        assert_invalid_token(&setup, &gw, &forged, FORBIDDEN_HEADER).await;
    }
    // Without the parameter, the very same construction passes.
    let header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#);
    assert_accepted(
        &setup,
        &gw,
        &hs256_token(&header, &payload, &secret),
        "alice",
    )
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_header_parameters_are_refused_on_an_asymmetric_gateway() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let token = setup.token("alice", &["user"]);
    let (_, payload, signature) = parts(&token);
    let kid = setup.key.key.kid.clone();
    for extra in [
        r#""jku":"https://127.0.0.1:1/jwks.json""#,
        r#""x5u":"https://127.0.0.1:1/cert.pem""#,
        r#""jwk":{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#,
        r#""x5c":["MIIBszCCAVmgAwIBAgIUEm"]"#,
        r#""crit":["b64"]"#,
    ] {
        let header = format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{kid}",{extra}}}"#);
        let forged = format!("{}.{payload}.{signature}", b64(&header));
        assert_invalid_token(&setup, &gw, &forged, FORBIDDEN_HEADER).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tokens_are_refused() {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start().await;
    let token = setup.token("alice", &["user"]);
    let (header, payload, signature) = parts(&token);
    let cases = [
        "abc".to_owned(),
        format!("{header}.{payload}"),
        format!("{header}.{payload}.{signature}.{signature}"),
        format!("{header}{payload}{signature}"),
        // Not base64url in the header.
        format!("{header}*.{payload}.{signature}"),
        format!("!!!.{payload}.{signature}"),
        // base64url, but not a JSON object.
        format!("{}.{payload}.{signature}", b64("not json")),
        // JSON without `alg`.
        format!("{}.{payload}.{signature}", b64(r#"{"typ":"JWT"}"#)),
        // Not base64url in the signature.
        format!("{header}.{payload}.{signature}*"),
        // Nothing after the scheme.
        String::new(),
    ];
    for case in &cases {
        assert_invalid_token(&setup, &gw, case, MALFORMED).await;
    }
    // A payload that is not JSON, under a valid signature.
    let secret = hmac_secret(&setup);
    let kid = setup.key.key.kid.clone();
    let forged = hs256_token(
        &format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#),
        "this is not json",
        &secret,
    );
    assert_invalid_token(&setup, &gw, &forged, MALFORMED).await;
    gw.stop().await;
}

// --- credentials in the request ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_gets_the_bare_challenge() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    for path in ["/hello", "/admin/panel"] {
        let resp = get(&setup, &gw, path, None).await;
        assert_refusal(
            resp,
            401,
            Some(BARE_CHALLENGE),
            "missing_token",
            "this route requires a bearer token",
            "",
        )
        .await;
    }
    assert!(setup.upstream.received().is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_bearer_scheme_is_no_token() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let token = setup.token("alice", &["admin"]);
    for value in [
        "Basic YWxpY2U6cGFzc3dvcmQ=".to_owned(),
        // A valid token under another scheme is still no bearer token.
        format!("Token {token}"),
        format!("Bearer{token}"),
    ] {
        let resp = get(&setup, &gw, "/hello", Some(&value)).await;
        assert_refusal(
            resp,
            401,
            Some(BARE_CHALLENGE),
            "missing_token",
            "this route requires a bearer token",
            &token,
        )
        .await;
    }
    assert!(setup.upstream.received().is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let token = setup.token("alice", &["user"]);
        setup.upstream.clear();
        let resp = get(&setup, &gw, "/hello", Some(&format!("{scheme} {token}"))).await;
        assert_eq!(resp.status(), 200, "scheme {scheme}");
        let received = setup.upstream.received();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].headers["x-auth-user"], "alice");
    }
    gw.stop().await;
}

/// The status and the JSON body of a raw HTTP/1.1 response.
fn raw_status_and_json(text: &str) -> (u16, serde_json::Value) {
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (_, body) = text.split_once("\r\n\r\n").expect("a response with a body");
    let start = body.find('{').expect("JSON body");
    let end = body.rfind('}').expect("JSON body");
    let json = serde_json::from_str(&body[start..=end]).expect("JSON body");
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_are_a_bad_request() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let alice = setup.token("alice", &["user"]);
    let bob = setup.token("bob", &["admin"]);
    for extra in [
        // Two different valid tokens.
        format!("Authorization: Bearer {alice}\r\nAuthorization: Bearer {bob}\r\n"),
        // The same valid token twice.
        format!("Authorization: Bearer {alice}\r\nAuthorization: Bearer {alice}\r\n"),
        // A bearer token and another credential.
        format!("Authorization: Bearer {alice}\r\nAuthorization: Basic YWxpY2U6cHc=\r\n"),
    ] {
        let (status, text) = common::raw_get(gw.addr, &setup.pki.ca_pem, "/hello", &extra).await;
        assert_eq!(status, 400, "{text}");
        let (_, body) = raw_status_and_json(&text);
        assert_eq!(
            body,
            json!({
                "error": "invalid_request",
                "error_description": "the request carries more than one credential",
            })
        );
        assert!(
            !text.contains(&alice) && !text.contains(&bob),
            "token echoed"
        );
    }
    assert!(setup.upstream.received().is_empty());
    gw.stop().await;
}

// --- authorization ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_the_required_role_is_forbidden() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let challenge = r#"Bearer realm="authgate", error="insufficient_scope", error_description="the token lacks a role this route requires""#;
    for roles in [&[][..], &["user"][..], &["Admin", "administrator"][..]] {
        let token = setup.token("alice", roles);
        let resp = get(
            &setup,
            &gw,
            "/admin/panel",
            Some(&format!("Bearer {token}")),
        )
        .await;
        assert_refusal(
            resp,
            403,
            Some(challenge),
            "insufficient_scope",
            "the token lacks a role this route requires",
            &token,
        )
        .await;
    }
    assert!(setup.upstream.received().is_empty());
    // The same route with the role passes.
    let token = setup.token("root", &["user", "admin"]);
    let resp = get(
        &setup,
        &gw,
        "/admin/panel",
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let received = setup.upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path_and_query, "/admin/panel");
    assert_eq!(received[0].headers["x-auth-user"], "root");
    gw.stop().await;
}

// --- what is accepted ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_is_accepted_when_configured() {
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
        let setup = Setup::new(alg).await;
        let gw = setup.start().await;
        let token = setup.token("alice", &["admin"]);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts(&token).0).expect("b64"))
                .expect("header json");
        assert_eq!(header["alg"], format!("{alg:?}"));
        let resp = get(&setup, &gw, "/admin/x", Some(&format!("Bearer {token}"))).await;
        assert_eq!(resp.status(), 200, "{alg:?}");
        let received = setup.upstream.received();
        assert_eq!(received.len(), 1, "{alg:?}");
        assert_eq!(received[0].headers["x-auth-user"], "alice", "{alg:?}");
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_accepts_the_previous_key_by_its_kid() {
    let setup = Setup::new(Algorithm::ES256).await;
    let old = TestKey::generate(Algorithm::ES256);
    std::fs::write(setup.dir.path().join("old.pub.pem"), old.public_pem()).expect("write");
    let config = setup.standard_config().replacen(
        "leeway = \"5s\"\n",
        "leeway = \"5s\"\nprevious_keys = [\"old.pub.pem\"]\n",
        1,
    );
    assert!(config.contains("previous_keys"));
    let gw = setup.start_with(&config).await;

    // Signed by the old key, its kid in the header.
    assert_ne!(old.key.kid, setup.key.key.kid);
    let by_old = old.sign(&access_claims("olduser", &["user"]));
    assert_accepted(&setup, &gw, &by_old, "olduser").await;

    // Signed by the current key, its kid in the header.
    assert_accepted(&setup, &gw, &setup.token("alice", &[]), "alice").await;

    // No kid: only the signing key is tried, so the old key's signature fails.
    let old_no_kid = sign_without_kid(
        Algorithm::ES256,
        &old.text,
        &access_claims("olduser", &["user"]),
    );
    assert_invalid_token(&setup, &gw, &old_no_kid, BAD_SIGNATURE).await;

    // No kid, signed by the current key: accepted.
    let current_no_kid = sign_without_kid(
        Algorithm::ES256,
        &setup.key.text,
        &access_claims("alice", &["user"]),
    );
    assert_accepted(&setup, &gw, &current_no_kid, "alice").await;
    gw.stop().await;
}
