//! What a route can say beyond path, methods and roles, through the real gateway: prefix
//! stripping and rewriting, optional authentication, and the `require` forms (`any_roles`,
//! `claims`, `fresh`), with 401 for no or a bad token and 403 for a token that falls short.

mod common;

use authgate::jwt::Algorithm;
use common::{Setup, access_claims};
use serde_json::json;

fn config(setup: &Setup, routes: &str) -> String {
    format!("{}\n{routes}", setup.head())
}

/// A set-up (HS256, the recording `app` upstream) and a gateway serving `routes`.
async fn start(routes: &str) -> (Setup, common::Gateway) {
    let setup = Setup::new(Algorithm::HS256).await;
    let gw = setup.start_with(&config(&setup, routes)).await;
    (setup, gw)
}

/// GETs `path` (with `token` as a bearer token, if any): the status, and the path and
/// user the upstream saw, when it answered.
async fn get(
    setup: &Setup,
    gw: &common::Gateway,
    path: &str,
    token: Option<&str>,
) -> (u16, Option<(String, Option<String>)>) {
    setup.upstream.clear();
    let mut request = setup.client().get(gw.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let status = request.send().await.expect("request").status().as_u16();
    let seen = setup.upstream.received().pop().map(|r| {
        let user = r
            .headers
            .get("x-auth-user")
            .map(|v| v.to_str().expect("ascii").to_owned());
        (r.path_and_query, user)
    });
    (status, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_prefix_and_rewrite_forward_the_rewritten_path() {
    let (setup, gw) = start(
        r#"
[[route]]
path = "/files"
upstream = "app"
auth = "public"
strip_prefix = true

[[route]]
path = "/assets"
upstream = "app"
auth = "public"
rewrite = "/static/v2"
"#,
    )
    .await;
    for (asked, forwarded) in [
        ("/files", "/"),
        ("/files/", "/"),
        ("/files/x?q=1", "/x?q=1"),
        ("/files/a/../b", "/b"),
        ("/files;v=1/x", "/x"),
        ("/assets", "/static/v2"),
        ("/assets/app.js?v=3", "/static/v2/app.js?v=3"),
    ] {
        let (status, seen) = get(&setup, &gw, asked, None).await;
        assert_eq!(status, 200, "{asked}");
        assert_eq!(seen.map(|s| s.0).as_deref(), Some(forwarded), "{asked}");
    }
    // The prefix matches whole segments: no route for /filesx.
    let (status, seen) = get(&setup, &gw, "/filesx", None).await;
    assert_eq!((status, seen), (404, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_auth_adds_the_identity_when_a_valid_token_comes() {
    let (setup, gw) =
        start("[[route]]\npath = \"/\"\nupstream = \"app\"\nauth = \"optional\"\n").await;
    let (status, seen) = get(&setup, &gw, "/page", None).await;
    assert_eq!((status, seen), (200, Some(("/page".into(), None))));
    let token = setup.token("alice", &[]);
    let (status, seen) = get(&setup, &gw, "/page", Some(&token)).await;
    assert_eq!(
        (status, seen),
        (200, Some(("/page".into(), Some("alice".into()))))
    );
    // A token that is there but bad is refused, not dropped.
    let (status, seen) = get(&setup, &gw, "/page", Some("not.a.token")).await;
    assert_eq!((status, seen), (401, None));
    // No token and a forged identity header: forwarded without it.
    setup.upstream.clear();
    let response = setup
        .client()
        .get(gw.url("/forged"))
        .header("X-Auth-User", "root")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let received = setup.upstream.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].headers.get("x-auth-user").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_forms_refuse_with_403_and_a_missing_token_with_401() {
    let (setup, gw) = start(
        r#"
[[route]]
path = "/ops"
upstream = "app"
require = { any_roles = ["admin", "ops"] }

[[route]]
path = "/files"
upstream = "app"
require = { roles = ["staff"], claims = { scope = "files:read", tenant = "acme" } }

[[route]]
path = "/settings"
upstream = "app"
require = { fresh = true }
"#,
    )
    .await;
    let signed = |roles: &[&str], edit: &dyn Fn(&mut authgate::jwt::Claims)| {
        let mut claims = access_claims("carol", roles);
        edit(&mut claims);
        setup.key.sign(&claims)
    };
    let none = |_: &mut authgate::jwt::Claims| {};
    let scoped = |scope: serde_json::Value, tenant: &'static str| {
        move |c: &mut authgate::jwt::Claims| {
            c.extra.insert("scope".into(), scope.clone());
            c.extra.insert("tenant".into(), json!(tenant));
        }
    };
    let fresh = |value: bool| move |c: &mut authgate::jwt::Claims| c.fresh = Some(value);
    for (what, path, token, expected) in [
        ("no token", "/ops", None, 401),
        ("ops", "/ops", Some(signed(&["ops"], &none)), 200),
        (
            "admin and more",
            "/ops",
            Some(signed(&["user", "admin"], &none)),
            200,
        ),
        ("neither role", "/ops", Some(signed(&["user"], &none)), 403),
        (
            "scope among words",
            "/files",
            Some(signed(
                &["staff"],
                &scoped(json!("files:write files:read"), "acme"),
            )),
            200,
        ),
        (
            "scope in an array",
            "/files",
            Some(signed(&["staff"], &scoped(json!(["files:read"]), "acme"))),
            200,
        ),
        (
            "scope is a longer word",
            "/files",
            Some(signed(&["staff"], &scoped(json!("files:readonly"), "acme"))),
            403,
        ),
        (
            "another tenant",
            "/files",
            Some(signed(&["staff"], &scoped(json!("files:read"), "other"))),
            403,
        ),
        (
            "the claims without the role",
            "/files",
            Some(signed(&["user"], &scoped(json!("files:read"), "acme"))),
            403,
        ),
        ("no claims", "/files", Some(signed(&["staff"], &none)), 403),
        ("fresh", "/settings", Some(signed(&[], &fresh(true))), 200),
        (
            "from a refresh",
            "/settings",
            Some(signed(&[], &fresh(false))),
            403,
        ),
    ] {
        let (status, seen) = get(&setup, &gw, path, token.as_deref()).await;
        assert_eq!(status, expected, "{what}");
        assert_eq!(
            seen.is_some(),
            expected == 200,
            "{what}: forwarded only when passed"
        );
    }
}

#[test]
fn explain_shows_the_host_rewrite_requirements_cors_and_rate_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("jwt.secret"), "0".repeat(64)).expect("secret");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        r#"[server]
listen = "127.0.0.1:0"

[tokens]
algorithm = "HS256"
secret = { file = "jwt.secret" }

[[upstream]]
name = "app"
url = "http://127.0.0.1:3000"

[[route]]
path = "/files"
upstream = "app"
strip_prefix = true
require = { any_roles = ["admin", "ops"], claims = { scope = "files:read" } }

[[route]]
path = "/files"
host = "*.internal.example"
upstream = "app"
auth = "public"
cors = { allow_origins = ["https://app.example.com"], allow_credentials = true }
rate_limit = { requests = 100, per = "1m", key = "ip" }
"#,
    )
    .expect("config");
    let out = common::process::run_cli(&config, &["explain", "GET", "/files/a?x=1"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("with one of the roles admin, ops")
            && text.contains("whose scope is or contains \"files:read\""),
        "{text}"
    );
    assert!(text.contains("forwarded   GET /a?x=1"), "{text}");
    // A full URL: its host decides between the two /files routes.
    let out = common::process::run_cli(
        &config,
        &[
            "explain",
            "GET",
            "https://Docs.Internal.Example:8443/files/a",
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("host        docs.internal.example"), "{text}");
    assert!(
        text.contains("route[1] path = \"/files\", host = \"*.internal.example\"")
            && text.contains("public (no token needed)")
            && text.contains("cors        origins https://app.example.com; methods GET HEAD POST; with credentials")
            && text.contains("rate limit  100 requests a minute per client address")
            && text.contains("forwarded   GET /files/a"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_route_holds_for_every_spelling_of_its_host() {
    let (setup, gw) = start(
        r#"
[[route]]
path = "/"
host = "admin.example.com"
upstream = "app"
require = { roles = ["admin"] }

[[route]]
path = "/"
host = "*.example.com"
upstream = "app"

[[route]]
path = "/"
upstream = "app"
auth = "public"
"#,
    )
    .await;
    let ca = &setup.pki.ca_pem;
    let user = format!(
        "Authorization: Bearer {}\r\n",
        setup.token("bob", &["user"])
    );
    for (host, extra, expected) in [
        // The admin host, however spelled: its route, whatever the catch-all allows.
        ("admin.example.com", "", 401),
        ("ADMIN.Example.COM", "", 401),
        ("admin.example.com.", "", 401),
        ("admin.example.com:443", "", 401),
        ("admin.example.com", user.as_str(), 403),
        // Below example.com: a token is enough.
        ("www.example.com", "", 401),
        ("www.example.com", user.as_str(), 200),
        // Anything else: the public catch-all.
        ("example.com", "", 200),
        ("localhost", "", 200),
    ] {
        let request =
            format!("GET /x HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
        let (status, response) = common::raw_request(gw.addr, ca, request.as_bytes()).await;
        assert_eq!(status, expected, "{host} {extra}: {response}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_and_only_allowed_origins_get_headers() {
    let (setup, gw) = start(
        r#"
[[route]]
path = "/api"
upstream = "app"
cors = { allow_origins = ["https://app.example.com"], allow_methods = ["GET", "POST"], allow_headers = ["Content-Type", "authorization"], allow_credentials = true, max_age = "10m" }

[[route]]
path = "/plain"
upstream = "app"
"#,
    )
    .await;
    let http = setup.client();
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
    };
    let preflight = |origin: &'static str, method: &'static str, path: &'static str| {
        http.request(reqwest::Method::OPTIONS, gw.url(path))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", method)
            .header(
                "Access-Control-Request-Headers",
                "content-type, authorization",
            )
            .send()
    };
    const APP: &str = "https://app.example.com";

    // From the allowed origin, for an allowed method: answered, without a token.
    let response = preflight(APP, "POST", "/api/orders")
        .await
        .expect("preflight");
    assert_eq!(response.status(), 204);
    assert_eq!(
        header(&response, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert_eq!(
        header(&response, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(
        header(&response, "access-control-allow-methods").as_deref(),
        Some("GET, POST")
    );
    assert_eq!(
        header(&response, "access-control-allow-headers").as_deref(),
        Some("content-type, authorization")
    );
    assert_eq!(
        header(&response, "access-control-max-age").as_deref(),
        Some("600")
    );
    assert_eq!(header(&response, "vary").as_deref(), Some("Origin"));
    // Another origin, or a method the policy does not allow: no CORS headers.
    for (origin, method) in [("https://evil.example", "POST"), (APP, "DELETE")] {
        let response = preflight(origin, method, "/api/orders")
            .await
            .expect("preflight");
        assert_eq!(response.status(), 204, "{origin} {method}");
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            None,
            "{origin} {method}"
        );
    }
    assert!(
        setup.upstream.received().is_empty(),
        "preflights never reach the upstream"
    );

    // Actual requests: the headers for the allowed origin, on refusals too.
    let token = setup.token("alice", &[]);
    for (origin, token, status, allowed) in [
        (APP, Some(&token), 200, true),
        (APP, None, 401, true),
        ("https://evil.example", Some(&token), 200, false),
    ] {
        let mut request = http.get(gw.url("/api/orders")).header("Origin", origin);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), status, "{origin}");
        assert_eq!(
            header(&response, "access-control-allow-origin").as_deref(),
            allowed.then_some(APP),
            "{origin}"
        );
        assert_eq!(
            header(&response, "vary").as_deref(),
            Some("Origin"),
            "{origin}"
        );
    }
    // A route without a policy: an OPTIONS request is an ordinary one (a token needed).
    let response = preflight(APP, "GET", "/plain").await.expect("options");
    assert_eq!(response.status(), 401);
    assert_eq!(header(&response, "access-control-allow-origin"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_stops_one_caller_and_not_another() {
    let (setup, gw) = start(
        r#"
[[route]]
path = "/reports"
upstream = "app"
rate_limit = { requests = 2, per = "1m", key = "user" }

[[route]]
path = "/search"
upstream = "app"
auth = "public"
rate_limit = { requests = 2, per = "1m", key = "ip" }
"#,
    )
    .await;
    let http = setup.client();
    let alice = setup.token("alice", &[]);
    let bob = setup.token("bob", &[]);
    let send = |path: &'static str, token: Option<&String>| {
        let mut request = http.get(gw.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    for expected in [200, 200, 429] {
        let response = send("/reports", Some(&alice)).await.expect("request");
        assert_eq!(response.status(), expected);
        if expected == 429 {
            let retry: u64 = response.headers()["retry-after"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("seconds");
            assert!((1..=60).contains(&retry), "Retry-After {retry}");
        }
    }
    // Bob has a budget of his own.
    assert_eq!(
        send("/reports", Some(&bob))
            .await
            .expect("request")
            .status(),
        200
    );
    // By address: one budget for everyone behind it, whoever they are.
    assert_eq!(send("/search", None).await.expect("request").status(), 200);
    assert_eq!(
        send("/search", Some(&bob)).await.expect("request").status(),
        200
    );
    assert_eq!(
        send("/search", Some(&alice))
            .await
            .expect("request")
            .status(),
        429
    );
    let forwarded = setup.upstream.paths();
    assert_eq!(
        forwarded,
        ["/reports", "/reports", "/reports", "/search", "/search"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_auth_age_counts_from_the_password_login_through_refreshes() {
    let (setup, gw) = start(
        r#"
[store]
url = "sqlite://data/authgate.db"

[accounts]
login_rate_per_ip = "1000/m"
login_rate_per_user = "1000/m"

[[route]]
path = "/billing"
upstream = "app"
require = { max_auth_age = "10m" }
"#,
    )
    .await;
    let http = setup.client();
    let creds = json!({ "username": "dora", "password": "a-long-password" });
    let status = http
        .post(gw.url("/auth/register"))
        .json(&creds)
        .send()
        .await
        .expect("register")
        .status();
    assert_eq!(status, 201);
    let tokens: serde_json::Value = http
        .post(gw.url("/auth/login"))
        .json(&creds)
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let payload = |token: &str| -> serde_json::Value {
        use base64::Engine as _;
        let part = token.split('.').nth(1).expect("payload");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64");
        serde_json::from_slice(&bytes).expect("json")
    };
    let access = tokens["access_token"].as_str().expect("access");
    let logged_in_at = payload(access)["auth_time"].as_i64().expect("auth_time");
    assert!((common::now() - logged_in_at).abs() <= 5);
    let (status, _) = get(&setup, &gw, "/billing", Some(access)).await;
    assert_eq!(status, 200);
    // A refresh is not a password entry: the new tokens keep the login's time.
    let refreshed: serde_json::Value = http
        .post(gw.url("/auth/refresh"))
        .bearer_auth(tokens["refresh_token"].as_str().expect("refresh"))
        .send()
        .await
        .expect("refresh")
        .json()
        .await
        .expect("json");
    let access = refreshed["access_token"].as_str().expect("access");
    assert_eq!(payload(access)["auth_time"].as_i64(), Some(logged_in_at));
    let (status, _) = get(&setup, &gw, "/billing", Some(access)).await;
    assert_eq!(status, 200);
    // A login an hour ago, or none on record: 403.
    for auth_time in [Some(common::now() - 3600), None] {
        let mut claims = access_claims("dora", &[]);
        claims.auth_time = auth_time;
        let (status, seen) = get(&setup, &gw, "/billing", Some(&setup.key.sign(&claims))).await;
        assert_eq!((status, seen), (403, None), "{auth_time:?}");
    }
}
