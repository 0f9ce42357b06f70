//! A real headless Chromium driven over WebDriver, for the tests that must hold in a
//! browser (cookies, redirects, forms, cross-site pages).
//!
//! [`Browser::start`] runs Debian's `chromedriver` on a free port of 127.0.0.1, in a
//! process group of its own, and opens a [`fantoccini`] session on it that starts
//! `/usr/bin/chromium` headless with a throwaway profile. Dropping the `Browser` (or
//! [`Browser::close`]) kills that process group by its id: chromedriver and every
//! Chromium process it started, never anything found by name.
//!
//! **One browser per test binary, one `#[tokio::test]` that holds it.** A fantoccini
//! `Client` is a handle to a task spawned on the runtime that created it, and every
//! `#[tokio::test]` builds and drops a runtime of its own: a `static` browser shared by
//! several tests would die with the first test's runtime. So a browser test file has one
//! `#[tokio::test]` that starts one `Browser` and runs its scenarios in sequence, each a
//! plain async fn (or async closure) taking `&mut Browser`, through
//! [`Browser::scenario`]: it clears every cookie and opens `about:blank` first (so
//! scenarios do not leak into each other), bounds the scenario in time, names it in the
//! output, and on a failure saves a screenshot under `target/tmp/browser-failures/`
//! before passing the panic on. [`Browser::restart`] gives a whole new profile when a
//! scenario needs more than cleared cookies. Starting Chromium costs about a second; one
//! per binary keeps a file of scenarios fast.
//!
//! Chromium trusts nothing of the test's CA: the session has `acceptInsecureCerts`, so
//! `https://localhost:PORT` from the gateway's test certificate loads without a warning
//! page, and the page still counts as a secure context (`Secure` and `__Host-` cookies
//! are stored, `window.isSecureContext` is true). The browser resolves no name but
//! `localhost` and `127.0.0.1` (`--host-resolver-rules`): everything it reaches is on
//! this machine.
//!
//! [`serve_html`] is a second origin for cross-site pages: plain HTTP on 127.0.0.1, which
//! is another site than `https://localhost`.
//!
//! The helpers panic with what they were doing, as the rest of `tests/common` does.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fantoccini::wd::{Capabilities, TimeoutConfiguration, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt as _;
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use url::Url;

/// The Chromium that chromedriver starts (Debian's launcher script).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The window size of every session. A screenshot (the viewport) is as wide and less
/// high: the window counts the browser's bars, headless too.
pub const WINDOW: (u32, u32) = (1000, 800);

/// How long chromedriver gets to accept connections and Chromium to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The WebDriver timeouts: a page load and a script are bounded, elements are not waited
/// for implicitly (the `wait_for*` helpers wait, with their own bound).
const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(10);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one [`Browser::scenario`] may take.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the `wait_for*` helpers look again.
const POLL: Duration = Duration::from_millis(50);

/// A cookie as the browser reports it (WebDriver's cookie object, or the DevTools one for
/// [`Browser::all_cookies`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrowserCookie {
    pub name: String,
    pub value: String,
    pub domain: Option<String>,
    pub path: Option<String>,
    pub secure: bool,
    pub http_only: bool,
    /// `Strict`, `Lax` or `None` as the browser spells it; absent when it reports none.
    pub same_site: Option<String>,
    /// Seconds since the epoch; `None` for a session cookie.
    pub expiry: Option<i64>,
}

impl BrowserCookie {
    /// A cookie from WebDriver's JSON (`name`, `value`, `path`, `domain`, `secure`,
    /// `httpOnly`, `sameSite`, `expiry`).
    fn from_webdriver(v: &Value) -> BrowserCookie {
        BrowserCookie {
            name: str_field(v, "name").unwrap_or_default(),
            value: str_field(v, "value").unwrap_or_default(),
            domain: str_field(v, "domain"),
            path: str_field(v, "path"),
            secure: v["secure"].as_bool().unwrap_or(false),
            http_only: v["httpOnly"].as_bool().unwrap_or(false),
            same_site: str_field(v, "sameSite"),
            expiry: v["expiry"].as_i64(),
        }
    }

    /// A cookie from DevTools' `Storage.getCookies` (`expires` is -1 for a session
    /// cookie, and fractional).
    fn from_devtools(v: &Value) -> BrowserCookie {
        let session = v["session"].as_bool().unwrap_or(false);
        BrowserCookie {
            expiry: if session {
                None
            } else {
                v["expires"].as_f64().map(|e| e as i64)
            },
            ..BrowserCookie::from_webdriver(v)
        }
    }

    fn to_webdriver(&self) -> Value {
        let mut cookie = json!({
            "name": self.name,
            "value": self.value,
            "secure": self.secure,
            "httpOnly": self.http_only,
        });
        let fields = [
            ("domain", self.domain.clone().map(Value::from)),
            ("path", self.path.clone().map(Value::from)),
            ("sameSite", self.same_site.clone().map(Value::from)),
            ("expiry", self.expiry.map(Value::from)),
        ];
        for (key, value) in fields {
            if let Some(value) = value {
                cookie[key] = value;
            }
        }
        cookie
    }
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v[key].as_str().map(str::to_owned)
}

/// A headless Chromium behind a chromedriver of its own. See the module doc for how a
/// test binary holds one.
pub struct Browser {
    client: Option<Client>,
    driver: Child,
    port: u16,
    /// The profiles (one per session) and chromedriver's log; removed on drop.
    dir: tempfile::TempDir,
    sessions: u32,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("chromedriver_pid", &self.driver.id())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// Starts chromedriver on a free port of 127.0.0.1 and a headless Chromium session on
    /// it, within [`START_TIMEOUT`]. Panics, with chromedriver's log, when either fails.
    pub async fn start() -> Browser {
        // A port just handed out may be taken again before chromedriver binds it: then
        // chromedriver exits, and another port is tried.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = super::free_port();
            let driver = Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .arg(format!(
                    "--log-path={}",
                    dir.path().join("chromedriver.log").display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group: Chromium's processes join it, and one kill of
                // the group ends them all.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("chromedriver could not be started ({e}); install chromium-driver")
                });
            let mut browser = Browser {
                client: None,
                driver,
                port,
                dir,
                sessions: 0,
            };
            if browser.driver_ready().await {
                browser.client = Some(browser.new_client().await);
                return browser;
            }
        }
        panic!("chromedriver could not be started on a free port");
    }

    /// Whether this chromedriver accepts connections on its port (false when it exited,
    /// say because the port was taken); panics when it does neither in time.
    async fn driver_ready(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.driver.try_wait().expect("try_wait").is_some() {
                return false;
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!(
            "chromedriver did not listen on port {} within {START_TIMEOUT:?}\n{}",
            self.port,
            self.driver_log()
        );
    }

    /// A new WebDriver session: a new Chromium with a new, empty profile.
    async fn new_client(&mut self) -> Client {
        self.sessions += 1;
        let profile = self.dir.path().join(format!("profile-{}", self.sessions));
        let capabilities = capabilities(&profile);
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let webdriver = format!("http://127.0.0.1:{}", self.port);
        let connect = builder.connect(&webdriver);
        let client = match tokio::time::timeout(START_TIMEOUT, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!("no Chromium session: {e}\n{}", self.driver_log()),
            Err(_) => panic!(
                "no Chromium session within {START_TIMEOUT:?}\n{}",
                self.driver_log()
            ),
        };
        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(SCRIPT_TIMEOUT),
                Some(PAGE_LOAD_TIMEOUT),
                Some(Duration::ZERO),
            ))
            .await
            .expect("set the WebDriver timeouts");
        client
    }

    /// The last lines of chromedriver's log, for a failure message.
    fn driver_log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("chromedriver.log"))
            .unwrap_or_else(|e| format!("(no chromedriver log: {e})"));
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("chromedriver log (last lines):\n{tail}")
    }

    /// The fantoccini client, for what the helpers below do not cover.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    /// Runs one scenario of a test binary: a clean slate first ([`Browser::reset`]), the
    /// scenario bounded by [`SCENARIO_TIMEOUT`], and on a failure (a panic or the time
    /// running out) a screenshot saved as `target/tmp/browser-failures/<name>.png` before
    /// the failure is passed on.
    pub async fn scenario(&mut self, name: &str, f: impl AsyncFnOnce(&mut Browser)) {
        eprintln!("browser scenario: {name}");
        self.reset().await;
        let started = Instant::now();
        let run = tokio::time::timeout(SCENARIO_TIMEOUT, f(self));
        let outcome = std::panic::AssertUnwindSafe(run).catch_unwind().await;
        let failure = match outcome {
            Ok(Ok(())) => {
                eprintln!("browser scenario: {name}: ok in {:?}", started.elapsed());
                return;
            }
            Ok(Err(_)) => None,
            Err(panic) => Some(panic),
        };
        let shot = failure_dir().join(format!("{}.png", file_name(name)));
        match tokio::time::timeout(Duration::from_secs(5), self.client().screenshot()).await {
            Ok(Ok(png)) => {
                std::fs::create_dir_all(failure_dir()).expect("failure dir");
                std::fs::write(&shot, png).expect("write screenshot");
                eprintln!(
                    "browser scenario: {name}: failed; screenshot {}",
                    shot.display()
                );
            }
            _ => eprintln!("browser scenario: {name}: failed; no screenshot"),
        }
        match failure {
            Some(panic) => std::panic::resume_unwind(panic),
            None => panic!("browser scenario {name:?} took longer than {SCENARIO_TIMEOUT:?}"),
        }
    }

    /// Clears every cookie of every site (DevTools `Storage.clearCookies`; WebDriver only
    /// reaches the current page's) and opens `about:blank`.
    pub async fn reset(&self) {
        self.goto("about:blank").await;
        self.devtools("Storage.clearCookies", json!({})).await;
    }

    /// Ends this session and starts a new one: a new Chromium with an empty profile
    /// (cookies, storage, cache and history all gone).
    pub async fn restart(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
        self.client = Some(self.new_client().await);
    }

    /// Ends the session (Chromium quits) and stops chromedriver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        }
        // Drop kills the process group and reaps chromedriver.
    }

    /// Opens `url` and waits for its load (bounded by the page-load timeout).
    pub async fn goto(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    pub async fn current_url(&self) -> Url {
        self.client().current_url().await.expect("current url")
    }

    pub async fn title(&self) -> String {
        self.client().title().await.expect("title")
    }

    /// The page's HTML as the browser holds it now.
    pub async fn source(&self) -> String {
        self.client().source().await.expect("page source")
    }

    /// The rendered text of the first element matching `css` (`"body"`: the page's text;
    /// a JSON answer shows as its text).
    pub async fn text_of(&self, css: &str) -> String {
        self.find(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of {css}: {e}"))
    }

    /// Whether an element matches `css` now.
    pub async fn exists(&self, css: &str) -> bool {
        !self
            .client()
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
            .is_empty()
    }

    /// Clears the input matching `css` and types `text` into it.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Clicks the element matching `css` as a user would (it must be visible).
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Submits the form matching `css` as its submit button would (`requestSubmit`: the
    /// form's validation and submit handlers run). Returns without waiting for the
    /// navigation: follow with [`Browser::wait_for_url`].
    pub async fn submit(&self, form_css: &str) {
        let submitted = self
            .execute(
                "const form = document.querySelector(arguments[0]);
                 if (!form) { return false; }
                 form.requestSubmit();
                 return true;",
                vec![json!(form_css)],
            )
            .await;
        assert_eq!(submitted, json!(true), "no form matches {form_css}");
    }

    /// Runs `script` as a function body in the page (`arguments` are `args`) and returns
    /// what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.client()
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The cookies the current page can be sent, as WebDriver reports them (HttpOnly ones
    /// too).
    pub async fn cookies(&self) -> Vec<BrowserCookie> {
        let all = self.webdriver(Method::GET, "cookie", None).await;
        all.as_array()
            .expect("a cookie list")
            .iter()
            .map(BrowserCookie::from_webdriver)
            .collect()
    }

    /// The current page's cookie named `name`, if there is one.
    pub async fn cookie(&self, name: &str) -> Option<BrowserCookie> {
        self.cookies().await.into_iter().find(|c| c.name == name)
    }

    /// Every cookie the browser holds, of every site (DevTools `Storage.getCookies`).
    pub async fn all_cookies(&self) -> Vec<BrowserCookie> {
        let answer = self.devtools("Storage.getCookies", json!({})).await;
        answer["cookies"]
            .as_array()
            .expect("a cookie list")
            .iter()
            .map(BrowserCookie::from_devtools)
            .collect()
    }

    /// Adds a cookie for the current page's site (WebDriver: it may be HttpOnly).
    pub async fn add_cookie(&self, cookie: &BrowserCookie) {
        self.webdriver(
            Method::POST,
            "cookie",
            Some(json!({ "cookie": cookie.to_webdriver() })),
        )
        .await;
    }

    /// Deletes the current page's cookie named `name`.
    pub async fn delete_cookie(&self, name: &str) {
        self.client()
            .delete_cookie(name)
            .await
            .unwrap_or_else(|e| panic!("delete cookie {name}: {e}"));
    }

    /// A PNG of the viewport (as wide as [`WINDOW`]).
    pub async fn screenshot_png(&self) -> Vec<u8> {
        self.client().screenshot().await.expect("screenshot")
    }

    /// Writes a PNG of the viewport to `path`.
    pub async fn save_screenshot(&self, path: &Path) {
        let png = self.screenshot_png().await;
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Waits until the current URL satisfies `ready` (say, a redirect landed), at most
    /// `timeout`; returns that URL, or panics with the last one seen.
    pub async fn wait_for_url(&self, ready: impl Fn(&Url) -> bool, timeout: Duration) -> Url {
        let deadline = Instant::now() + timeout;
        loop {
            let url = self.current_url().await;
            if ready(&url) {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "the URL did not become what was waited for within {timeout:?}: still {url}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until an element matches `css`, at most `timeout`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.exists(css).await {
            assert!(
                Instant::now() < deadline,
                "no element matched {css} within {timeout:?} (at {})",
                self.current_url().await
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element matches {css}: {e}"))
    }

    /// A WebDriver command on this session by its path under `/session/{id}/`.
    async fn webdriver(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let cmd = SessionCommand {
            method,
            path: path.to_owned(),
            body,
        };
        let what = format!("{cmd:?}");
        self.client()
            .issue_cmd(cmd)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// A Chrome DevTools Protocol command, through chromedriver's `goog/cdp/execute`.
    pub async fn devtools(&self, cmd: &str, params: Value) -> Value {
        self.webdriver(
            Method::POST,
            "goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
        .await
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the Chromium it started, by the group id (chromedriver's PID).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The session's capabilities: Chromium headless, root-safe, a fixed window, a profile
/// of its own, the test CA's certificates accepted, no name resolved but `localhost`.
fn capabilities(profile: &Path) -> Capabilities {
    let (width, height) = WINDOW;
    let options = json!({
        "binary": CHROMIUM,
        "args": [
            "--headless=new",
            // Root (CI) has no user namespace sandbox to offer.
            "--no-sandbox",
            "--disable-gpu",
            // /dev/shm is small in containers; Chromium crashes when it fills up.
            "--disable-dev-shm-usage",
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-component-update",
            "--disable-background-networking",
            "--disable-domain-reliability",
            "--disable-features=Translate,OptimizationHints,MediaRouter",
            // Nothing off this machine: every host but localhost and 127.0.0.1 fails to resolve.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
        ],
    });
    let caps = json!({
        "browserName": "chrome",
        "acceptInsecureCerts": true,
        "pageLoadStrategy": "normal",
        "goog:chromeOptions": options,
    });
    match caps {
        Value::Object(map) => map,
        _ => unreachable!("an object literal"),
    }
}

/// A WebDriver command under `/session/{id}/`, for what fantoccini has no method for (a
/// cookie list as JSON, DevTools commands).
#[derive(Debug)]
struct SessionCommand {
    method: Method,
    path: String,
    body: Option<Value>,
}

impl WebDriverCompatibleCommand for SessionCommand {
    fn endpoint(&self, base_url: &Url, session_id: Option<&str>) -> Result<Url, url::ParseError> {
        let id = session_id.expect("a session");
        base_url.join(&format!("session/{id}/{}", self.path))
    }

    fn method_and_body(&self, _request_url: &Url) -> (Method, Option<String>) {
        (
            self.method.clone(),
            self.body.as_ref().map(Value::to_string),
        )
    }
}

fn failure_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-failures")
}

/// `name` with anything but letters, digits, `-` and `_` made `_`.
fn file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A second origin: plain HTTP/1.1 on 127.0.0.1 (another site than
/// `https://localhost`) answering every request with `html` as `text/html`. Abort the
/// handle to stop it (or let the test's runtime end).
pub async fn serve_html(html: String) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let html = Bytes::from(html);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let html = html.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let response = Response::builder()
                        .header("content-type", "text/html; charset=utf-8")
                        .header("cache-control", "no-store")
                        .body(Full::new(html.clone()))
                        .expect("response");
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}
