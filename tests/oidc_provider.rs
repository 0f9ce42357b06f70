//! The OpenID provider fixture proven without the gateway (tests/common/oidc.rs): the real
//! `oidc-provider` under node publishes its discovery document and JWKS, and a real
//! headless Chromium goes through one authorization-code flow with PKCE S256, state and
//! nonce: sign-in as alice, back on the redirect URI with the code, the code exchanged
//! once for an ID token carrying alice's claims, and refused the second time. Also the
//! login page's refusals: a wrong password, and Cancel (`error=access_denied`).
mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::browser::{Browser, serve_html};
use common::oidc::{self, OidcProvider};
use serde_json::Value;
use url::Url;

const SECRET: &str = "test-client-secret-0123456789";

/// `n` random bytes, base64url without padding.
fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).expect("random");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The S256 code challenge of `verifier`.
fn s256(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The value of query parameter `name` in `url`.
fn query(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The payload of a compact JWS, unverified.
fn jwt_payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).expect("a JWS has a payload");
    let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

/// One authorization request: its URL and what the client keeps to check the answer.
struct Authorization {
    url: String,
    state: String,
    nonce: String,
    verifier: String,
}

fn authorization(provider: &OidcProvider, discovery: &Value) -> Authorization {
    let state = random_b64(16);
    let nonce = random_b64(16);
    let verifier = random_b64(32);
    let mut url = Url::parse(
        discovery["authorization_endpoint"]
            .as_str()
            .expect("authorization_endpoint"),
    )
    .expect("authorization URL");
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &provider.client_id)
        .append_pair("redirect_uri", &provider.redirect_uri)
        .append_pair("scope", "openid profile")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &s256(&verifier))
        .append_pair("code_challenge_method", "S256");
    Authorization {
        url: url.into(),
        state,
        nonce,
        verifier,
    }
}

/// Exchanges `code` at the token endpoint (client_secret_basic); the status and the JSON
/// answer.
async fn exchange(
    provider: &OidcProvider,
    discovery: &Value,
    code: &str,
    verifier: &str,
) -> (u16, Value) {
    let token_endpoint = discovery["token_endpoint"]
        .as_str()
        .expect("token_endpoint");
    let body = serde_urlencoded::to_string([
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", provider.redirect_uri.as_str()),
        ("code_verifier", verifier),
    ])
    .expect("form");
    let response = reqwest::Client::new()
        .post(token_endpoint)
        .basic_auth(&provider.client_id, Some(&provider.client_secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("token request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("token body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("token answer not JSON ({e}): {text}"));
    (status, json)
}

/// Whether the browser is back on the redirect URI (the callback server's port).
fn on_callback(port: u16) -> impl Fn(&Url) -> bool {
    move |u: &Url| u.port() == Some(port) && u.path() == "/cb"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_openid_provider_runs_a_pkce_code_flow_in_chromium() {
    let started = Instant::now();
    let (cb_addr, cb_server) =
        serve_html("<!doctype html><title>callback</title>".to_owned()).await;
    let cb_port = cb_addr.port();
    let redirect_uri = format!("http://127.0.0.1:{cb_port}/cb");
    let provider = OidcProvider::start(&redirect_uri, SECRET);
    eprintln!(
        "oidc: provider {} up in {:?}",
        provider.issuer,
        started.elapsed()
    );

    // Discovery and JWKS, without a browser.
    let discovery = provider.discovery().await;
    assert_eq!(discovery["issuer"], provider.issuer.as_str());
    for field in ["authorization_endpoint", "token_endpoint", "jwks_uri"] {
        let url = discovery[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field}"));
        assert!(url.starts_with(&provider.issuer), "{field}: {url}");
    }
    let methods = discovery["code_challenge_methods_supported"]
        .as_array()
        .expect("code_challenge_methods_supported");
    assert!(methods.iter().any(|m| m == "S256"), "{methods:?}");
    let jwks = provider.jwks().await;
    let keys = jwks["keys"].as_array().expect("keys");
    assert!(
        keys.iter()
            .any(|k| k["kty"] == "RSA" && k["alg"] == "RS256" && k["kid"].is_string()),
        "{jwks}"
    );
    assert!(
        keys.iter().all(|k| k.get("d").is_none()),
        "public keys only"
    );

    let mut browser = Browser::start().await;

    browser
        .scenario(
            "alice signs in: a code for the redirect URI, exchanged once",
            async |b| {
                let auth = authorization(&provider, &discovery);
                b.goto(&auth.url).await;
                b.wait_for(oidc::LOGIN_USERNAME, Duration::from_secs(10))
                    .await;
                b.fill(oidc::LOGIN_USERNAME, "alice").await;
                b.fill(oidc::LOGIN_PASSWORD, "alice-password").await;
                b.click(oidc::LOGIN_SUBMIT).await;
                let landed = b
                    .wait_for_url(on_callback(cb_port), Duration::from_secs(10))
                    .await;
                assert_eq!(
                    query(&landed, "state").as_deref(),
                    Some(auth.state.as_str())
                );
                assert_eq!(
                    query(&landed, "iss").as_deref(),
                    Some(provider.issuer.as_str())
                );
                assert_eq!(query(&landed, "error"), None, "{landed}");
                let code = query(&landed, "code").expect("a code");

                let (status, answer) = exchange(&provider, &discovery, &code, &auth.verifier).await;
                assert_eq!(status, 200, "{answer}\n{}", provider.stderr());
                assert_eq!(answer["token_type"], "Bearer", "{answer}");
                let id_token = answer["id_token"].as_str().expect("an id_token");
                let claims = jwt_payload(id_token);
                assert_eq!(claims["iss"], provider.issuer.as_str(), "{claims}");
                assert_eq!(claims["aud"], oidc::CLIENT_ID, "{claims}");
                assert_eq!(claims["sub"], "alice", "{claims}");
                assert_eq!(claims["nonce"], auth.nonce.as_str(), "{claims}");
                assert_eq!(claims["preferred_username"], "alice", "{claims}");
                assert_eq!(
                    claims["roles"],
                    serde_json::json!(["admin", "dev"]),
                    "{claims}"
                );
                assert_eq!(
                    claims["groups"],
                    serde_json::json!(["admin", "dev"]),
                    "{claims}"
                );
                let header = id_token.split('.').next().expect("header");
                let header: Value =
                    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("b64"))
                        .expect("JSON header");
                assert_eq!(header["alg"], "RS256", "{header}");
                assert!(
                    keys.iter().any(|k| k["kid"] == header["kid"]),
                    "the ID token's kid is in the JWKS: {header}"
                );

                // The same code again: refused.
                let (status, answer) = exchange(&provider, &discovery, &code, &auth.verifier).await;
                assert_eq!(status, 400, "{answer}");
                assert_eq!(answer["error"], "invalid_grant", "{answer}");
            },
        )
        .await;

    browser
        .scenario("a wrong verifier is refused", async |b| {
            let auth = authorization(&provider, &discovery);
            b.goto(&auth.url).await;
            b.wait_for(oidc::LOGIN_USERNAME, Duration::from_secs(10))
                .await;
            b.fill(oidc::LOGIN_USERNAME, "bob").await;
            b.fill(oidc::LOGIN_PASSWORD, "bob-password").await;
            b.click(oidc::LOGIN_SUBMIT).await;
            let landed = b
                .wait_for_url(on_callback(cb_port), Duration::from_secs(10))
                .await;
            let code = query(&landed, "code").expect("a code");
            let (status, answer) = exchange(&provider, &discovery, &code, &random_b64(32)).await;
            assert_eq!(status, 400, "{answer}");
            assert_eq!(answer["error"], "invalid_grant", "{answer}");
        })
        .await;

    browser
        .scenario(
            "a wrong password shows the form again; Cancel is access_denied",
            async |b| {
                let auth = authorization(&provider, &discovery);
                b.goto(&auth.url).await;
                b.wait_for(oidc::LOGIN_USERNAME, Duration::from_secs(10))
                    .await;
                b.fill(oidc::LOGIN_USERNAME, "alice").await;
                b.fill(oidc::LOGIN_PASSWORD, "not-her-password").await;
                b.click(oidc::LOGIN_SUBMIT).await;
                b.wait_for(oidc::LOGIN_ERROR, Duration::from_secs(10)).await;
                assert!(b.exists(oidc::LOGIN_PASSWORD).await);
                b.click(oidc::LOGIN_CANCEL).await;
                let landed = b
                    .wait_for_url(on_callback(cb_port), Duration::from_secs(10))
                    .await;
                assert_eq!(query(&landed, "error").as_deref(), Some("access_denied"));
                assert_eq!(
                    query(&landed, "state").as_deref(),
                    Some(auth.state.as_str())
                );
                assert_eq!(query(&landed, "code"), None);
            },
        )
        .await;

    browser.close().await;
    cb_server.abort();
    drop(provider);
    eprintln!("oidc: whole test in {:?}", started.elapsed());
}
