//! The browser harness proven against the real gateway: a headless Chromium opens a
//! public route over TLS, keeps and reports cookies, takes screenshots, and loads a page
//! of another site that posts a form to the gateway. One `#[tokio::test]` holds the one
//! browser of this binary and runs the scenarios in sequence (tests/common/browser.rs).
mod common;

use std::time::Duration;

use authgate::jwt::Algorithm;
use common::browser::{Browser, BrowserCookie, serve_html};
use common::{Gateway, Setup};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headless_chromium_drives_the_gateway() {
    let setup = Setup::new(Algorithm::ES256).await;
    let config = format!(
        r#"{}
[[route]]
path = "/public"
upstream = "app"
auth = "public"
"#,
        setup.head()
    );
    let gw = setup.start_with(&config).await;
    let mut browser = Browser::start().await;

    browser
        .scenario("a public route answers through TLS", async |b| {
            public_page(b, &setup, &gw).await;
        })
        .await;
    browser
        .scenario(
            "cookies are kept and reported with their attributes",
            async |b| {
                cookies(b, &gw).await;
            },
        )
        .await;
    browser
        .scenario("a scenario starts with no cookies", async |b| {
            assert_eq!(b.all_cookies().await, vec![], "reset cleared every cookie");
        })
        .await;
    browser
        .scenario("a screenshot is a PNG", async |b| {
            screenshot(b, &setup, &gw).await;
        })
        .await;
    browser
        .scenario(
            "a page of another site posts a form to the gateway",
            async |b| {
                cross_site_form(b, &setup, &gw).await;
            },
        )
        .await;

    browser
        .scenario("a restart is a new profile", async |b| {
            restart(b, &gw).await;
        })
        .await;

    browser.close().await;
    gw.stop().await;
}

async fn public_page(b: &mut Browser, setup: &Setup, gw: &Gateway) {
    setup.upstream.clear();
    b.goto(&gw.url("/public/hello?x=1")).await;
    let url = b.current_url().await;
    assert_eq!(url.as_str(), gw.url("/public/hello?x=1"), "no redirect");
    let text = b.text_of("body").await;
    let body: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON page ({e}): {text}"));
    assert_eq!(body["path"], "/public/hello?x=1");
    assert_eq!(
        body["user"],
        serde_json::Value::Null,
        "a public route has no user"
    );
    assert!(
        setup
            .upstream
            .paths()
            .contains(&"/public/hello?x=1".to_owned()),
        "the upstream got the request: {:?}",
        setup.upstream.paths()
    );
    let secure = b.execute("return window.isSecureContext;", vec![]).await;
    assert_eq!(
        secure,
        json!(true),
        "an accepted test certificate still makes a secure context"
    );
}

async fn cookies(b: &mut Browser, gw: &Gateway) {
    b.goto(&gw.url("/public/jar")).await;

    // Set by the page's script: Secure, SameSite and the __Host- prefix need a secure
    // context, which the accepted test certificate gives.
    b.execute(
        "document.cookie = 'js_probe=one; Path=/; Secure; SameSite=Strict';
         document.cookie = '__Host-probe=two; Path=/; Secure; SameSite=Lax';",
        vec![],
    )
    .await;
    // Set over WebDriver: HttpOnly, which no script can set or read.
    b.add_cookie(&BrowserCookie {
        name: "wd_probe".into(),
        value: "three".into(),
        path: Some("/public".into()),
        http_only: true,
        secure: true,
        same_site: Some("Strict".into()),
        ..BrowserCookie::default()
    })
    .await;

    let js = b.cookie("js_probe").await.expect("js_probe kept");
    assert_eq!(js.value, "one");
    assert_eq!(js.path.as_deref(), Some("/"));
    assert_eq!(js.domain.as_deref(), Some("localhost"));
    assert!(js.secure && !js.http_only);
    assert_eq!(js.same_site.as_deref(), Some("Strict"));
    assert_eq!(js.expiry, None, "a session cookie");

    let host = b.cookie("__Host-probe").await.expect("__Host-probe kept");
    assert_eq!(host.value, "two");
    assert_eq!(host.same_site.as_deref(), Some("Lax"));

    let wd = b.cookie("wd_probe").await.expect("wd_probe kept");
    assert!(wd.http_only && wd.secure);
    assert_eq!(wd.path.as_deref(), Some("/public"));
    let visible = b.execute("return document.cookie;", vec![]).await;
    let visible = visible.as_str().expect("a string");
    assert!(visible.contains("js_probe=one"), "{visible}");
    assert!(
        !visible.contains("wd_probe"),
        "HttpOnly is hidden from scripts"
    );

    // The DevTools view agrees.
    let all = b.all_cookies().await;
    let devtools = all.iter().find(|c| c.name == "wd_probe").expect("listed");
    assert!(devtools.http_only);
    assert_eq!(devtools.same_site.as_deref(), Some("Strict"));

    b.delete_cookie("js_probe").await;
    assert_eq!(b.cookie("js_probe").await, None, "deleted");
    assert!(b.cookie("wd_probe").await.is_some(), "the others stay");
}

async fn screenshot(b: &mut Browser, setup: &Setup, gw: &Gateway) {
    b.goto(&gw.url("/public/picture")).await;
    let png = b.screenshot_png().await;
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "PNG magic: {:?}",
        &png[..png.len().min(8)]
    );
    assert!(png.len() > 1000, "a real picture: {} bytes", png.len());
    // The IHDR chunk holds the size: the viewport's, as wide as the window and less high
    // (the window size counts the browser's own bars, headless too).
    let width = u32::from_be_bytes(png[16..20].try_into().expect("width"));
    let height = u32::from_be_bytes(png[20..24].try_into().expect("height"));
    let (window_width, window_height) = common::browser::WINDOW;
    assert_eq!(width, window_width);
    assert!(height > 0 && height <= window_height, "height {height}");

    let path = setup.dir.path().join("page.png");
    b.save_screenshot(&path).await;
    let saved = std::fs::read(&path).expect("saved");
    assert!(saved.starts_with(b"\x89PNG"));
}

async fn cross_site_form(b: &mut Browser, setup: &Setup, gw: &Gateway) {
    setup.upstream.clear();
    let target = gw.url("/public/landed");
    let html = format!(
        r#"<!doctype html>
<html><head><title>Elsewhere</title></head>
<body>
<form id="f" method="post" action="{target}">
  <input name="note" value="">
  <button type="submit">Send</button>
</form>
</body></html>"#
    );
    let (addr, server) = serve_html(html).await;
    let page = format!("http://127.0.0.1:{}/", addr.port());
    b.goto(&page).await;
    assert_eq!(b.title().await, "Elsewhere");

    b.fill("#f input[name=note]", "hi there").await;
    b.click("#f button").await;
    let landed = b
        .wait_for_url(|u| u.path() == "/public/landed", Duration::from_secs(10))
        .await;
    assert_eq!(landed.host_str(), Some("localhost"));
    b.wait_for("body", Duration::from_secs(5)).await;
    let text = b.text_of("body").await;
    assert!(text.contains(r#""path":"/public/landed""#), "{text}");

    let got = setup.upstream.received();
    let post = got
        .iter()
        .find(|r| r.path_and_query == "/public/landed")
        .expect("the form's post reached the upstream");
    assert_eq!(post.method, "POST");
    assert_eq!(post.body_len, "note=hi+there".len());
    // A cross-site post: the browser says so.
    assert_eq!(
        post.headers
            .get("origin")
            .map(|v| v.to_str().expect("ascii")),
        Some(page.trim_end_matches('/'))
    );

    // The same page, submitted by script as an attacker's page would on load.
    setup.upstream.clear();
    b.goto(&page).await;
    b.submit("#f").await;
    b.wait_for_url(|u| u.path() == "/public/landed", Duration::from_secs(10))
        .await;
    assert_eq!(setup.upstream.paths(), vec!["/public/landed".to_owned()]);

    server.abort();
}

async fn restart(b: &mut Browser, gw: &Gateway) {
    b.goto(&gw.url("/public/kept")).await;
    b.execute(
        "localStorage.setItem('probe', 'x'); document.cookie = 'probe=x; Path=/';",
        vec![],
    )
    .await;
    assert!(b.cookie("probe").await.is_some());
    b.restart().await;
    b.goto(&gw.url("/public/kept")).await;
    let stored = b
        .execute("return localStorage.getItem('probe');", vec![])
        .await;
    assert_eq!(stored, serde_json::Value::Null, "storage is gone");
    assert_eq!(b.all_cookies().await, vec![], "cookies are gone");
}
