//! "Log in with ..." an OpenID provider (`[[browser.provider]]`), against a real one: the
//! npm `oidc-provider` run by tests/common/oidc.rs, and a real headless Chromium. The
//! login page's button, the provider's own login, and back on the original URL with
//! authgate's session; `authgate user list` shows the user as the provider's, and
//! `authgate user revoke` ends the session within a second. Then the callback's
//! refusals: a callback in a browser that did not start the login, a tampered state, a
//! replayed callback, a forged flow cookie. One provider, one gateway, one browser.

mod common;

use std::time::{Duration, Instant};

use authgate::jwt::Algorithm;
use common::browser::Browser;
use common::oidc::OidcProvider;
use common::process::run_cli;
use common::{Gateway, Setup};
use url::Url;

const SECRET: &str = "oidc-login-client-secret-0123456789";
const WAIT: Duration = Duration::from_secs(15);
/// The product promises one second; polls allow a little more before failing.
const REVOCATION_LIMIT: Duration = Duration::from_millis(1500);

fn config(setup: &Setup, port: u16, issuer: &str) -> String {
    let head = setup.head().replace(
        "listen = \"127.0.0.1:0\"\ntls",
        &format!("listen = \"127.0.0.1:{port}\"\ntls"),
    );
    format!(
        "{head}\n[store]\nurl = \"sqlite://authgate.db\"\n\n\
         [accounts]\nregistration = false\n\n\
         [browser]\ntitle = \"Example Corp\"\n\n\
         [[browser.provider]]\nissuer = \"corp\"\nclient_id = \"authgate\"\nclient_secret = {{ file = \"oidc-secret\" }}\n\n\
         [[issuer]]\nname = \"corp\"\nissuer = \"{issuer}\"\ndiscovery = true\naudiences = [\"authgate\"]\n\
         algorithms = [\"RS256\", \"ES256\"]\nusername_claim = \"preferred_username\"\nroles_claim = \"roles\"\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n"
    )
}

/// An HTTPS client that trusts the test CA and follows no redirect: the tests read each
/// `Location` and `Set-Cookie` themselves.
fn client(setup: &Setup) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(setup.pki.ca_pem.as_bytes()).expect("ca");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// The value of cookie `name` a response sets.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (pair, _) = v.split_once(';').unwrap_or((v, ""));
            let (key, value) = pair.split_once('=')?;
            (key == name).then(|| value.to_owned())
        })
}

fn query(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_log_in_with_their_identity_provider_in_a_real_browser() {
    let setup = Setup::new(Algorithm::ES256).await;
    let port = common::free_port();
    let redirect_uri = format!("https://localhost:{port}/auth/oidc/callback");
    let provider = OidcProvider::start(&redirect_uri, SECRET);
    std::fs::write(setup.dir.path().join("oidc-secret"), SECRET).expect("secret file");
    let gw = setup
        .start_with(&config(&setup, port, &provider.issuer))
        .await;
    let ready = Instant::now();
    // The provider's endpoints come with its discovery document, fetched at start.
    let http = client(&setup);
    loop {
        let start = http
            .get(gw.url("/auth/oidc/start?provider=corp"))
            .send()
            .await
            .expect("start");
        if start.status() == 302 {
            break;
        }
        assert!(ready.elapsed() < WAIT, "no discovery: {}", start.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut browser = Browser::start().await;
    browser
        .scenario(
            "the provider's button, its login, back with a session",
            async |b| log_in_through_the_provider(b, &setup, &gw).await,
        )
        .await;
    browser
        .scenario("the callback's refusals", async |b| {
            refusals(b, &setup, &gw, &provider).await
        })
        .await;
    browser.close().await;
    gw.stop().await;
    drop(provider);
}

async fn log_in_through_the_provider(b: &mut Browser, setup: &Setup, gw: &Gateway) {
    let page = "/app/report?year=2026&q=a%20b";
    setup.upstream.clear();
    b.goto(&gw.url(page)).await;
    b.wait_for_url(|url| url.path() == "/auth/login", WAIT)
        .await;
    assert_eq!(b.text_of("a.provider").await, "Log in with corp");
    b.click("a.provider").await;
    // The provider's own login page.
    b.wait_for("#login-submit", WAIT).await;
    b.fill("#username", "alice").await;
    b.fill("#password", "alice-password").await;
    b.click("#login-submit").await;
    let back = b
        .wait_for_url(
            |url| {
                url.port() == gw.url("/").parse::<Url>().ok().and_then(|u| u.port())
                    && url.path() == "/app/report"
            },
            WAIT,
        )
        .await;
    assert_eq!(back.as_str(), gw.url(page), "back on the original page");
    let text = b.text_of("body").await;
    let answer: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("upstream JSON ({e}): {text}"));
    assert_eq!(answer["user"], "alice", "{answer}");
    let got = setup.upstream.received();
    let last = got.last().expect("forwarded");
    assert_eq!(last.headers["x-auth-user"], "alice");
    assert_eq!(
        last.headers["x-auth-roles"], "admin,dev",
        "roles from the claim"
    );
    assert!(b.cookie("refresh_token_cookie").await.is_some());
    assert!(
        b.cookie("authgate_oidc_flow").await.is_none(),
        "the flow's cookie is spent"
    );

    // The store knows alice as the provider's user.
    let config = gw.dir.join("gateway.toml");
    let listed = run_cli(&config, &["user", "list"], None);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.contains("alice\troles=admin,dev\tenabled\tlogin=provider:corp"),
        "{listed}"
    );
    // No password logs alice in: she has none here.
    let password_login = client(setup)
        .post(gw.url("/auth/login"))
        .json(&serde_json::json!({"username": "alice", "password": ""}))
        .send()
        .await
        .expect("login");
    assert_eq!(password_login.status(), 401);

    // `user revoke` ends the session: the access cookie is refused within a second.
    let access = b
        .cookie("access_token_cookie")
        .await
        .expect("access cookie");
    let http = client(setup);
    let with_cookie = || {
        http.get(gw.url("/app/report"))
            .header("cookie", format!("access_token_cookie={}", access.value))
            .send()
    };
    assert_eq!(with_cookie().await.expect("get").status(), 200);
    let revoked = run_cli(&config, &["user", "revoke", "alice"], None);
    assert!(revoked.status.success(), "{revoked:?}");
    let at = Instant::now();
    loop {
        let status = with_cookie().await.expect("get").status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            at.elapsed() < REVOCATION_LIMIT,
            "the session outlived `user revoke` by {:?}",
            at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("oidc: `user revoke` enforced in {:?}", at.elapsed());
    // And the browser is sent to log in again, not let through on its refresh cookie.
    b.goto(&gw.url(page)).await;
    b.wait_for_url(|url| url.path() == "/auth/login", WAIT)
        .await;
}

async fn refusals(b: &mut Browser, setup: &Setup, gw: &Gateway, provider: &OidcProvider) {
    let http = client(setup);
    // A login started by one client (here, not the browser)...
    let start = http
        .get(gw.url("/auth/oidc/start?provider=corp&rd=/app/after"))
        .send()
        .await
        .expect("start");
    assert_eq!(start.status(), 302);
    let flow = set_cookie(&start, "authgate_oidc_flow").expect("the flow's cookie");
    let location: Url = start.headers()["location"]
        .to_str()
        .expect("location")
        .parse()
        .expect("URL");
    assert!(
        location.as_str().starts_with(&provider.issuer),
        "{location}"
    );
    assert_eq!(
        query(&location, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let state = query(&location, "state").expect("state");
    assert!(query(&location, "nonce").is_some_and(|n| n.len() >= 43));

    // ...and finished in another (the browser, logged in at the provider as alice): the
    // browser lacks the flow's cookie, so its callback logs no one in.
    b.goto(location.as_str()).await;
    if b.exists("#login-submit").await {
        b.fill("#username", "alice").await;
        b.fill("#password", "alice-password").await;
        b.click("#login-submit").await;
    }
    let callback = b
        .wait_for_url(|url| url.path() == "/auth/oidc/callback", WAIT)
        .await;
    assert!(
        b.text_of("p.error").await.contains("invalid_state"),
        "{}",
        b.source().await
    );
    assert!(b.cookie("access_token_cookie").await.is_none());
    let code = query(&callback, "code").expect("code");
    assert_eq!(query(&callback, "state").as_deref(), Some(state.as_str()));

    let callback_with = |state: &str, cookie: &str| {
        let mut url = Url::parse(&gw.url("/auth/oidc/callback")).expect("url");
        url.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", state)
            .append_pair("iss", &provider.issuer);
        http.get(url.as_str())
            .header("cookie", format!("authgate_oidc_flow={cookie}"))
            .send()
    };
    // A tampered state, with the right cookie: refused, no session.
    let tampered = callback_with(&format!("{state}x"), &flow)
        .await
        .expect("callback");
    assert_eq!(tampered.status(), 400);
    assert!(set_cookie(&tampered, "access_token_cookie").is_none());
    // A forged flow cookie (its signature changed): refused.
    let forged = format!("{}AA", flow.trim_end_matches('A'));
    let forged = callback_with(&state, &forged).await.expect("callback");
    assert_eq!(forged.status(), 400);
    // The right state with the flow's cookie: logged in, sent where the login began.
    let good = callback_with(&state, &flow).await.expect("callback");
    assert_eq!(good.status(), 303);
    assert_eq!(good.headers()["location"], "/app/after");
    let access = set_cookie(&good, "access_token_cookie").expect("a session");
    let me = http
        .get(gw.url("/app/me"))
        .header("cookie", format!("access_token_cookie={access}"))
        .send()
        .await
        .expect("get");
    assert_eq!(me.status(), 200);
    // The same callback again: a replay, refused.
    let replayed = callback_with(&state, &flow).await.expect("callback");
    assert_eq!(replayed.status(), 400);
    assert!(set_cookie(&replayed, "access_token_cookie").is_none());
    // An unknown provider is a client's mistake.
    let unknown = http
        .get(gw.url("/auth/oidc/start?provider=nobody"))
        .send()
        .await
        .expect("start");
    assert_eq!(unknown.status(), 400);
}
