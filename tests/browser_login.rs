//! A person in a real browser (headless Chromium over WebDriver): a protected page leads
//! to the login page and back to the page with its query, the upstream sees who it is, a
//! reload after the access cookie expired needs no new login, logout leads back to the
//! login page, and a page of another site that posts a form to a protected route gets
//! nothing through. One browser for the binary, scenarios in sequence.
//!
//! `AUTHGATE_UPDATE_SCREENSHOT=1` also writes the login page's picture to
//! `docs/login-page.png`, the one the README shows.

mod common;

use std::time::Duration;

use authgate::jwt::Algorithm;
use common::browser::{Browser, serve_html};
use common::{Gateway, Setup};

const PASSWORD: &str = "correct horse battery";
const WAIT: Duration = Duration::from_secs(10);

fn config(setup: &Setup) -> String {
    let head = setup.head().replace(
        "leeway = \"5s\"",
        "leeway = \"0s\"\naccess_ttl = \"2s\"\nrefresh_ttl = \"1h\"",
    );
    format!(
        "{head}\n[store]\nurl = \"sqlite://authgate.db\"\n\n\
         [accounts]\nregistration = true\n\n\
         [browser]\ntitle = \"Example Corp\"\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_logs_in_stays_in_and_logs_out_in_a_real_browser() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start_with(&config(&setup)).await;
    let registered = setup
        .client()
        .post(gw.url("/auth/register"))
        .json(&serde_json::json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), 201);
    let mut browser = Browser::start().await;

    browser
        .scenario(
            "login, the original page, renewal on reload, logout",
            async |b| session(b, &setup, &gw).await,
        )
        .await;
    browser
        .scenario(
            "a cross-site page that posts a form gets nothing through",
            async |b| cross_site(b, &setup, &gw).await,
        )
        .await;

    browser.close().await;
    gw.stop().await;
}

/// Logs in through the login page the protected `page` leads to; back on `page`.
async fn log_in(b: &mut Browser, gw: &Gateway, page: &str) {
    b.goto(&gw.url(page)).await;
    let at = b
        .wait_for_url(|url| url.path() == "/auth/login", WAIT)
        .await;
    assert_eq!(
        at.query_pairs()
            .find(|(k, _)| k == "rd")
            .map(|(_, v)| v.into_owned()),
        Some(page.to_owned())
    );
    b.fill("#username", "alice").await;
    b.fill("#password", PASSWORD).await;
    b.click("button[type=submit]").await;
    let back = b
        .wait_for_url(|url| url.path() != "/auth/login", WAIT)
        .await;
    assert_eq!(back.as_str(), gw.url(page), "back on the original page");
}

/// The JSON the recording upstream answered, as the browser shows it.
async fn upstream_answer(b: &Browser) -> serde_json::Value {
    let text = b.text_of("body").await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("upstream JSON ({e}): {text}"))
}

async fn session(b: &mut Browser, setup: &Setup, gw: &Gateway) {
    let page = "/app/report?year=2026&q=a%20b";
    b.goto(&gw.url("/auth/login")).await;
    assert_eq!(b.title().await, "Sign in · Example Corp");
    assert!(b.exists("label[for=username]").await && b.exists("label[for=password]").await);
    let png = b.screenshot_png().await;
    assert!(png.starts_with(b"\x89PNG"));
    if std::env::var_os("AUTHGATE_UPDATE_SCREENSHOT").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).expect("docs");
        std::fs::write(docs.join("login-page.png"), &png).expect("write the screenshot");
    }

    setup.upstream.clear();
    log_in(b, gw, page).await;
    let answer = upstream_answer(b).await;
    assert_eq!(answer["user"], "alice", "{answer}");
    assert_eq!(answer["path"], page);
    let got = setup.upstream.received();
    let last = got.last().expect("forwarded");
    assert_eq!(last.headers["x-auth-user"], "alice");
    assert!(
        last.headers.get("cookie").is_none(),
        "the session cookies stay at the gateway"
    );

    let access = b
        .cookie("access_token_cookie")
        .await
        .expect("access cookie");
    assert!(access.http_only && access.secure, "{access:?}");
    assert_eq!(access.same_site.as_deref(), Some("Lax"));
    assert_eq!(access.path.as_deref(), Some("/"));
    let csrf = b.cookie("csrf_access_token").await.expect("csrf cookie");
    assert!(!csrf.http_only, "scripts read the csrf cookie");

    // The access token lives 2 s: a reload after that renews it in passing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    b.goto(&gw.url(page)).await;
    assert_eq!(b.current_url().await.as_str(), gw.url(page), "no new login");
    assert_eq!(upstream_answer(b).await["user"], "alice");
    let renewed = b
        .cookie("access_token_cookie")
        .await
        .expect("access cookie");
    assert_ne!(renewed.value, access.value, "a new access token");

    // Logout: the button, then the login page; the protected page leads there again.
    b.goto(&gw.url("/auth/logout")).await;
    b.click("button[type=submit]").await;
    b.wait_for_url(|url| url.path() == "/auth/login", WAIT)
        .await;
    assert!(b.cookie("access_token_cookie").await.is_none(), "cleared");
    b.goto(&gw.url(page)).await;
    b.wait_for_url(|url| url.path() == "/auth/login", WAIT)
        .await;
}

async fn cross_site(b: &mut Browser, setup: &Setup, gw: &Gateway) {
    log_in(b, gw, "/app/home").await;
    setup.upstream.clear();
    let target = gw.url("/app/transfer");
    let html = format!(
        r#"<!doctype html>
<html><head><title>Win a prize</title></head>
<body onload="document.forms[0].submit()">
<form method="post" action="{target}"><input name="amount" value="1000"></form>
</body></html>"#
    );
    let (addr, _server) = serve_html(html).await;
    b.goto(&format!("http://127.0.0.1:{}/", addr.port())).await;
    b.wait_for_url(|url| url.as_str().starts_with(&target), WAIT)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        setup.upstream.received().iter().all(|r| r.method != "POST"),
        "the cross-site post reached the upstream: {:?}",
        setup.upstream.paths()
    );
    let refused = b.text_of("body").await;
    assert!(
        refused.contains("missing_token") || refused.contains("csrf_failed"),
        "{refused}"
    );
}
