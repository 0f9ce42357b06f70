//! Browser sessions on the wire: the login page and its form, the session cookies and
//! their attributes, the CSRF double submit and Origin checks, safe redirects, the login
//! page for navigations, renewal in passing with its grace, logout — all over real TLS,
//! with the cookies handled by hand so every header is asserted.

mod common;

use std::time::Duration;

use authgate::jwt::Algorithm;
use common::{Gateway, Setup};
use http::HeaderMap;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";

fn config(setup: &Setup) -> String {
    let head = setup.head().replace(
        "leeway = \"5s\"",
        "leeway = \"0s\"\naccess_ttl = \"1s\"\nrefresh_ttl = \"1h\"",
    );
    format!(
        "{head}\n[store]\nurl = \"sqlite://authgate.db\"\n\n\
         [accounts]\nregistration = true\nlogin_rate_per_ip = \"1000/m\"\nlogin_rate_per_user = \"1000/m\"\n\n\
         [browser]\ntitle = \"Example Corp\"\nallowed_redirect_hosts = [\"app.example.com\"]\n\n\
         [[route]]\npath = \"/public\"\nupstream = \"app\"\nauth = \"public\"\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n"
    )
}

/// A client that follows no redirect and keeps no cookie: every one is asserted by hand.
fn client(setup: &Setup) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(setup.pki.ca_pem.as_bytes()).expect("ca");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .redirect(Policy::none())
        .http1_only()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect()
    }

    /// The value a `Set-Cookie` of this reply gives `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().iter().find_map(|c| {
            let (pair, _) = c.split_once(';').unwrap_or((c, ""));
            let (key, value) = pair.split_once('=')?;
            (key == name).then(|| value.to_owned())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A form body, as a browser posts it.
fn with_form(request: reqwest::RequestBuilder, fields: &[(&str, &str)]) -> reqwest::RequestBuilder {
    request
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(fields).expect("form"))
}

async fn reply(request: reqwest::RequestBuilder) -> Reply {
    let resp = request.send().await.expect("send");
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        text: resp.text().await.expect("body"),
    }
}

/// A browser session's cookies.
#[derive(Clone)]
struct Session {
    access: String,
    refresh: String,
    csrf: String,
}

impl Session {
    fn cookie(&self) -> String {
        format!(
            "theme=dark; access_token_cookie={}; refresh_token_cookie={}; csrf_access_token={}",
            self.access, self.refresh, self.csrf
        )
    }
}

/// The login page's form: its login-CSRF value (also set as a cookie).
async fn login_form(client: &reqwest::Client, gw: &Gateway) -> (Reply, String) {
    let page = reply(client.get(gw.url("/auth/login?rd=%2Fapp"))).await;
    let csrf = page
        .cookie("authgate_login_csrf")
        .expect("login csrf cookie");
    (page, csrf)
}

/// Posts the login form as a browser of this site would.
async fn post_login(
    client: &reqwest::Client,
    gw: &Gateway,
    csrf_cookie: Option<&str>,
    form: &[(&str, &str)],
    origin: Option<&str>,
) -> Reply {
    let mut request = with_form(client.post(gw.url("/auth/login")), form);
    if let Some(csrf) = csrf_cookie {
        request = request.header(COOKIE, format!("authgate_login_csrf={csrf}"));
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    reply(request).await
}

async fn sign_in(client: &reqwest::Client, gw: &Gateway, rd: &str) -> (Reply, Session) {
    let (_, csrf) = login_form(client, gw).await;
    let origin = gw.url("");
    let r = post_login(
        client,
        gw,
        Some(&csrf),
        &[
            ("username", "alice"),
            ("password", PASSWORD),
            ("rd", rd),
            ("csrf_token", &csrf),
        ],
        Some(&origin),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let session = Session {
        access: r.cookie("access_token_cookie").expect("access"),
        refresh: r.cookie("refresh_token_cookie").expect("refresh"),
        csrf: r.cookie("csrf_access_token").expect("csrf"),
    };
    (r, session)
}

async fn start() -> (Setup, Gateway, reqwest::Client) {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start_with(&config(&setup)).await;
    let client = client(&setup);
    let r = reply(
        client
            .post(gw.url("/auth/register"))
            .json(&serde_json::json!({"username": "alice", "password": PASSWORD})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    (setup, gw, client)
}

#[tokio::test]
async fn the_login_page_logs_in_with_cookies_and_refuses_login_csrf() {
    let (setup, gw, client) = start().await;

    let (page, csrf) = login_form(&client, &gw).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("Example Corp"), "{}", page.text);
    assert!(
        page.text.contains("<label for=\"username\">"),
        "{}",
        page.text
    );
    assert!(page.text.contains("value=\"/app\""), "{}", page.text);
    assert!(
        page.text.contains(&format!("value=\"{csrf}\"")),
        "{}",
        page.text
    );
    assert!(!page.text.contains("<script"));
    let csp = page.headers["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert_eq!(page.headers["cache-control"], "no-store");
    assert!(
        page.headers["strict-transport-security"]
            .to_str()
            .expect("hsts")
            .starts_with("max-age=")
    );

    // Login CSRF: the form's value must match the cookie the page set, from this site.
    let form = |token: &str| {
        [
            ("username", "alice".to_owned()),
            ("password", PASSWORD.to_owned()),
            ("rd", "/app".to_owned()),
            ("csrf_token", token.to_owned()),
        ]
    };
    let pairs = |f: &[(&'static str, String); 4]| -> Vec<(&'static str, String)> { f.to_vec() };
    for (cookie, token, origin) in [
        (None, csrf.as_str(), None),
        (Some(csrf.as_str()), "another", None),
        (
            Some(csrf.as_str()),
            csrf.as_str(),
            Some("https://evil.example"),
        ),
    ] {
        let fields = pairs(&form(token));
        let borrowed: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = post_login(&client, &gw, cookie, &borrowed, origin).await;
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (403, Some("csrf_failed")),
            "{}",
            r.text
        );
        assert!(r.cookie("access_token_cookie").is_none());
    }

    // A wrong password shows the page again with one generic message.
    let r = post_login(
        &client,
        &gw,
        Some(&csrf),
        &[
            ("username", "alice"),
            ("password", "wrong password!"),
            ("rd", "/x"),
            ("csrf_token", &csrf),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.text.contains("Wrong username or password."), "{}", r.text);
    assert!(r.cookie("access_token_cookie").is_none());

    // The right one: 303 to rd, and the four cookies with their attributes.
    let (r, session) = sign_in(&client, &gw, "/app/x?q=1").await;
    assert_eq!(r.location(), "/app/x?q=1");
    for cookie in r.set_cookies() {
        let name = cookie.split('=').next().expect("name");
        if name == "authgate_login_csrf" {
            assert!(cookie.contains("Max-Age=0"), "{cookie}");
            continue;
        }
        assert!(
            cookie.contains("; Path=/; SameSite=Lax; Secure"),
            "{cookie}"
        );
        let http_only = cookie.ends_with("; HttpOnly");
        assert_eq!(http_only, name.ends_with("_cookie"), "{cookie}");
    }

    // The cookie passes; the upstream sees the identity, not the gateway's cookies.
    setup.upstream.clear();
    let r = reply(
        client
            .get(gw.url("/app/x?q=1"))
            .header(COOKIE, session.cookie()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got = setup.upstream.received();
    assert_eq!(got[0].headers["x-auth-user"], "alice");
    assert_eq!(got[0].headers["cookie"], "theme=dark");
    gw.stop().await;
}

#[tokio::test]
async fn cookie_requests_that_change_state_need_the_csrf_header_and_this_origin() {
    let (setup, gw, client) = start().await;
    let (_, session) = sign_in(&client, &gw, "/").await;
    let origin = gw.url("");
    setup.upstream.clear();
    for (csrf, origin, want) in [
        (None, None, 403),
        (Some("wrong"), None, 403),
        (
            Some(session.csrf.as_str()),
            Some("https://evil.example"),
            403,
        ),
        (Some(session.csrf.as_str()), Some(origin.as_str()), 200),
        (Some(session.csrf.as_str()), None, 200),
    ] {
        let mut request = client
            .post(gw.url("/app/save"))
            .header(COOKIE, session.cookie());
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let r = reply(request).await;
        assert_eq!(r.status, want, "{csrf:?} {origin:?}: {}", r.text);
        if want == 403 {
            assert_eq!(r.json()["error"], "csrf_failed");
        }
    }
    assert_eq!(
        setup.upstream.received().len(),
        2,
        "only the right ones went through"
    );

    // A Bearer request needs no CSRF token; a Bearer beside a different cookie is 400.
    let bearer = setup.token("bob", &[]);
    let r = reply(client.post(gw.url("/app/save")).bearer_auth(&bearer)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = reply(
        client
            .get(gw.url("/app"))
            .bearer_auth(&bearer)
            .header(COOKIE, session.cookie()),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid_request"))
    );

    // A cookie-authenticated WebSocket upgrade from another site is refused.
    let r = reply(
        client
            .get(gw.url("/app/ws"))
            .header(COOKIE, session.cookie())
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("origin", "https://evil.example"),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("csrf_failed"))
    );
    gw.stop().await;
}

#[tokio::test]
async fn navigations_go_to_the_login_page_and_back_only_to_safe_places() {
    let (_setup, gw, client) = start().await;
    let r = reply(
        client
            .get(gw.url("/app/report?year=2026&q=a b"))
            .header("accept", "text/html,application/xhtml+xml"),
    )
    .await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.location(),
        "/auth/login?rd=%2Fapp%2Freport%3Fyear%3D2026%26q%3Da%2520b"
    );
    let r = reply(
        client
            .get(gw.url("/app/report"))
            .header("accept", "application/json"),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("missing_token"))
    );

    for (rd, want) in [
        ("/app/x?y=1", "/app/x?y=1"),
        (
            "https://app.example.com/home",
            "https://app.example.com/home",
        ),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https:evil.example", "/"),
        ("/%2F%2Fevil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("http://app.example.com/home", "/"),
        ("https://app.example.com.evil.example/", "/"),
    ] {
        let (r, _) = sign_in(&client, &gw, rd).await;
        assert_eq!(r.location(), want, "{rd}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_expired_access_cookie_is_renewed_once_for_a_burst_and_a_late_replay_kills_the_session()
{
    let (setup, gw, client) = start().await;
    let (_, session) = sign_in(&client, &gw, "/").await;
    // access_ttl is 1 s, leeway 0.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let burst: Vec<_> = (0..20)
        .map(|i| {
            let request = client
                .get(gw.url(&format!("/app/asset-{i}")))
                .header(COOKIE, session.cookie());
            tokio::spawn(reply(request))
        })
        .collect();
    let mut renewed = None;
    for task in burst {
        let r = task.await.expect("task");
        assert_eq!(r.status, 200, "{}", r.text);
        let access = r
            .cookie("access_token_cookie")
            .expect("renewed access cookie");
        let refresh = r
            .cookie("refresh_token_cookie")
            .expect("renewed refresh cookie");
        assert_ne!(refresh, session.refresh);
        match &renewed {
            None => {
                renewed = Some((
                    access,
                    refresh,
                    r.cookie("csrf_access_token").expect("csrf"),
                ))
            }
            Some((a, f, _)) => assert_eq!((a, f), (&access, &refresh), "one renewal for the burst"),
        }
    }
    let (access, refresh, csrf) = renewed.expect("renewed");
    assert_eq!(setup.upstream.received().len(), 20);
    let next = Session {
        access,
        refresh,
        csrf,
    };
    let r = reply(client.get(gw.url("/app")).header(COOKIE, next.cookie())).await;
    assert_eq!(r.status, 200, "the session survives");

    // After the grace, the spent refresh token is a replay: its family is revoked.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let r = reply(
        client
            .get(gw.url("/app"))
            .header(COOKIE, session.cookie())
            .header("accept", "text/html"),
    )
    .await;
    assert_eq!(r.status, 302, "{}", r.text);
    let expired = Session {
        refresh: next.refresh.clone(),
        ..session.clone()
    };
    let r = reply(client.get(gw.url("/app")).header(COOKIE, expired.cookie())).await;
    assert_eq!(
        r.status, 401,
        "the newest refresh token died with its family: {}",
        r.text
    );
    gw.stop().await;
}

#[tokio::test]
async fn logout_revokes_the_session_and_clears_the_cookies() {
    let (_setup, gw, client) = start().await;
    let (_, session) = sign_in(&client, &gw, "/").await;
    let page = reply(
        client
            .get(gw.url("/auth/logout"))
            .header(COOKIE, session.cookie()),
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(
        page.text.contains(&format!("value=\"{}\"", session.csrf)),
        "{}",
        page.text
    );

    let r = reply(with_form(
        client
            .post(gw.url("/auth/logout"))
            .header(COOKIE, session.cookie()),
        &[("csrf_token", "wrong")],
    ))
    .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("csrf_failed"))
    );

    let r = reply(with_form(
        client
            .post(gw.url("/auth/logout"))
            .header(COOKIE, session.cookie()),
        &[("csrf_token", session.csrf.as_str())],
    ))
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.location(), "/auth/login");
    for name in [
        "access_token_cookie",
        "refresh_token_cookie",
        "csrf_access_token",
        "csrf_refresh_token",
    ] {
        assert_eq!(r.cookie(name).as_deref(), Some(""), "{name}");
    }
    let r = reply(client.get(gw.url("/app")).header(COOKIE, session.cookie())).await;
    assert_eq!(r.status, 401, "{}", r.text);
    gw.stop().await;
}
