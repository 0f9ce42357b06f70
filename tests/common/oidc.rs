//! A real OpenID Connect provider run locally: the npm package `oidc-provider` (panva,
//! pinned by `tests/support/oidc/package-lock.json`) under Node.js, started by
//! `tests/support/oidc/provider.mjs` on a free port of 127.0.0.1 over plain HTTP, issuer
//! `http://127.0.0.1:PORT`. [`OidcProvider::start`] runs `npm ci` there first when
//! `node_modules` is missing (`.ci/run` does it too); dropping the `OidcProvider` kills
//! the node process by its id and reaps it.
//!
//! **What it serves.** Discovery at `{issuer}/.well-known/openid-configuration`,
//! `/auth` (authorization), `/token`, `/jwks`, `/me` (userinfo), `/session/end`.
//! One confidential client: `client_id` [`CLIENT_ID`] (`authgate`) with
//! `token_endpoint_auth_method` `client_secret_basic`, and the same secret and redirect
//! URI as `authgate-post` with `client_secret_post`; `grant_types`
//! `["authorization_code"]`, `response_types` `["code"]`, exactly one redirect URI (the one
//! given to `start`, compared exactly). PKCE is required of every client, `S256` only
//! (a request without `code_challenge` is refused with `invalid_request`). The ID token
//! is RS256 (the JWKS also holds an ES256 key; `provider.mjs --id-token-alg=ES256` makes
//! the client's ID tokens ES256); both keys are generated at every start, so a restarted
//! provider has new `kid`s. Codes live 60 s and are single use: a second exchange is
//! `400 invalid_grant`. Scope `openid profile` puts `preferred_username`, `name`,
//! `roles` and `groups` in the ID token itself (`conformIdTokenClaims: false`), `email`
//! adds `email` and `email_verified`; `nonce` is echoed, `iss` is the issuer, `aud` the
//! client id, `sub` the login name.
//!
//! **Accounts** ([`ACCOUNTS`]): `alice` / `alice-password`, roles and groups
//! `["admin","dev"]`; `bob` / `bob-password`, `["dev"]`.
//!
//! **The login page** (`/interaction/{uid}`, the provider's own minimal HTML, no script):
//! - form `#login-form` (POST `/interaction/{uid}/login`);
//! - username input [`LOGIN_USERNAME`] `#username` (`name="username"`);
//! - password input [`LOGIN_PASSWORD`] `#password` (`name="password"`);
//! - sign-in button [`LOGIN_SUBMIT`] `#login-submit`;
//! - cancel button [`LOGIN_CANCEL`] `#login-cancel`: the provider redirects to the
//!   redirect URI with `error=access_denied` and the `state`;
//! - a wrong username or password shows the form again (status 401) with
//!   [`LOGIN_ERROR`] `#error`.
//!
//! **Consent** is granted without a page: after the sign-in the browser goes straight on
//! to the redirect URI with `code`, `state` and `iss`. A second authorization in the same
//! browser session (the provider's `_session` cookie) skips the login page too, unless
//! the request has `prompt=login` (or `max_age`).
//!
//! The provider writes its diagnostics (two start-up warnings about its in-memory
//! adapter, token and authorization errors) to stderr, kept in a file: see
//! [`OidcProvider::stderr`].

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// The client id of the provider's client (`client_secret_basic`).
pub const CLIENT_ID: &str = "authgate";
/// The same client authenticating with `client_secret_post`.
pub const CLIENT_ID_POST: &str = "authgate-post";

/// The accounts: login name (also `sub` and `preferred_username`), password, roles.
pub const ACCOUNTS: &[(&str, &str, &[&str])] = &[
    ("alice", "alice-password", &["admin", "dev"]),
    ("bob", "bob-password", &["dev"]),
];

/// CSS selectors of the provider's login page (see the module doc).
pub const LOGIN_FORM: &str = "#login-form";
pub const LOGIN_USERNAME: &str = "#username";
pub const LOGIN_PASSWORD: &str = "#password";
pub const LOGIN_SUBMIT: &str = "#login-submit";
pub const LOGIN_CANCEL: &str = "#login-cancel";
pub const LOGIN_ERROR: &str = "#error";

/// How long node gets to print `READY`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The provider's directory: `package.json`, `package-lock.json`, `provider.mjs`.
pub fn provider_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/oidc")
}

/// The command that installs the provider's packages.
pub const NPM_CI: &str = "npm ci --prefix tests/support/oidc --no-audit --no-fund";

/// A running `oidc-provider`. Dropping it kills the node process.
#[derive(Debug)]
pub struct OidcProvider {
    /// `http://127.0.0.1:PORT`, exactly as the provider puts it in `iss`.
    pub issuer: String,
    pub port: u16,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    child: Child,
    /// Holds the stderr file.
    dir: tempfile::TempDir,
}

impl OidcProvider {
    /// Starts the provider with its client registered for `redirect_uri` and
    /// `client_secret`, on a free port; returns once it printed `READY` (at most
    /// [`START_TIMEOUT`]). Panics with its stderr when it does not start.
    pub fn start(redirect_uri: &str, client_secret: &str) -> OidcProvider {
        ensure_installed();
        // A port just handed out may be taken again before node binds it: node exits
        // then, and another port is tried.
        let mut last_error = String::new();
        for _ in 0..5 {
            match OidcProvider::try_start(super::free_port(), redirect_uri, client_secret) {
                Ok(provider) => return provider,
                Err(e) => last_error = e,
            }
        }
        panic!("the OpenID provider did not start:\n{last_error}");
    }

    fn try_start(port: u16, redirect_uri: &str, client_secret: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr_path = dir.path().join("provider.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut child = Command::new("node")
            .arg(provider_dir().join("provider.mjs"))
            .arg(format!("--port={port}"))
            .arg(format!("--redirect-uri={redirect_uri}"))
            .arg(format!("--client-id={CLIENT_ID}"))
            .arg(format!("--client-secret={client_secret}"))
            // Held open by the Child: the provider exits when it closes.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("node could not be started ({e}); install Debian's nodejs and npm")
            });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        // Reads every line to the end, so the provider never writes to a closed pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let issuer = format!("http://127.0.0.1:{port}");
        let mut provider = OidcProvider {
            issuer: issuer.clone(),
            port,
            client_id: CLIENT_ID.to_owned(),
            client_secret: client_secret.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            child,
            dir,
        };
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line == format!("READY {issuer}") => return Ok(provider),
                Ok(_) => continue,
                // stdout closed: node exited (say, the port was taken).
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = provider.child.wait().expect("wait");
                    return Err(format!("node exited ({status})\n{}", provider.stderr()));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "the OpenID provider did not print READY within {START_TIMEOUT:?}\n{}",
                    provider.stderr()
                ),
            }
        }
    }

    /// What the provider wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("provider.stderr"))
            .unwrap_or_else(|e| format!("(no stderr: {e})"))
    }

    /// `{issuer}/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// The discovery document (panics unless it is a 200 with JSON).
    pub async fn discovery(&self) -> Value {
        get_json(&self.discovery_url()).await
    }

    /// The provider's JWKS, from the discovery document's `jwks_uri`.
    pub async fn jwks(&self) -> Value {
        let discovery = self.discovery().await;
        let uri = discovery["jwks_uri"].as_str().expect("jwks_uri");
        get_json(uri).await
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        // SIGKILL to this child's id, then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GETs `url` and parses a 200's body as JSON; panics otherwise.
pub async fn get_json(url: &str) -> Value {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let body = response.text().await.expect("body");
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"))
}

/// Runs `npm ci` in the provider's directory when its `node_modules` is missing.
fn ensure_installed() {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = provider_dir();
    if dir.join("node_modules/oidc-provider/package.json").exists() {
        return;
    }
    eprintln!("oidc: installing the OpenID provider: {NPM_CI}");
    let output = Command::new("npm")
        .args(["ci", "--prefix"])
        .arg(&dir)
        .args(["--no-audit", "--no-fund"])
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`{NPM_CI}` failed ({}); run it from the repository root\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "npm could not be started ({e}): install Debian's nodejs and npm, then run `{NPM_CI}`"
        ),
    }
}
