//! Path normalization and route precedence through the real gateway, over real sockets.
//!
//! The bypass tests send request targets byte for byte (`raw_get`), because an HTTP client
//! library would normalize the URL itself and the gateway would never see the spelling.
mod common;

use authgate::jwt::Algorithm;
use common::{Setup, raw_get, raw_request};

/// What the gateway must answer to one spelling of `/admin/secret` sent with a valid
/// token that lacks the `admin` role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Normalized to `/admin…`, so the admin route's role check refuses it:
    /// 403 `insufficient_scope`.
    Forbidden,
    /// Refused by the gateway's normalizer as ambiguous: 400 `invalid_path`.
    InvalidPath,
    /// Refused before routing, by the gateway or by the HTTP/1 parser itself (which may
    /// answer 400 without a JSON body): any 400.
    BadRequest,
}

/// Spellings of `/admin/secret` (or `/admin`) that must never reach the upstream for a
/// user without the `admin` role. Case variants are deliberately absent: `/Admin` is a
/// different resource on a case-sensitive upstream (see `case_variants_are_other_paths`).
const BYPASSES: &[(&str, Expect)] = &[
    // The plain spellings, as the baseline.
    ("/admin", Expect::Forbidden),
    ("/admin/", Expect::Forbidden),
    ("/admin/secret", Expect::Forbidden),
    // Percent-encoded unreserved characters are decoded before matching.
    ("/%61dmin/secret", Expect::Forbidden),
    ("/%61%64%6D%69%6e/secret", Expect::Forbidden),
    ("/admi%6E", Expect::Forbidden),
    // Dot segments, plain and encoded, are resolved before matching.
    ("/./admin/secret", Expect::Forbidden),
    ("/x/../admin/secret", Expect::Forbidden),
    ("/%2e/admin/secret", Expect::Forbidden),
    ("/%2E/admin/secret", Expect::Forbidden),
    ("/x/%2e%2e/admin/secret", Expect::Forbidden),
    ("/x/.%2E/admin", Expect::Forbidden),
    ("/x/%2E./admin", Expect::Forbidden),
    ("/admin/./secret", Expect::Forbidden),
    ("/admin/secret/..", Expect::Forbidden),
    ("/admin/secret/.", Expect::Forbidden),
    ("/admin/%2e%2e/admin/secret", Expect::Forbidden),
    ("/x/y/../../admin", Expect::Forbidden),
    // A public prefix in front does not help: normalized before matching.
    ("/public/../admin/secret", Expect::Forbidden),
    ("/public/%2e%2e/admin", Expect::Forbidden),
    ("/public/./../admin", Expect::Forbidden),
    // Empty segments are merged.
    ("//admin/secret", Expect::Forbidden),
    ("///admin", Expect::Forbidden),
    ("/admin//secret", Expect::Forbidden),
    // Path parameters do not hide the segment name from the route.
    ("/admin;jsessionid=1/secret", Expect::Forbidden),
    ("/admin;", Expect::Forbidden),
    ("/admin;x=1", Expect::Forbidden),
    // The query is not part of the path; a fragment is not part of the target.
    ("/admin?x=/public", Expect::Forbidden),
    ("/admin?/../public", Expect::Forbidden),
    ("/admin#/../public", Expect::Forbidden),
    // Dot segments above the root.
    ("/%2e%2e/admin", Expect::InvalidPath),
    ("/%2E%2E/admin", Expect::InvalidPath),
    ("/../admin", Expect::InvalidPath),
    ("/.%2e/admin", Expect::InvalidPath),
    ("/x/../../admin", Expect::InvalidPath),
    // Encoded separators.
    ("/admin%2fsecret", Expect::InvalidPath),
    ("/admin%2Fsecret", Expect::InvalidPath),
    ("/x%2f..%2fadmin", Expect::InvalidPath),
    ("/public/..%2fadmin", Expect::InvalidPath),
    ("/public%2f..%2fadmin", Expect::InvalidPath),
    ("/admin%5csecret", Expect::InvalidPath),
    ("/admin%5Csecret", Expect::InvalidPath),
    // Double encoding.
    ("/%2561dmin", Expect::InvalidPath),
    ("/x/%252e%252e/admin", Expect::InvalidPath),
    ("/x/%252E%252E/admin/secret", Expect::InvalidPath),
    ("/%25%36%31dmin", Expect::InvalidPath),
    // Raw backslashes (the HTTP parser lets them through; the normalizer refuses).
    ("/admin\\secret", Expect::InvalidPath),
    ("/x\\..\\admin", Expect::InvalidPath),
    ("/public\\..\\admin", Expect::InvalidPath),
    // Encoded control bytes.
    ("/admin%00", Expect::InvalidPath),
    ("/admin%00/secret", Expect::InvalidPath),
    ("/admin%0d%0a/secret", Expect::InvalidPath),
    ("/admin%09", Expect::InvalidPath),
    ("/admin%7f", Expect::InvalidPath),
    // Dot segments with parameters, which servlet containers resolve.
    ("/..;/admin", Expect::InvalidPath),
    // An encoded `;` would hide parameters and dot segments from an upstream that decodes
    // before it strips parameters.
    ("/admin%3Bx/secret", Expect::InvalidPath),
    ("/public/..%3B/admin/secret", Expect::InvalidPath),
    ("/x/.%3b/admin/secret", Expect::InvalidPath),
    ("/x/..;/admin", Expect::InvalidPath),
    ("/public/..;/admin", Expect::InvalidPath),
    ("/x/..;jsessionid=1/admin", Expect::InvalidPath),
    ("/x/%2e%2e;/admin", Expect::InvalidPath),
    ("/.;/admin", Expect::InvalidPath),
    ("/;x/admin", Expect::InvalidPath),
    // Invalid percent-encoding.
    ("/admin%", Expect::InvalidPath),
    ("/admin%zz/secret", Expect::InvalidPath),
    ("/admin/%6", Expect::InvalidPath),
];

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// The JSON body of a raw response, if it has one.
fn json_body(response: &str) -> Option<serde_json::Value> {
    let (_, body) = response.split_once("\r\n\r\n")?;
    let start = body.find('{')?;
    let end = body.rfind('}')?;
    serde_json::from_str(&body[start..=end]).ok()
}

fn error_code(response: &str) -> Option<String> {
    json_body(response)?
        .get("error")?
        .as_str()
        .map(str::to_owned)
}

/// Checks one answer against its expectation; the mismatch as text.
fn check(target: &str, expect: Expect, status: u16, response: &str) -> Option<String> {
    let code = error_code(response);
    let ok = match expect {
        Expect::Forbidden => status == 403 && code.as_deref() == Some("insufficient_scope"),
        Expect::InvalidPath => status == 400 && code.as_deref() == Some("invalid_path"),
        Expect::BadRequest => status == 400,
    };
    (!ok).then(|| format!("{target:?}: expected {expect:?}, got {status} {code:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_spellings_of_admin_never_reach_the_upstream() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let auth = bearer(&setup.token("bob", &["user"]));
    let mut failures = Vec::new();

    for (target, expect) in BYPASSES {
        let (status, response) = raw_get(gw.addr, &setup.pki.ca_pem, target, &auth).await;
        failures.extend(check(target, *expect, status, &response));
    }

    // Absolute-form targets (RFC 9112 §3.2.2) carry the path too.
    let port = gw.addr.port();
    for (path, expect) in [
        ("/x/../admin/secret", Expect::Forbidden),
        ("/%61dmin", Expect::Forbidden),
        ("//admin", Expect::Forbidden),
        ("/%2e%2e/admin", Expect::InvalidPath),
        ("/admin%2fsecret", Expect::InvalidPath),
    ] {
        let target = format!("https://localhost:{port}{path}");
        let (status, response) = raw_get(gw.addr, &setup.pki.ca_pem, &target, &auth).await;
        failures.extend(check(&target, expect, status, &response));
    }

    // Raw control bytes and whitespace in the target: the HTTP parser refuses most of
    // them itself; whoever refuses, it is a 400 and nothing is forwarded.
    for target in [
        &b"/admin\t/secret"[..],
        b"/x/..\t/admin",
        b"/admin\x00/secret",
        b"/admin\x01",
        b"/admin\x1f/secret",
        b"/admin\x7f",
        b"/x/\x7f/../admin",
    ] {
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(target);
        request.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\n");
        request.extend_from_slice(auth.as_bytes());
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        let (status, response) = raw_request(gw.addr, &setup.pki.ca_pem, &request).await;
        let shown = String::from_utf8_lossy(target).into_owned();
        failures.extend(check(&shown, Expect::BadRequest, status, &response));
    }

    assert!(
        failures.is_empty(),
        "{} spellings answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let forwarded = setup.upstream.paths();
    assert!(
        forwarded.is_empty(),
        "refused spellings reached the upstream: {forwarded:?}"
    );

    // The control: the same token on a path it may use is forwarded, so the empty record
    // above means "refused", not "the upstream records nothing".
    let (status, _) = raw_get(gw.addr, &setup.pki.ca_pem, "/hello", &auth).await;
    assert_eq!(status, 200);
    let received = setup.upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path_and_query, "/hello");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_spellings_over_http2_never_reach_the_upstream() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let token = setup.token("bob", &["user"]);
    for (path, status) in [
        ("/x/../admin/secret", 403),
        ("/%61dmin/secret", 403),
        ("//admin/secret", 403),
        ("/public/%2e%2e/admin", 403),
        ("/admin;x=1/secret", 403),
        ("/admin%2fsecret", 400),
        ("/%2e%2e/admin", 400),
        ("/x/..;/admin", 400),
    ] {
        let (got, version, body) = common::h2_get(gw.addr, &setup.pki.ca_pem, path, &token).await;
        assert_eq!(version, http::Version::HTTP_2);
        assert_eq!(got.as_u16(), status, "{path}: {body}");
    }
    assert!(setup.upstream.received().is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalized_before_authentication() {
    // Without a token, a spelling of an admin path that starts under /public is a request
    // for /admin: it needs a token (401), it is not served publicly.
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    for target in [
        "/public/../admin/secret",
        "/public/%2e%2e/admin",
        "/public/x/../../admin",
        "/public/./../%61dmin",
    ] {
        let (status, response) = raw_get(gw.addr, &setup.pki.ca_pem, target, "").await;
        assert_eq!(status, 401, "{target}: {response}");
        assert_eq!(error_code(&response).as_deref(), Some("missing_token"));
    }
    assert!(setup.upstream.received().is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_receives_the_normalized_path_and_the_query_unchanged() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let admin = bearer(&setup.token("alice", &["admin"]));
    let cases: &[(&str, &str, &str)] = &[
        // (target, token header, what the upstream must receive)
        ("/x/../admin/a%2Db?q=%2e%2E", &admin, "/admin/a-b?q=%2e%2E"),
        ("/%61dmin/secret", &admin, "/admin/secret"),
        ("/%61%64%6D%69%6e/secret", &admin, "/admin/secret"),
        ("//admin///secret", &admin, "/admin/secret"),
        ("/admin/secret/..", &admin, "/admin/"),
        ("/admin/secret/.", &admin, "/admin/secret/"),
        ("/admin/x/%2E%2e/secret", &admin, "/admin/secret"),
        // Parameters are kept in what is forwarded; only matching ignores them.
        (
            "/admin;jsessionid=1/secret",
            &admin,
            "/admin;jsessionid=1/secret",
        ),
        // Other encodings are kept, with upper-case hex.
        ("/admin/caf%c3%a9", &admin, "/admin/caf%C3%A9"),
        ("/admin/a%3fb?x=1", &admin, "/admin/a%3Fb?x=1"),
        ("/admin/a%20b", &admin, "/admin/a%20b"),
        // The query is forwarded byte for byte, dots and encodings included.
        (
            "/admin?x=/public/../y&z=%2F",
            &admin,
            "/admin?x=/public/../y&z=%2F",
        ),
        // Public, no token.
        ("/public/./a//b", "", "/public/a/b"),
        ("/public/a/../b/%7Euser", "", "/public/b/~user"),
    ];
    for (target, auth, forwarded) in cases {
        setup.upstream.clear();
        let (status, response) = raw_get(gw.addr, &setup.pki.ca_pem, target, auth).await;
        assert_eq!(status, 200, "{target}: {response}");
        let received = setup.upstream.received();
        assert_eq!(received.len(), 1, "{target}");
        assert_eq!(received[0].path_and_query, *forwarded, "{target}");
    }
    gw.stop().await;
}

/// Routes are case-sensitive, as paths are on most upstreams: `/Admin` is not `/admin`,
/// so the catch-all `/` route takes it and any valid token may pass. `%41` is decoded like
/// any unreserved character, so the upstream sees `/Admin` exactly as the route did,
/// never a spelling it could fold back into `/admin` after the check. (An upstream that
/// folds case must be given routes for each spelling; the gateway cannot guess.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_variants_are_other_paths() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let auth = bearer(&setup.token("bob", &["user"]));
    for (target, forwarded) in [
        ("/Admin", "/Admin"),
        ("/ADMIN/secret", "/ADMIN/secret"),
        ("/%41dmin/secret", "/Admin/secret"),
    ] {
        setup.upstream.clear();
        let (status, response) = raw_get(gw.addr, &setup.pki.ca_pem, target, &auth).await;
        assert_eq!(status, 200, "{target}: {response}");
        let received = setup.upstream.received();
        assert_eq!(received.len(), 1, "{target}");
        assert_eq!(received[0].path_and_query, forwarded, "{target}");
    }
    gw.stop().await;
}

/// What a response says about which route took it: the upstream (the echo says so in
/// its body) and the status.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Echo(u16),
    App(u16),
    Refused(u16),
}

async fn send(
    client: &reqwest::Client,
    method: &str,
    url: String,
    token: Option<&str>,
) -> (Outcome, Option<serde_json::Value>) {
    let mut request = client.request(method.parse().expect("method"), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    let outcome = match &json {
        _ if status >= 400 => Outcome::Refused(status),
        Some(v) if v["upstream"] == "builtin:echo" => Outcome::Echo(status),
        _ => Outcome::App(status),
    };
    (outcome, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_precedence() {
    let setup = Setup::new(Algorithm::ES256).await;
    let config = format!(
        r#"{head}
[[upstream]]
name = "echo"
url = "builtin:echo"

# The prefix comes first in the file: the exact path still wins.
[[route]]
path = "/x"
upstream = "app"
auth = "public"

[[route]]
path = "=/x"
upstream = "echo"
auth = "public"

# The shorter prefix first in the file: the longer still wins.
[[route]]
path = "/p"
upstream = "echo"
auth = "public"

[[route]]
path = "/p/q"
upstream = "app"
require = {{ roles = ["admin"] }}

# The longer prefix first in the file.
[[route]]
path = "/l/m"
upstream = "echo"
auth = "public"

[[route]]
path = "/l"
upstream = "app"

# Same path: the first whose methods match.
[[route]]
path = "/m"
methods = ["POST"]
upstream = "echo"
auth = "public"

[[route]]
path = "/m"
upstream = "app"

[[route]]
path = "/f"
methods = ["GET"]
upstream = "echo"
auth = "public"

[[route]]
path = "/f"
methods = ["GET", "POST"]
upstream = "app"

[[route]]
path = "/public"
upstream = "echo"
auth = "public"

[[route]]
path = "/"
upstream = "app"
"#,
        head = setup.head()
    );
    let gw = setup.start_with(&config).await;
    let client = setup.http1_client();
    let bob = setup.token("bob", &["user"]);
    let bob = Some(bob.as_str());
    use Outcome::{App, Echo, Refused};
    let cases: &[(&str, &str, Option<&str>, Outcome)] = &[
        // Exact beats prefix.
        ("GET", "/x", None, Echo(200)),
        ("GET", "/x/", None, App(200)),
        ("GET", "/x/y", None, App(200)),
        // Longer prefix beats shorter, whatever the file order.
        ("GET", "/p/q", None, Refused(401)),
        ("GET", "/p/q/r", bob, Refused(403)),
        ("GET", "/p/z", None, Echo(200)),
        ("GET", "/p/qr", None, Echo(200)),
        ("GET", "/l/m/n", None, Echo(200)),
        ("GET", "/l/n", None, Refused(401)),
        ("GET", "/l/mn", None, Refused(401)),
        // Same path: the first route whose methods match.
        ("GET", "/m", None, Refused(401)),
        ("DELETE", "/m", None, Refused(401)),
        ("POST", "/m", None, Echo(200)),
        ("POST", "/m/sub", None, Echo(200)),
        ("GET", "/f", None, Echo(200)),
        ("POST", "/f", None, Refused(401)),
        ("POST", "/f", bob, App(200)),
        // Prefixes match whole segments.
        ("GET", "/public", None, Echo(200)),
        ("GET", "/public/", None, Echo(200)),
        ("GET", "/public/x", None, Echo(200)),
        ("GET", "/publicity", None, Refused(401)),
        ("GET", "/publicity", bob, App(200)),
        ("GET", "/public-x/y", None, Refused(401)),
    ];
    let mut failures = Vec::new();
    for (method, path, token, expected) in cases {
        let (got, json) = send(&client, method, gw.url(path), *token).await;
        if got != *expected {
            failures.push(format!(
                "{method} {path}: expected {expected:?}, got {got:?}"
            ));
            continue;
        }
        if let (Echo(_), Some(json)) = (&got, &json) {
            assert_eq!(json["method"], *method, "{method} {path}");
            assert_eq!(json["path"], *path, "{method} {path}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // HEAD is taken by a GET-only route (and so is public here); the echo answers it.
    let response = client.head(gw.url("/f")).send().await.expect("head");
    assert_eq!(response.status(), 200);

    // Exactly the requests expected at the app upstream got there, with their paths.
    let at_app: Vec<String> = setup
        .upstream
        .received()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path_and_query))
        .collect();
    assert_eq!(
        at_app,
        ["GET /x/", "GET /x/y", "POST /f", "GET /publicity"],
        "requests at the app upstream"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_route_is_404() {
    let setup = Setup::new(Algorithm::ES256).await;
    let config = format!(
        r#"{head}
[[route]]
path = "/public"
upstream = "app"
auth = "public"

[[route]]
path = "=/exact"
upstream = "app"
auth = "public"

[[route]]
path = "/only-get"
methods = ["GET"]
upstream = "app"
auth = "public"
"#,
        head = setup.head()
    );
    let gw = setup.start_with(&config).await;
    let client = setup.http1_client();
    let token = setup.token("alice", &["admin"]);
    for (method, path, token) in [
        ("GET", "/", None),
        ("GET", "/other", None),
        ("GET", "/other", Some(token.as_str())),
        ("GET", "/publicity", None),
        ("GET", "/exact/", None),
        ("GET", "/exact/x", None),
        ("POST", "/only-get", None),
        ("DELETE", "/only-get/x", Some(token.as_str())),
    ] {
        let mut request = client.request(method.parse().expect("method"), gw.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("send");
        assert_eq!(response.status(), 404, "{method} {path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{method} {path}"
        );
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["error"], "not_found", "{method} {path}: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    }
    assert!(setup.upstream.received().is_empty());

    // The same config does route what it names.
    for (method, path) in [
        ("GET", "/public/x"),
        ("GET", "/exact"),
        ("GET", "/only-get"),
    ] {
        let response = client
            .request(method.parse().expect("method"), gw.url(path))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200, "{method} {path}");
    }
    assert_eq!(setup.upstream.received().len(), 3);
    gw.stop().await;
}
