//! Identity-header hygiene through the real gateway, asserted on what the recording
//! upstream received: client copies of identity headers never reach it (whatever their
//! case or `_`/`-` spelling, on protected and public routes), `Connection` cannot make the
//! gateway drop its own headers, hop-by-hop headers and `Authorization` stay behind, the
//! forwarding headers are rebuilt unless the peer is a trusted proxy, and every request
//! carries one request id.

mod common;

use authgate::jwt::{Algorithm, OneOrMany};
use common::{Received, Setup, access_claims};
use http::HeaderMap;

/// A header name as CGI-style servers read it: lower case, `_` as `-`.
fn fold(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Every value of every header whose folded name is `folded`, with the name it came under.
fn folded_values(headers: &HeaderMap, folded: &str) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| fold(name.as_str()) == folded)
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Asserts that the only header folding to `folded` is the gateway's own `folded`, once,
/// with `value` (or that there is none at all when `value` is `None`).
fn assert_only(headers: &HeaderMap, folded: &str, value: Option<&str>, context: &str) {
    let got = folded_values(headers, folded);
    let expected: Vec<(String, String)> = value
        .map(|v| vec![(folded.to_owned(), v.to_owned())])
        .unwrap_or_default();
    assert_eq!(got, expected, "{context}: headers folding to {folded}");
    for name in headers.keys() {
        if fold(name.as_str()) == folded {
            assert_eq!(name.as_str(), folded, "{context}: spelling {name}");
        }
    }
}

/// The one request the upstream received; clears the log.
fn only_request(setup: &Setup, context: &str) -> Received {
    let received = setup.upstream.received();
    assert_eq!(
        received.len(),
        1,
        "{context}: upstream requests: {received:?}"
    );
    setup.upstream.clear();
    received.into_iter().next().expect("one request")
}

fn no_value_contains(headers: &HeaderMap, needle: &str, context: &str) {
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !value.contains(needle),
            "{context}: {name}: {value} carries the client's {needle}"
        );
    }
}

/// Values of header `name` in a raw HTTP/1.1 response.
fn raw_header_values(text: &str, name: &str) -> Vec<String> {
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

fn is_request_id(value: &str) -> bool {
    value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ascii header"))
        .collect()
}

// --- identity headers ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_x_auth_user_is_replaced_by_the_verified_sub() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    // reqwest speaks HTTP/2 here (ALPN), where names arrive lower case.
    let resp = setup
        .client()
        .get(gw.url("/hello"))
        .bearer_auth(setup.token("alice", &["user"]))
        .header("X-Auth-User", "mallory")
        .header("x_auth_user", "mallory2")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["user"], "alice");
    let got = only_request(&setup, "h2");
    assert_only(&got.headers, "x-auth-user", Some("alice"), "h2");
    no_value_contains(&got.headers, "mallory", "h2");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_x_auth_user_is_stripped() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    for spoof in [
        "X-Auth-User: mallory\r\n",
        "x_auth_user: mallory\r\n",
        "X_AUTH_USER: mallory\r\n",
        "X-AUTH-USER: mallory\r\n",
        "x-Auth_User: mallory\r\n",
        "X-Auth-User: mallory\r\nX-Auth-User: mallory2\r\n",
        "x_auth_user: mallory\r\nX-Auth-User: mallory2\r\nX_Auth-User: mallory3\r\n",
    ] {
        let token = setup.token("alice", &["user"]);
        let extra = format!("Authorization: Bearer {token}\r\n{spoof}");
        let (status, text) = common::raw_get(gw.addr, &setup.pki.ca_pem, "/hello", &extra).await;
        assert_eq!(status, 200, "{spoof:?}: {text}");
        let got = only_request(&setup, spoof);
        assert_only(&got.headers, "x-auth-user", Some("alice"), spoof);
        no_value_contains(&got.headers, "mallory", spoof);
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_routes_forward_no_identity_at_all() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    for spoof in [
        "",
        "X-Auth-User: mallory\r\n",
        "x_auth_user: mallory\r\n",
        "X_AUTH_USER: mallory\r\nX-Auth-User: mallory2\r\n",
        "X-Auth-Roles: admin\r\nx_auth_roles: admin\r\nX-AUTH-ROLES: admin\r\n",
    ] {
        let (status, text) =
            common::raw_get(gw.addr, &setup.pki.ca_pem, "/public/page", spoof).await;
        assert_eq!(status, 200, "{spoof:?}: {text}");
        let got = only_request(&setup, spoof);
        assert_eq!(got.path_and_query, "/public/page");
        assert_only(&got.headers, "x-auth-user", None, spoof);
        assert_only(&got.headers, "x-auth-roles", None, spoof);
        no_value_contains(&got.headers, "mallory", spoof);
    }
    // And over HTTP/2.
    let resp = setup
        .client()
        .get(gw.url("/public"))
        .header("x-auth-user", "mallory")
        .header("x_auth_user", "mallory")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let got = only_request(&setup, "h2");
    assert_only(&got.headers, "x-auth-user", None, "h2");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_roles_are_replaced_by_the_token_roles() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let token = setup.token("alice", &["a", "b"]);
    let extra = format!(
        "Authorization: Bearer {token}\r\nX-Auth-Roles: admin\r\nx_auth_roles: admin\r\nX-AUTH-ROLES: admin\r\n"
    );
    let (status, text) = common::raw_get(gw.addr, &setup.pki.ca_pem, "/hello", &extra).await;
    assert_eq!(status, 200, "{text}");
    let got = only_request(&setup, "roles");
    assert_only(&got.headers, "x-auth-roles", Some("a,b"), "roles");
    assert_only(&got.headers, "x-auth-user", Some("alice"), "roles");

    // One role: no comma.
    let token = setup.token("alice", &["solo"]);
    let extra = format!("Authorization: Bearer {token}\r\nX-Auth-Roles: admin\r\n");
    let (status, _) = common::raw_get(gw.addr, &setup.pki.ca_pem, "/hello", &extra).await;
    assert_eq!(status, 200);
    let got = only_request(&setup, "one role");
    assert_only(&got.headers, "x-auth-roles", Some("solo"), "one role");

    // A roles claim written as a single string.
    let mut claims = access_claims("carol", &[]);
    claims.roles = OneOrMany::One("solo".into());
    let resp = setup
        .client()
        .get(gw.url("/hello"))
        .bearer_auth(setup.key.sign(&claims))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let got = only_request(&setup, "string roles");
    assert_only(&got.headers, "x-auth-roles", Some("solo"), "string roles");

    // A spoofed roles header does not open a route that requires the role.
    let token = setup.token("alice", &["user"]);
    let extra = format!("Authorization: Bearer {token}\r\nX-Auth-Roles: admin\r\n");
    let (status, _) = common::raw_get(gw.addr, &setup.pki.ca_pem, "/admin", &extra).await;
    assert_eq!(status, 403);
    assert!(setup.upstream.received().is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_make_the_gateway_drop_its_identity_headers() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;

    // `Connection: close, X-Auth-User` in one header, written out by hand.
    let token = setup.token("alice", &["user"]);
    let raw = format!(
        "GET /hello HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nX-Auth-User: mallory\r\nConnection: close, X-Auth-User\r\n\r\n"
    );
    let (status, text) = common::raw_request(gw.addr, &setup.pki.ca_pem, raw.as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    let got = only_request(&setup, "close, X-Auth-User");
    assert_only(
        &got.headers,
        "x-auth-user",
        Some("alice"),
        "close, X-Auth-User",
    );
    assert_only(
        &got.headers,
        "x-auth-roles",
        Some("user"),
        "close, X-Auth-User",
    );

    for connection in [
        "Connection: X-Auth-User\r\n",
        "Connection: X-Auth-User, X-Auth-Roles\r\n",
        "Connection: x_auth_user\r\n",
        "Connection: x-auth-user\r\nConnection: x-auth-roles\r\n",
    ] {
        let token = setup.token("alice", &["user"]);
        let extra =
            format!("Authorization: Bearer {token}\r\nX-Auth-User: mallory\r\n{connection}");
        let (status, text) = common::raw_get(gw.addr, &setup.pki.ca_pem, "/hello", &extra).await;
        assert_eq!(status, 200, "{connection:?}: {text}");
        let got = only_request(&setup, connection);
        assert_only(&got.headers, "x-auth-user", Some("alice"), connection);
        assert_only(&got.headers, "x-auth-roles", Some("user"), connection);
        no_value_contains(&got.headers, "mallory", connection);
    }
    gw.stop().await;
}

// --- hop-by-hop and credentials ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_not_forwarded() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let token = setup.token("alice", &["user"]);
    let extra = format!(
        "Authorization: Bearer {token}\r\n\
         Connection: x-custom, X-Other-Hop\r\n\
         X-Custom: 1\r\n\
         X-Other-Hop: 2\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
         Proxy-Connection: keep-alive\r\n\
         X-Kept: yes\r\n"
    );
    let (status, text) = common::raw_get(gw.addr, &setup.pki.ca_pem, "/hello", &extra).await;
    assert_eq!(status, 200, "{text}");
    let got = only_request(&setup, "hop-by-hop");
    for name in [
        "x-custom",
        "x-other-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            !got.headers.contains_key(name),
            "{name} was forwarded: {:?}",
            got.headers
        );
    }
    // The client's Connection header itself is not passed on.
    for value in header_str(&got.headers, "connection") {
        assert!(
            !value.to_ascii_lowercase().contains("x-custom"),
            "connection: {value}"
        );
    }
    assert_eq!(header_str(&got.headers, "x-kept"), ["yes"]);
    assert_eq!(header_str(&got.headers, "x-auth-user"), ["alice"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_is_not_forwarded_by_default() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let token = setup.token("alice", &["user"]);
    let resp = setup
        .client()
        .get(gw.url("/hello"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let got = only_request(&setup, "default");
    assert!(got.headers.get("authorization").is_none());
    no_value_contains(&got.headers, &token, "default");
    assert_eq!(header_str(&got.headers, "x-auth-user"), ["alice"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_is_forwarded_when_configured() {
    let setup = Setup::new(Algorithm::ES256).await;
    let config = setup.standard_config().replacen(
        "[identity]\n",
        "[identity]\nforward_authorization = true\n",
        1,
    );
    assert!(config.contains("forward_authorization = true"));
    let gw = setup.start_with(&config).await;
    let token = setup.token("alice", &["user"]);
    let resp = setup
        .client()
        .get(gw.url("/hello"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let got = only_request(&setup, "forward_authorization");
    assert_eq!(
        header_str(&got.headers, "authorization"),
        [format!("Bearer {token}")]
    );
    assert_eq!(header_str(&got.headers, "x-auth-user"), ["alice"]);
    gw.stop().await;
}

// --- forwarding headers ---

const CLIENT_FORWARDING: &str = "X-Forwarded-For: 203.0.113.7\r\n\
     X-Forwarded-Proto: http\r\n\
     X-Forwarded-Host: evil.example\r\n\
     X-Forwarded-Port: 8080\r\n\
     x_forwarded_for: 198.51.100.9\r\n\
     Forwarded: for=203.0.113.7;proto=http\r\n\
     X-Real-IP: 203.0.113.7\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_an_untrusted_client_are_replaced() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let token = setup.token("alice", &["user"]);
    for (path, extra) in [
        (
            "/hello",
            format!("Authorization: Bearer {token}\r\n{CLIENT_FORWARDING}"),
        ),
        ("/public", CLIENT_FORWARDING.to_owned()),
    ] {
        let (status, text) = common::raw_get(gw.addr, &setup.pki.ca_pem, path, &extra).await;
        assert_eq!(status, 200, "{path}: {text}");
        let got = only_request(&setup, path);
        let h = &got.headers;
        assert_eq!(header_str(h, "x-forwarded-for"), ["127.0.0.1"], "{path}");
        assert_eq!(header_str(h, "x-forwarded-proto"), ["https"], "{path}");
        assert_eq!(header_str(h, "x-forwarded-host"), ["localhost"], "{path}");
        for dropped in ["forwarded", "x-forwarded-port", "x-real-ip"] {
            assert!(
                folded_values(h, dropped).is_empty(),
                "{path}: {dropped}: {h:?}"
            );
        }
        assert_only(h, "x-forwarded-for", Some("127.0.0.1"), path);
        no_value_contains(h, "203.0.113.7", path);
        no_value_contains(h, "198.51.100.9", path);
        no_value_contains(h, "evil.example", path);
    }

    // Over HTTP/2 the host comes from :authority.
    let resp = setup
        .client()
        .get(gw.url("/hello"))
        .bearer_auth(&token)
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let got = only_request(&setup, "h2");
    assert_eq!(header_str(&got.headers, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header_str(&got.headers, "x-forwarded-proto"), ["https"]);
    assert_eq!(
        header_str(&got.headers, "x-forwarded-host"),
        [format!("localhost:{}", gw.addr.port())]
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_a_trusted_proxy_are_kept() {
    let setup = Setup::new(Algorithm::ES256).await;
    let config = setup.standard_config().replacen(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n",
        1,
    );
    assert!(config.contains("trusted_proxies"));
    let gw = setup.start_with(&config).await;
    let token = setup.token("alice", &["user"]);
    let extra = format!(
        "Authorization: Bearer {token}\r\n\
         X-Forwarded-For: 203.0.113.7\r\n\
         X-Forwarded-Proto: http\r\n\
         X-Forwarded-Host: public.example\r\n\
         X-Request-Id: trace-abc-123\r\n"
    );
    let (status, text) = common::raw_get(gw.addr, &setup.pki.ca_pem, "/hello", &extra).await;
    assert_eq!(status, 200, "{text}");
    let got = only_request(&setup, "trusted");
    let h = &got.headers;
    assert_eq!(header_str(h, "x-forwarded-for"), ["203.0.113.7, 127.0.0.1"]);
    assert_eq!(header_str(h, "x-forwarded-proto"), ["http"]);
    assert_eq!(header_str(h, "x-forwarded-host"), ["public.example"]);
    // A trusted proxy's request id follows the request.
    assert_eq!(header_str(h, "x-request-id"), ["trace-abc-123"]);
    assert_eq!(raw_header_values(&text, "x-request-id"), ["trace-abc-123"]);
    // Identity is still the gateway's, trusted proxy or not.
    assert_eq!(header_str(h, "x-auth-user"), ["alice"]);

    // Without client values, the trusted path sets them itself.
    let extra = format!("Authorization: Bearer {token}\r\n");
    let (status, _) = common::raw_get(gw.addr, &setup.pki.ca_pem, "/hello", &extra).await;
    assert_eq!(status, 200);
    let got = only_request(&setup, "trusted, no client values");
    let h = &got.headers;
    assert_eq!(header_str(h, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header_str(h, "x-forwarded-proto"), ["https"]);
    assert_eq!(header_str(h, "x-forwarded-host"), ["localhost"]);
    gw.stop().await;
}

// --- request ids ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_one_request_id() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let mut seen = Vec::new();
    for client_id in [
        None,
        Some("client-chosen-id"),
        Some("0123456789abcdef0123456789abcdef"),
    ] {
        let mut req = setup
            .client()
            .get(gw.url("/hello"))
            .bearer_auth(setup.token("alice", &["user"]));
        if let Some(id) = client_id {
            req = req.header("x-request-id", id);
        }
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status(), 200);
        let answered = header_str(resp.headers(), "x-request-id")
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        let got = only_request(&setup, "request id");
        let upstream = header_str(&got.headers, "x-request-id");
        assert_eq!(upstream.len(), 1, "one id upstream: {upstream:?}");
        let id = upstream[0].to_owned();
        assert!(is_request_id(&id), "not 32 hex digits: {id}");
        assert_eq!(
            answered,
            std::slice::from_ref(&id),
            "the client sees the upstream's id"
        );
        if let Some(client_id) = client_id {
            assert_ne!(id, client_id, "an untrusted client's id was kept");
        }
        assert!(!seen.contains(&id), "request id reused: {id}");
        seen.push(id);
    }
    // A refusal carries one too.
    let resp = setup
        .client()
        .get(gw.url("/hello"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    let ids = header_str(resp.headers(), "x-request-id");
    assert_eq!(ids.len(), 1);
    assert!(is_request_id(ids[0]));
    gw.stop().await;
}

// --- claim headers ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_claim_header_carries_a_custom_claim() {
    let setup = Setup::new(Algorithm::ES256).await;
    let line = "claim_headers = { \"X-Auth-Roles\" = \"roles\" }\n";
    let config = setup.standard_config().replacen(
        line,
        "claim_headers = { \"X-Auth-Roles\" = \"roles\", \"X-Auth-Team\" = \"team\" }\n",
        1,
    );
    assert!(config.contains("X-Auth-Team"));
    let gw = setup.start_with(&config).await;
    let mut claims = access_claims("alice", &["a", "b"]);
    claims
        .extra
        .insert("team".into(), serde_json::json!("blue"));
    let token = setup.key.sign(&claims);
    let extra =
        format!("Authorization: Bearer {token}\r\nX-Auth-Team: red\r\nx_auth_team: red\r\n");
    let (status, text) = common::raw_get(gw.addr, &setup.pki.ca_pem, "/hello", &extra).await;
    assert_eq!(status, 200, "{text}");
    let got = only_request(&setup, "team");
    assert_only(&got.headers, "x-auth-team", Some("blue"), "team");
    assert_only(&got.headers, "x-auth-roles", Some("a,b"), "team");
    assert_only(&got.headers, "x-auth-user", Some("alice"), "team");
    no_value_contains(&got.headers, "red", "team");

    // A token without the claim: no header, and the client's copy is still gone.
    let token = setup.token("bob", &["user"]);
    let extra = format!("Authorization: Bearer {token}\r\nX-Auth-Team: red\r\n");
    let (status, _) = common::raw_get(gw.addr, &setup.pki.ca_pem, "/hello", &extra).await;
    assert_eq!(status, 200);
    let got = only_request(&setup, "no team claim");
    assert_only(&got.headers, "x-auth-team", None, "no team claim");
    gw.stop().await;
}

// --- a sub that cannot be a header value ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_that_cannot_be_a_header_value_is_never_forwarded_anonymously() {
    // PRODUCT.md: X-Auth-User is "set to the token's sub on every forwarded request". A
    // validly signed token whose sub cannot be written as a header value must be refused,
    // not forwarded to a protected upstream without identity (nor split into headers).
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let mut wrong = Vec::new();
    for sub in [
        "jos\u{e9}",
        "alice\r\nx-auth-roles: admin",
        "tab\u{7f}del",
        "nul\0",
    ] {
        let mut claims = access_claims("placeholder", &["user"]);
        claims.sub = sub.to_owned();
        let token = setup.key.sign(&claims);
        let resp = setup
            .client()
            .get(gw.url("/hello"))
            .bearer_auth(&token)
            .header("x-auth-user", "mallory")
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        let received = setup.upstream.received();
        setup.upstream.clear();
        match received.as_slice() {
            // Refused: fine, as long as it is not a success.
            [] if status != 200 => {}
            // Forwarded: the upstream must see exactly the sub, once.
            [got] => {
                let users: Vec<&[u8]> = got
                    .headers
                    .get_all("x-auth-user")
                    .iter()
                    .map(|v| v.as_bytes())
                    .collect();
                if users != [sub.as_bytes()] {
                    wrong.push(format!(
                        "sub {sub:?}: status {status}, upstream x-auth-user {users:?}, headers {:?}",
                        got.headers
                    ));
                }
            }
            other => wrong.push(format!("sub {sub:?}: status {status}, upstream {other:?}")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    gw.stop().await;
}
