//! The real `authgate` binary as a child process: a [`Site`] (a temp folder with
//! `gateway.toml`, an HS256 secret in `jwt.secret`, and two ports picked by binding
//! `127.0.0.1:0`) and the [`Gate`] it starts (`authgate serve`), for what only a process
//! can show: signals, restarts, exit codes and log lines.
//!
//! What differs between tests is said with builder methods: TLS on the public port (the
//! harness PKI), a recording upstream named `app` (whose `/slow…` paths answer after a
//! chosen delay), the SQLite store, the drain timeout and extra `[tokens]` lines. The
//! routes (and any other table) are the caller's, appended to [`Site::head`]. The child's
//! stdout and stderr go to `gateway.log` (not a terminal, so the logs are JSON); a
//! [`Gate`] kills its child when dropped, assertion failures included; every wait is
//! bounded.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use authgate::jwt::Algorithm;
use reqwest::StatusCode;

use super::{Pki, TestKey, Upstream, access_claims, free_port};

/// The gateway binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_authgate");
/// Bound on a start (store opened, listeners up, `/readyz` 200).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a graceful stop after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A gateway's folder and ports, and what its config is made of.
pub struct Site {
    dir: tempfile::TempDir,
    /// The public port.
    pub port: u16,
    /// The admin port (`/readyz`, `/metrics`).
    pub admin: u16,
    /// The HS256 key in `jwt.secret` (64 hex characters).
    pub key: TestKey,
    /// The test PKI, when the public port speaks TLS.
    pub pki: Option<Pki>,
    upstream: Option<Upstream>,
    drain_timeout: String,
    store: bool,
    tokens_lines: String,
    log_format: Option<&'static str>,
}

impl Site {
    /// A folder with `jwt.secret`, two free ports, plain HTTP, no upstream of its own, no
    /// store, `drain_timeout = "5s"`.
    pub fn new() -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = TestKey::generate(Algorithm::HS256);
        assert_eq!(key.text.trim().len(), 64, "a 64-hex-character HS256 secret");
        std::fs::write(dir.path().join("jwt.secret"), &key.text).expect("write secret");
        Site {
            dir,
            port: free_port(),
            admin: free_port(),
            key,
            pki: None,
            upstream: None,
            drain_timeout: "5s".to_owned(),
            store: false,
            tokens_lines: String::new(),
            log_format: None,
        }
    }

    /// TLS on the public port, with the harness PKI written into the folder.
    pub fn tls(mut self) -> Site {
        self.pki = Some(Pki::write(self.path()));
        self
    }

    /// `upstream` as the `app` upstream of [`Site::head`] (its timeout 30 s).
    pub fn upstream(mut self, upstream: Upstream) -> Site {
        self.upstream = Some(upstream);
        self
    }

    /// The SQLite store, `sqlite://data/authgate.db`.
    pub fn store(mut self) -> Site {
        self.store = true;
        self
    }

    /// `server.drain_timeout`, as written in the file (`"5s"`).
    pub fn drain_timeout(mut self, drain: &str) -> Site {
        drain.clone_into(&mut self.drain_timeout);
        self
    }

    /// Lines added to `[tokens]` (each ending in a line break).
    pub fn tokens_lines(mut self, lines: &str) -> Site {
        lines.clone_into(&mut self.tokens_lines);
        self
    }

    /// `--log-format` (`"text"` or `"json"`); without it, JSON, as stderr is no terminal.
    pub fn log_format(mut self, format: &'static str) -> Site {
        self.log_format = Some(format);
        self
    }

    /// The recording upstream given to [`Site::upstream`].
    pub fn recording(&self) -> &Upstream {
        self.upstream.as_ref().expect("a site with an upstream")
    }

    /// `[server]` (on `listen_port`), `[admin]`, `[tokens]`, `[store]` and the `app`
    /// upstream, as this site has them; the caller appends routes.
    pub fn head_on(&self, listen_port: u16) -> String {
        let tls = if self.pki.is_some() {
            "tls = { cert = \"server.crt\", key = \"server.key\" }\n"
        } else {
            ""
        };
        let store = if self.store {
            "\n[store]\nurl = \"sqlite://data/authgate.db\"\n"
        } else {
            ""
        };
        let upstream = match &self.upstream {
            Some(upstream) => format!(
                "\n[[upstream]]\nname = \"app\"\nurl = \"{}\"\nconnect_timeout = \"2s\"\ntimeout = \"30s\"\n",
                upstream.url()
            ),
            None => String::new(),
        };
        format!(
            r#"[server]
listen = "127.0.0.1:{listen_port}"
{tls}drain_timeout = "{drain}"

[admin]
listen = "127.0.0.1:{admin}"

[tokens]
algorithm = "HS256"
secret = {{ file = "jwt.secret" }}
{tokens}leeway = "5s"
{store}{upstream}"#,
            drain = self.drain_timeout,
            admin = self.admin,
            tokens = self.tokens_lines,
        )
    }

    /// [`Site::head_on`] the site's own public port.
    pub fn head(&self) -> String {
        self.head_on(self.port)
    }

    /// Replaces `gateway.toml`, written whole before it is renamed into place, so a
    /// gateway that reloads never reads half a file.
    pub fn write_config(&self, text: &str) {
        let tmp = self.path().join("gateway.toml.new");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, self.config_path()).expect("replace config");
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("gateway.toml")
    }

    /// Where every start's stdout and stderr are appended.
    pub fn log_path(&self) -> PathBuf {
        self.path().join("gateway.log")
    }

    /// `path` on the public port: `https://localhost:…` with TLS, else
    /// `http://127.0.0.1:…`.
    pub fn url(&self, path: &str) -> String {
        match self.pki {
            Some(_) => format!("https://localhost:{}{path}", self.port),
            None => format!("http://127.0.0.1:{}{path}", self.port),
        }
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    /// An access token for `sub` (no roles) signed with the site's key.
    pub fn token(&self, sub: &str) -> String {
        self.key.sign(&access_claims(sub, &[]))
    }

    /// A client without a connection pool: every request opens its own connection, so "a
    /// new request" is a new connection, and none is reused across a reload, a drain or a
    /// restart. With TLS it trusts the test CA and speaks HTTP/1.1.
    pub fn client(&self) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(20));
        if let Some(pki) = &self.pki {
            let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("ca");
            builder = builder.tls_certs_only([ca]).http1_only();
        }
        builder.build().expect("client")
    }

    /// Starts `authgate serve --config <dir>/gateway.toml` (no `AUTHGATE_CONFIG` or
    /// `AUTHGATE_LOG_FORMAT` inherited) with stdout and stderr appended to `gateway.log`,
    /// and waits (bounded) until its admin `/readyz` answers 200.
    pub async fn start(&self, rust_log: &str) -> Gate {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open log");
        let mut command = Command::new(BIN);
        if let Some(format) = self.log_format {
            command.arg("--log-format").arg(format);
        }
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.path())
            .env_remove("AUTHGATE_CONFIG")
            .env_remove("AUTHGATE_LOG_FORMAT")
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn authgate");
        let mut gate = Gate::adopt(child, self.log_path());
        let probe = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(2))
            .build()
            .expect("probe client");
        let ready = self.admin_url("/readyz");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = gate.child.try_wait().expect("try_wait") {
                panic!(
                    "authgate exited during start-up ({status}); its log:\n{}",
                    gate.log_text()
                );
            }
            if let Ok(response) = probe.get(&ready).send().await
                && response.status() == StatusCode::OK
            {
                return gate;
            }
            assert!(
                Instant::now() < deadline,
                "authgate was not ready within {START_TIMEOUT:?}; its log:\n{}",
                gate.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `/readyz` on the admin port by a new connection, bounded to 500 ms; `None` when
    /// nothing answered.
    pub async fn readyz(&self) -> Option<StatusCode> {
        let probe = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_millis(500))
            .build()
            .expect("probe client");
        probe
            .get(self.admin_url("/readyz"))
            .send()
            .await
            .ok()
            .map(|r| r.status())
    }

    /// The admin port's `/metrics` text (checked as [`super::metrics::text`] does).
    pub async fn metrics(&self) -> String {
        super::metrics::text(&self.admin_url("/metrics")).await
    }
}

/// Runs `authgate --config <config> ARGS` to completion with `stdin` piped in (no
/// `AUTHGATE_CONFIG` inherited, `RUST_LOG=warn`), and returns what it printed.
pub fn run_cli(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("AUTHGATE_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the authgate binary");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait for authgate")
}

/// A running child process of the gateway binary. Dropping it SIGKILLs and reaps the
/// child.
pub struct Gate {
    child: Child,
    log: PathBuf,
}

impl Gate {
    /// Takes charge of `child`, whose output goes to `log`.
    pub fn adopt(child: Child, log: PathBuf) -> Gate {
        Gate { child, log }
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends `SIG<signal>` (`HUP`, `TERM`) to this child, by its pid.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits (bounded by `limit`) for the child to exit; `None` if it did not.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap: no drain, no flush, no
    /// destructor runs in the gateway.
    pub fn sigkill(mut self) {
        self.child.kill().expect("SIGKILL the gateway");
        self.child.wait().expect("reap the gateway");
    }

    /// SIGTERM, then waits (bounded) for the exit, which must be a success.
    pub async fn stop(mut self) {
        self.signal("TERM");
        let status = self
            .wait_exit(STOP_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("authgate did not stop within {STOP_TIMEOUT:?} of SIGTERM"));
        assert!(status.success(), "authgate exited with {status} on SIGTERM");
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        // Only our own child, by its handle; harmless if it has already been reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
