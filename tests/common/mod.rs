//! The integration-test harness: the real gateway started through the library on
//! ephemeral ports, with real TLS (a test CA made by rcgen), a real upstream HTTP server
//! that records what it receives, and token minting with the gateway's own key types.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authgate::config::{Config, LoadOptions};
use authgate::jwt::{Algorithm, Claims, Key, OneOrMany, Signer};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub mod browser;
pub mod metrics;
pub mod oidc;
pub mod process;
pub mod wire;

/// The error description of a revoked token.
pub const REVOKED: &str = "the token has been revoked";

/// The two tokens of a login or a refresh.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

pub const NOW_SKEW: i64 = 0;

pub fn now() -> i64 {
    authgate::auth::now_secs() + NOW_SKEW
}

/// A port that was free a moment ago: bound on 127.0.0.1:0, read, released.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// A test PKI: a CA and a server certificate for localhost / 127.0.0.1, plus a client
/// certificate for mTLS, written into a temp dir.
pub struct Pki {
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl Pki {
    pub fn write(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "authgate test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().expect("server key");
        let server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("server cert");

        let client_key = KeyPair::generate().expect("client key");
        let mut client_params =
            CertificateParams::new(vec!["client.test".to_owned()]).expect("client params");
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params
            .signed_by(&client_key, &issuer)
            .expect("client cert");

        std::fs::write(dir.join("server.crt"), server_cert.pem()).expect("write");
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).expect("write");
        std::fs::write(dir.join("ca.crt"), ca_cert.pem()).expect("write");
        Pki {
            ca_pem: ca_cert.pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }
}

/// A signing key for tests, written where the config expects it.
pub struct TestKey {
    pub alg: Algorithm,
    pub key: Key,
    /// The file text: PEM private key, or the HMAC secret.
    pub text: String,
}

impl TestKey {
    pub fn generate(alg: Algorithm) -> TestKey {
        let text = authgate::jwt::generate_key(alg).expect("generate");
        let key = if is_hmac(alg) {
            Key::from_secret(alg, text.trim().as_bytes(), None)
        } else {
            Key::from_pem(alg, text.as_bytes(), None)
        }
        .expect("load");
        TestKey { alg, key, text }
    }

    /// The `[tokens]` lines naming this key, written to `dir/name`.
    pub fn config_lines(&self, dir: &Path, name: &str) -> String {
        std::fs::write(dir.join(name), &self.text).expect("write key");
        if is_hmac(self.alg) {
            format!(
                "algorithm = \"{:?}\"\nsecret = {{ file = \"{name}\" }}\n",
                self.alg
            )
        } else {
            format!("algorithm = \"{:?}\"\nsigning_key = \"{name}\"\n", self.alg)
        }
    }

    /// The public key as PEM (SubjectPublicKeyInfo), for asymmetric keys.
    pub fn public_pem(&self) -> String {
        use aws_lc_rs::encoding::AsDer as _;
        use aws_lc_rs::signature::KeyPair as _;
        let der = pem::parse(self.text.as_bytes())
            .expect("pem")
            .into_contents();
        let spki: Vec<u8> = match self.alg {
            Algorithm::ES256 | Algorithm::ES384 => {
                let alg = if self.alg == Algorithm::ES256 {
                    &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING
                } else {
                    &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING
                };
                let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(alg, &der).expect("ec");
                pair.public_key().as_der().expect("spki").as_ref().to_vec()
            }
            Algorithm::EdDSA => {
                let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&der).expect("ed");
                pair.public_key().as_der().expect("spki").as_ref().to_vec()
            }
            _ => {
                let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).expect("rsa");
                pair.public_key().as_der().expect("spki").as_ref().to_vec()
            }
        };
        pem::encode(&pem::Pem::new("PUBLIC KEY", spki))
    }

    /// Signs claims with this key (header `alg` and `kid` of the key).
    pub fn sign(&self, claims: &Claims) -> String {
        Signer::new(self.key.clone())
            .expect("signer")
            .sign(claims)
            .expect("sign")
    }
}

pub fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Claims of a valid access token for `sub` with `roles`, issued now.
pub fn access_claims(sub: &str, roles: &[&str]) -> Claims {
    let now = now();
    Claims {
        sub: sub.to_owned(),
        iat: Some(now),
        nbf: Some(now),
        exp: Some(now + 600),
        jti: Some(format!("jti-{sub}-{now}-{}", rand_suffix())),
        token_type: Some("access".into()),
        fresh: Some(false),
        auth_time: None,
        iss: Some("authgate".into()),
        aud: Some(OneOrMany::One("authgate".into())),
        roles: OneOrMany::Many(roles.iter().map(|r| (*r).to_owned()).collect()),
        extra: Default::default(),
    }
}

fn rand_suffix() -> u64 {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).expect("rand");
    u64::from_le_bytes(b)
}

/// A JWS with the given header and payload JSON, signed with HMAC-SHA256 under `secret`
/// (for forgeries: `alg` confusion, hand-made headers).
pub fn hs256_token(header: &str, payload: &str, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path_and_query: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body_len: usize,
}

/// A real HTTP/1.1 upstream on 127.0.0.1 that records every request. It answers:
/// - `/slow…`: after `slow_delay`, 200;
/// - `/echo-body…`: streams the request body back;
/// - anything else: 200 with JSON `{"path": …, "user": <X-Auth-User or null>}`.
pub struct Upstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        Upstream::start_with_delay(Duration::from_secs(3)).await
    }

    pub async fn start_with_delay(slow_delay: Duration) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                upstream_answer(req, log, slow_delay).await,
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            addr,
            received,
            task,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// The path and query of every request received, in order.
    pub fn paths(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .map(|r| r.path_and_query)
            .collect()
    }

    pub fn clear(&self) {
        self.received.lock().expect("lock").clear();
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type UpstreamBody = BoxBody<Bytes, hyper::Error>;

async fn upstream_answer(
    req: Request<Incoming>,
    log: Arc<Mutex<Vec<Received>>>,
    slow_delay: Duration,
) -> Response<UpstreamBody> {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or_else(String::new, |p| p.as_str().to_owned());
    let mut record = Received {
        method: req.method().to_string(),
        path_and_query: path_and_query.clone(),
        version: req.version(),
        headers: req.headers().clone(),
        body_len: 0,
    };
    let full = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
        *r.status_mut() = status;
        r
    };
    if path_and_query.starts_with("/echo-body") {
        log.lock().expect("lock").push(record);
        return Response::new(req.into_body().boxed());
    }
    let user = req
        .headers()
        .get("x-auth-user")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    record.body_len = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    log.lock().expect("lock").push(record);
    if path_and_query.starts_with("/slow") {
        tokio::time::sleep(slow_delay).await;
    }
    full(
        StatusCode::OK,
        serde_json::json!({ "path": path_and_query, "user": user }).to_string(),
    )
}

/// A running gateway. Dropping it stops it.
pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Writes `config` to `dir/gateway.toml`, loads it as `serve` would and serves it on
    /// the (ephemeral) addresses it names.
    pub async fn start(dir: &Path, config: &str) -> Gateway {
        let path = dir.join("gateway.toml");
        std::fs::write(&path, config).expect("write config");
        let config = Config::load(
            &path,
            LoadOptions {
                write_generated: true,
            },
        )
        .unwrap_or_else(|e| panic!("config refused:\n{e}"));
        let listeners = authgate::Listeners::bind(&config).await.expect("bind");
        let addr = listeners.public.local_addr().expect("addr");
        let admin = listeners
            .admin
            .as_ref()
            .map(|l| l.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = rx.await;
        };
        let task = tokio::spawn(async move {
            if let Err(e) = authgate::run(Arc::new(config), listeners, shutdown).await {
                panic!("the gateway did not start: {e}");
            }
        });
        Gateway {
            addr,
            admin,
            dir: dir.to_path_buf(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The usual test set-up: a temp dir with PKI and a signing key, a recording upstream,
/// and the text of a config with public, admin-only and catch-all routes to it.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub pki: Pki,
    pub key: TestKey,
    pub upstream: Upstream,
}

impl Setup {
    pub async fn new(alg: Algorithm) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::write(dir.path());
        let key = TestKey::generate(alg);
        let upstream = Upstream::start().await;
        Setup {
            dir,
            pki,
            key,
            upstream,
        }
    }

    /// `[server]`, `[admin]`, `[tokens]` and `[identity]`, and the `app` upstream; the
    /// caller adds `[[route]]`s (and may add more `[[upstream]]`s).
    pub fn head(&self) -> String {
        format!(
            r#"[server]
listen = "127.0.0.1:0"
tls = {{ cert = "server.crt", key = "server.key" }}

[admin]
listen = "127.0.0.1:0"

[tokens]
{key}leeway = "5s"

[identity]
claim_headers = {{ "X-Auth-Roles" = "roles" }}

[[upstream]]
name = "app"
url = "{upstream}"
connect_timeout = "2s"
timeout = "2s"
"#,
            key = self.key.config_lines(self.dir.path(), "signing.pem"),
            upstream = self.upstream.url(),
        )
    }

    /// The head plus three routes: `/public` (public), `/admin` (role admin), `/` (any
    /// valid token).
    pub fn standard_config(&self) -> String {
        format!(
            r#"{}
[[route]]
path = "/public"
upstream = "app"
auth = "public"

[[route]]
path = "/admin"
upstream = "app"
require = {{ roles = ["admin"] }}

[[route]]
path = "/"
upstream = "app"
"#,
            self.head()
        )
    }

    pub async fn start(&self) -> Gateway {
        Gateway::start(self.dir.path(), &self.standard_config()).await
    }

    pub async fn start_with(&self, config: &str) -> Gateway {
        Gateway::start(self.dir.path(), config).await
    }

    pub fn token(&self, sub: &str, roles: &[&str]) -> String {
        self.key.sign(&access_claims(sub, roles))
    }

    /// An HTTPS client trusting the test CA; HTTP/2 by ALPN when the server offers it.
    pub fn client(&self) -> reqwest::Client {
        client(&self.pki.ca_pem, false)
    }

    pub fn http1_client(&self) -> reqwest::Client {
        client(&self.pki.ca_pem, true)
    }
}

pub fn client(ca_pem: &str, http1_only: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("ca");
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(20));
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().expect("client")
}

/// A TLS connection to the gateway trusting the test CA, for raw requests.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("cert")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    connector
        .connect("localhost".try_into().expect("name"), tcp)
        .await
        .expect("tls")
}

use rustls::pki_types::pem::PemObject as _;

/// Sends `raw` bytes (a whole HTTP/1.1 request; add `Connection: close`) over TLS and
/// returns the status code and the full response text.
pub async fn raw_request(addr: SocketAddr, ca_pem: &str, raw: &[u8]) -> (u16, String) {
    let mut stream = tls_connect(addr, ca_pem, &[b"http/1.1"]).await;
    stream.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    (raw_status(&text), text)
}

/// The status code of a raw response text (0 when there is none).
pub fn raw_status(text: &str) -> u16 {
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The JSON body of a raw response text.
pub fn raw_json(text: &str) -> serde_json::Value {
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("JSON body: {e}\n{text}"))
}

/// One keep-alive `GET path` on an open HTTP/1.1 `stream` (Host: localhost), its whole
/// response read within 5 s: the status and the response text.
pub async fn keep_alive_get<S>(stream: &mut S, path: &str) -> (u16, String)
where
    S: AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let response = tokio::time::timeout(Duration::from_secs(5), read_message(stream))
        .await
        .expect("a response in time")
        .expect("a whole response");
    let text = String::from_utf8_lossy(&response).into_owned();
    (raw_status(&text), text)
}

/// Reads one HTTP/1.1 message (head, and a body framed by `Content-Length` or chunked)
/// from `stream`; `None` on EOF or error before a whole message. Bounded by the caller.
pub async fn read_message<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let content_length = head.lines().find_map(|line| {
        line.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = head
        .lines()
        .any(|line| line.starts_with("transfer-encoding:") && line.contains("chunked"));
    loop {
        let body = &buf[head_end..];
        let complete = if chunked {
            find(body, b"0\r\n\r\n").is_some()
        } else {
            body.len() >= content_length.unwrap_or(0)
        };
        if complete {
            return Some(buf);
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A gateway answer read whole as JSON (panics on a body that is not JSON): its status,
/// its content type and the body.
pub async fn json_of(resp: reqwest::Response) -> (u16, String, serde_json::Value) {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    let body = resp.json().await.expect("a JSON body");
    (status, content_type, body)
}

/// A GET of `target` (sent byte for byte) with optional extra header lines.
pub async fn raw_get(addr: SocketAddr, ca_pem: &str, target: &str, extra: &str) -> (u16, String) {
    let req =
        format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n");
    raw_request(addr, ca_pem, req.as_bytes()).await
}

/// Runs `hyper` as an HTTP/2 client over TLS (ALPN h2) for one GET; returns the status
/// and the negotiated version.
pub async fn h2_get(
    addr: SocketAddr,
    ca_pem: &str,
    path: &str,
    token: &str,
) -> (StatusCode, http::Version, String) {
    let stream = tls_connect(addr, ca_pem, &[b"h2"]).await;
    assert_eq!(
        stream.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN chose h2"
    );
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(format!("https://localhost:{}{path}", addr.port()))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("h2 request");
    let status = resp.status();
    let version = resp.version();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, version, String::from_utf8_lossy(&body).into_owned())
}

/// A Python interpreter with Flask, Flask-JWT-Extended, PyJWT and kubernetes-validate
/// (whose `kubernetes-validate` command sits beside it): a virtual environment in
/// Cargo's target folder, created and filled from PyPI on first use and reused afterwards,
/// so `cargo test` needs no set-up step of its own.
pub fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-env");
            let python = venv.join("bin/python3");
            let ready = venv.join(".installed-v2");
            if ready.exists() {
                return python;
            }
            let run = |cmd: &mut std::process::Command, what: &str| {
                let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(
                    out.status.success(),
                    "{what} failed:\n{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            run(
                std::process::Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv),
                "python3 -m venv",
            );
            run(
                std::process::Command::new(&python).args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "flask==3.*",
                    "flask-jwt-extended==4.*",
                    "pyjwt[crypto]==2.*",
                    "kubernetes-validate==1.*",
                ]),
                "pip install flask flask-jwt-extended pyjwt",
            );
            std::fs::write(&ready, b"").expect("marker");
            python
        })
        .clone()
}

/// A real `redis-server` for one test, on a free port of 127.0.0.1, persisting nothing,
/// stopped (by its PID) when dropped. Needs `redis-server` on the PATH (`.ci/run` installs
/// it).
pub struct RedisServer {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        // A port the kernel just handed out may be taken again before redis-server binds
        // it (by another test's server): then that attempt exits, and another port is tried.
        for _ in 0..5 {
            if let Some(server) = RedisServer::try_start() {
                return server;
            }
        }
        panic!("redis-server could not be started on a free port");
    }

    fn try_start() -> Option<RedisServer> {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server could not be started ({e}); install it"));
        let mut server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if server.child.try_wait().expect("try_wait").is_some() {
                return None;
            }
            // Answered by this server, not another one on the same port: its process id.
            if server.process_id() == Some(server.child.id()) {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer on port {port}");
    }

    /// `process_id` from `INFO server`, if a server answers on the port.
    fn process_id(&self) -> Option<u32> {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        stream.write_all(b"INFO server\r\n").ok()?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            reply.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&reply);
            if let Some(rest) = text.split("process_id:").nth(1)
                && let Some((pid, _)) = rest.split_once("\r\n")
            {
                return pid.trim().parse().ok();
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Sends `SIG<name>` (say `STOP`, `CONT`) to this server, by its PID.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
