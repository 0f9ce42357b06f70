//! `[[issuer]]`: tokens of other issuers, verified with the keys their JWKS publishes,
//! against a real identity-provider stand-in: HTTPS on 127.0.0.1 under its own CA, a
//! discovery document and a JWK Set that the test changes, counts, takes down and hangs.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authgate::jwt::{Algorithm, Claims, Key, OneOrMany, Signer};
use bytes::Bytes;
use common::{Gateway, Setup, hs256_token, now};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// How the identity provider answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    /// New connections are closed at once; requests on open ones get a 503.
    Down,
    /// Connections are accepted and requests never answered.
    Hang,
}

struct IdpState {
    keys: Vec<Value>,
    mode: Mode,
}

/// An identity provider: `/.well-known/openid-configuration` and `/jwks` over HTTPS.
struct Idp {
    addr: SocketAddr,
    state: Arc<Mutex<IdpState>>,
    /// Requests for `/jwks` answered or hung.
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Idp {
    /// Serves on an ephemeral port with a certificate of a fresh CA, written to
    /// `dir/{name}-ca.pem`.
    async fn start(dir: &std::path::Path, name: &str) -> Idp {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("cert");
        std::fs::write(dir.join(format!("{name}-ca.pem")), ca_cert.pem()).expect("write ca");

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(IdpState {
            keys: Vec::new(),
            mode: Mode::Up,
        }));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (state2, fetches2) = (state.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, fetches, acceptor) =
                    (state2.clone(), fetches2.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let mode = state.lock().expect("lock").mode;
                    match mode {
                        Mode::Down => drop(stream),
                        Mode::Hang => {
                            // Held open, never answered.
                            fetches.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            drop(stream);
                        }
                        Mode::Up => {
                            let Ok(tls) = acceptor.accept(stream).await else {
                                return;
                            };
                            let service =
                                hyper::service::service_fn(move |req: Request<Incoming>| {
                                    let (state, fetches) = (state.clone(), fetches.clone());
                                    async move {
                                        Ok::<_, std::convert::Infallible>(
                                            answer_in_mode(&req, addr, &state, &fetches).await,
                                        )
                                    }
                                });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tls), service)
                                .await;
                        }
                    }
                });
            }
        });
        Idp {
            addr,
            state,
            fetches,
            task,
        }
    }

    /// The issuer URL, as its tokens' `iss` and the discovery base.
    fn issuer(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    fn jwks_uri(&self) -> String {
        format!("https://localhost:{}/jwks", self.addr.port())
    }

    /// Adds `key`'s public JWK to the set.
    fn publish(&self, key: &Key) {
        let mut jwk =
            serde_json::to_value(key.public_jwk.as_ref().expect("public jwk")).expect("jwk");
        jwk["kid"] = key.kid.clone().into();
        self.state.lock().expect("lock").keys.push(jwk);
    }

    fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("lock").mode = mode;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// [`answer`], unless the provider is down or hanging: checked per request too, since the
/// gateway keeps its connection to the provider alive between fetches.
async fn answer_in_mode(
    req: &Request<Incoming>,
    addr: SocketAddr,
    state: &Mutex<IdpState>,
    fetches: &AtomicUsize,
) -> Response<Full<Bytes>> {
    let mode = state.lock().expect("lock").mode;
    match mode {
        Mode::Up => answer(req, addr, state, fetches),
        Mode::Down => Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("connection", "close")
            .body(Full::new(Bytes::new()))
            .expect("response"),
        Mode::Hang => {
            fetches.fetch_add(1, Ordering::SeqCst);
            std::future::pending().await
        }
    }
}

fn answer(
    req: &Request<Incoming>,
    addr: SocketAddr,
    state: &Mutex<IdpState>,
    fetches: &AtomicUsize,
) -> Response<Full<Bytes>> {
    let json_response = |value: Value| {
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(value.to_string())))
            .expect("response")
    };
    match req.uri().path() {
        "/.well-known/openid-configuration" => json_response(json!({
            "issuer": format!("https://localhost:{}", addr.port()),
            "jwks_uri": format!("https://localhost:{}/jwks", addr.port()),
        })),
        "/jwks" => {
            fetches.fetch_add(1, Ordering::SeqCst);
            json_response(json!({ "keys": state.lock().expect("lock").keys.clone() }))
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new()))
            .expect("response"),
    }
}

/// A key of an identity provider, with its own `kid`.
fn idp_key(alg: Algorithm, kid: &str) -> Key {
    let text = authgate::jwt::generate_key(alg).expect("generate");
    Key::from_pem(alg, text.as_bytes(), Some(kid.to_owned())).expect("key")
}

/// Claims as a Keycloak access token carries them: `preferred_username`,
/// `realm_access.roles`, no `type`.
fn keycloak_claims(iss: &str, aud: &str, user: &str, roles: &[&str]) -> Claims {
    let now = now();
    let mut extra = serde_json::Map::new();
    extra.insert("preferred_username".into(), user.into());
    extra.insert("realm_access".into(), json!({ "roles": roles }));
    extra.insert("sid".into(), "s-1".into());
    Claims {
        sub: format!("uuid-of-{user}"),
        iat: Some(now),
        exp: Some(now + 300),
        jti: Some(format!("{user}-{}", rand())),
        iss: Some(iss.to_owned()),
        aud: Some(OneOrMany::Many(vec![aud.to_owned(), "account".to_owned()])),
        roles: OneOrMany::Many(Vec::new()),
        extra,
        ..Claims::default()
    }
}

fn rand() -> u64 {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).expect("rand");
    u64::from_le_bytes(b)
}

fn sign(key: &Key, claims: &Claims) -> String {
    Signer::new(key.clone())
        .expect("signer")
        .sign(claims)
        .expect("sign")
}

/// A token whose header names `kid`, signed by `key` (whose own kid it may not be).
fn sign_with_kid(key: &Key, kid: &str, claims: &Claims) -> String {
    let mut renamed = key.clone();
    renamed.kid = kid.to_owned();
    sign(&renamed, claims)
}

/// The gateway with `[[issuer]]` entries after the usual head, and routes `/admin` (role
/// admin) and `/` (any caller).
async fn start(setup: &Setup, issuers: &str) -> Gateway {
    let config = format!(
        "{}\n{issuers}\n[[route]]\npath = \"/admin\"\nupstream = \"app\"\nrequire = {{ roles = [\"admin\"] }}\n\n[[route]]\npath = \"/\"\nupstream = \"app\"\n",
        setup.head()
    );
    setup.start_with(&config).await
}

/// An `[[issuer]]` like a Keycloak realm: discovery, `preferred_username`,
/// `realm_access.roles`, RS256 and ES256.
fn keycloak_issuer(name: &str, idp: &Idp, extra: &str) -> String {
    format!(
        r#"[[issuer]]
name = "{name}"
issuer = "{issuer}"
discovery = true
audiences = ["gateway"]
algorithms = ["RS256", "ES256"]
username_claim = "preferred_username"
roles_claim = "realm_access.roles"
ca = "{name}-ca.pem"
{extra}
"#,
        issuer = idp.issuer(),
    )
}

/// Waits until `issuer`'s keys have been fetched `count` times successfully.
async fn keys_fetched(gw: &Gateway, issuer: &str, count: f64) {
    let admin = gw.admin.expect("admin listener");
    let series = format!(r#"authgate_jwks_fetches_total{{issuer="{issuer}",result="ok"}}"#);
    for _ in 0..100 {
        if common::metrics::value(&common::metrics::scrape(admin).await, &series) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{issuer}: keys never fetched");
}

async fn get(client: &reqwest::Client, url: &str, token: &str) -> u16 {
    client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_other_issuers_pass_with_their_mapped_identity_and_nothing_else_does() {
    let setup = Setup::new(Algorithm::ES256).await;
    let dir = setup.dir.path();
    let corp = Idp::start(dir, "corp").await;
    let rsa = idp_key(Algorithm::RS256, "corp-rsa");
    let ec = idp_key(Algorithm::ES256, "corp-ec");
    // Published, but bound to an algorithm corp does not allow.
    let es384 = idp_key(Algorithm::ES384, "corp-es384");
    corp.publish(&rsa);
    corp.publish(&ec);
    corp.publish(&es384);
    let other = Idp::start(dir, "other").await;
    let other_key = idp_key(Algorithm::RS256, "other-rsa");
    other.publish(&other_key);
    let issuers = format!(
        "{}\n[[issuer]]\nname = \"other\"\nissuer = \"{}\"\njwks_uri = \"{}\"\naudiences = [\"gateway\"]\nca = \"other-ca.pem\"\n",
        keycloak_issuer("corp", &corp, ""),
        other.issuer(),
        other.jwks_uri(),
    );
    let gw = start(&setup, &issuers).await;
    keys_fetched(&gw, "corp", 1.0).await;
    keys_fetched(&gw, "other", 1.0).await;
    let client = setup.client();
    let url = gw.url("/admin/x");

    // RS256 and ES256: through, as the mapped user with the mapped roles.
    let claims = keycloak_claims(&corp.issuer(), "gateway", "alice", &["admin", "user"]);
    assert_eq!(get(&client, &url, &sign(&rsa, &claims)).await, 200);
    let claims = keycloak_claims(&corp.issuer(), "gateway", "bob", &["admin"]);
    assert_eq!(get(&client, &url, &sign(&ec, &claims)).await, 200);
    let received = setup.upstream.received();
    let identity: Vec<(&str, &str)> = received
        .iter()
        .map(|r| {
            (
                r.headers["x-auth-user"].to_str().expect("ascii"),
                r.headers["x-auth-roles"].to_str().expect("ascii"),
            )
        })
        .collect();
    assert_eq!(identity, [("alice", "admin,user"), ("bob", "admin")]);
    // Roles feed `require.roles`: a user without admin is refused there, served elsewhere.
    let claims = keycloak_claims(&corp.issuer(), "gateway", "carol", &["user"]);
    let token = sign(&rsa, &claims);
    assert_eq!(get(&client, &url, &token).await, 403);
    assert_eq!(get(&client, &gw.url("/x"), &token).await, 200);
    // The other issuer: `sub` by default, no roles.
    let mut claims = keycloak_claims(&other.issuer(), "gateway", "dave", &[]);
    claims.sub = "system:serviceaccount:ns:dave".into();
    assert_eq!(
        get(&client, &gw.url("/x"), &sign(&other_key, &claims)).await,
        200
    );
    let last = setup.upstream.received().pop().expect("received");
    assert_eq!(last.headers["x-auth-user"], "system:serviceaccount:ns:dave");
    setup.upstream.clear();

    let refused: Vec<(&str, String)> = vec![
        (
            "wrong aud",
            sign(
                &rsa,
                &keycloak_claims(&corp.issuer(), "someone-else", "eve", &["admin"]),
            ),
        ),
        (
            "unknown iss",
            sign(
                &rsa,
                &keycloak_claims("https://evil.example", "gateway", "eve", &["admin"]),
            ),
        ),
        (
            "an algorithm corp does not allow",
            sign(
                &es384,
                &keycloak_claims(&corp.issuer(), "gateway", "eve", &["admin"]),
            ),
        ),
        ("RS384 in the header of an RS256 key", {
            let mut key = idp_key(Algorithm::RS384, "corp-rsa");
            key.kid = "corp-rsa".into();
            sign(
                &key,
                &keycloak_claims(&corp.issuer(), "gateway", "eve", &["admin"]),
            )
        }),
        ("HS256 keyed with the public key's bytes", {
            let claims = keycloak_claims(&corp.issuer(), "gateway", "eve", &["admin"]);
            let jwk = serde_json::to_string(rsa.public_jwk.as_ref().expect("jwk")).expect("json");
            hs256_token(
                r#"{"alg":"HS256","kid":"corp-rsa"}"#,
                &serde_json::to_string(&claims_json(&claims)).expect("json"),
                jwk.as_bytes(),
            )
        }),
        (
            "corp's iss, other's key (its kid)",
            sign(
                &other_key,
                &keycloak_claims(&corp.issuer(), "gateway", "eve", &["admin"]),
            ),
        ),
        (
            "corp's iss, other's key under corp's kid",
            sign_with_kid(
                &other_key,
                "corp-rsa",
                &keycloak_claims(&corp.issuer(), "gateway", "eve", &["admin"]),
            ),
        ),
        (
            "other's iss, corp's key",
            sign(
                &rsa,
                &keycloak_claims(&other.issuer(), "gateway", "eve", &["admin"]),
            ),
        ),
        ("no exp", {
            let mut claims = keycloak_claims(&corp.issuer(), "gateway", "eve", &["admin"]);
            claims.exp = None;
            sign(&rsa, &claims)
        }),
    ];
    for (what, token) in &refused {
        assert_eq!(get(&client, &url, token).await, 401, "{what}");
    }
    assert!(
        setup.upstream.received().is_empty(),
        "nothing refused reached the upstream"
    );
    gw.stop().await;
}

/// Claims as the JSON a signer would write (typed fields and `extra` side by side).
fn claims_json(claims: &Claims) -> Value {
    let mut value = serde_json::to_value(claims).expect("json");
    for (k, v) in &claims.extra {
        value[k] = v.clone();
    }
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_accepted_on_its_first_request() {
    let setup = Setup::new(Algorithm::ES256).await;
    let idp = Idp::start(setup.dir.path(), "corp").await;
    let old = idp_key(Algorithm::RS256, "2026-01");
    idp.publish(&old);
    let gw = start(&setup, &keycloak_issuer("corp", &idp, "")).await;
    keys_fetched(&gw, "corp", 1.0).await;
    let before = idp.fetches();

    let new = idp_key(Algorithm::ES256, "2026-02");
    idp.publish(&new);
    let claims = keycloak_claims(&idp.issuer(), "gateway", "alice", &["admin"]);
    let client = setup.client();
    assert_eq!(
        get(&client, &gw.url("/admin"), &sign(&new, &claims)).await,
        200
    );
    assert_eq!(idp.fetches(), before + 1, "one refetch for the new kid");
    // The old key still verifies, with no further fetch.
    let claims = keycloak_claims(&idp.issuer(), "gateway", "bob", &["admin"]);
    assert_eq!(
        get(&client, &gw.url("/admin"), &sign(&old, &claims)).await,
        200
    );
    assert_eq!(idp.fetches(), before + 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_causes_at_most_one_fetch() {
    let setup = Setup::new(Algorithm::ES256).await;
    let idp = Idp::start(setup.dir.path(), "corp").await;
    let key = idp_key(Algorithm::RS256, "known");
    idp.publish(&key);
    let gw = start(&setup, &keycloak_issuer("corp", &idp, "")).await;
    keys_fetched(&gw, "corp", 1.0).await;
    let before = idp.fetches();

    let client = setup.client();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let claims = keycloak_claims(&idp.issuer(), "gateway", &format!("u{i}"), &[]);
        let token = sign_with_kid(&key, &format!("made-up-{}", rand()), &claims);
        let (client, url) = (client.clone(), gw.url("/x"));
        tasks.spawn(async move { get(&client, &url, &token).await });
    }
    let statuses = tasks.join_all().await;
    let elapsed = started.elapsed();
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let fetched = idp.fetches() - before;
    eprintln!("200 unknown kids: {fetched} fetch(es) in {elapsed:?}");
    assert!(fetched <= 1, "{fetched} fetches");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    // The known key is unaffected.
    let claims = keycloak_claims(&idp.issuer(), "gateway", "alice", &[]);
    assert_eq!(get(&client, &gw.url("/x"), &sign(&key, &claims)).await, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_keys_keep_working_while_the_issuer_is_down() {
    let setup = Setup::new(Algorithm::ES256).await;
    let idp = Idp::start(setup.dir.path(), "corp").await;
    let key = idp_key(Algorithm::RS256, "known");
    idp.publish(&key);
    let gw = start(&setup, &keycloak_issuer("corp", &idp, "timeout = \"1s\"")).await;
    keys_fetched(&gw, "corp", 1.0).await;
    let client = setup.client();
    let admin = gw.admin.expect("admin");
    let readyz = format!("http://{admin}/readyz");
    let ready: Value = reqwest::get(&readyz)
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready, json!({ "status": "ready" }));

    idp.set_mode(Mode::Down);
    // An unknown kid makes the gateway try, and fail, to fetch.
    let claims = keycloak_claims(&idp.issuer(), "gateway", "x", &[]);
    assert_eq!(
        get(&client, &gw.url("/x"), &sign_with_kid(&key, "new", &claims)).await,
        401
    );
    let claims = keycloak_claims(&idp.issuer(), "gateway", "alice", &["admin"]);
    assert_eq!(
        get(&client, &gw.url("/admin"), &sign(&key, &claims)).await,
        200
    );

    let response = reqwest::get(&readyz).await.expect("readyz");
    assert_eq!(response.status(), 200);
    let ready: Value = response.json().await.expect("json");
    assert_eq!(
        ready,
        json!({ "status": "ready", "stale_issuers": ["corp"] })
    );
    let metrics = common::metrics::scrape(admin).await;
    assert_eq!(
        common::metrics::value(&metrics, r#"authgate_issuer_keys_stale{issuer="corp"}"#),
        1.0
    );
    assert_eq!(
        common::metrics::value(
            &metrics,
            r#"authgate_jwks_fetches_total{issuer="corp",result="error"}"#
        ),
        1.0
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_starts_while_the_issuer_is_down_and_takes_its_keys_later() {
    let setup = Setup::new(Algorithm::ES256).await;
    let idp = Idp::start(setup.dir.path(), "corp").await;
    let key = idp_key(Algorithm::RS256, "known");
    idp.publish(&key);
    idp.set_mode(Mode::Down);
    let gw = start(&setup, &keycloak_issuer("corp", &idp, "timeout = \"1s\"")).await;
    let client = setup.client();
    let claims = keycloak_claims(&idp.issuer(), "gateway", "alice", &[]);
    let token = sign(&key, &claims);
    assert_eq!(get(&client, &gw.url("/x"), &token).await, 401);
    idp.set_mode(Mode::Up);
    // The background retry (5 s after the first failure) brings the keys.
    keys_fetched(&gw, "corp", 1.0).await;
    assert_eq!(get(&client, &gw.url("/x"), &token).await, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_jwks_endpoint_never_delays_a_known_key() {
    let setup = Setup::new(Algorithm::ES256).await;
    let idp = Idp::start(setup.dir.path(), "corp").await;
    let key = idp_key(Algorithm::RS256, "known");
    idp.publish(&key);
    let gw = start(&setup, &keycloak_issuer("corp", &idp, "timeout = \"1s\"")).await;
    keys_fetched(&gw, "corp", 1.0).await;
    let client = setup.client();
    // Warm the connection so the timings below are the gateway's, not a handshake's.
    let claims = keycloak_claims(&idp.issuer(), "gateway", "warm", &[]);
    assert_eq!(get(&client, &gw.url("/x"), &sign(&key, &claims)).await, 200);

    idp.set_mode(Mode::Hang);
    let unknown = {
        let claims = keycloak_claims(&idp.issuer(), "gateway", "x", &[]);
        let token = sign_with_kid(&key, "rotated", &claims);
        let (client, url) = (client.clone(), gw.url("/x"));
        tokio::spawn(async move {
            let started = Instant::now();
            let status = get(&client, &url, &token).await;
            (status, started.elapsed())
        })
    };
    // While that refetch hangs, fresh tokens (no cache) of the known key go through.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(idp.fetches() >= 2, "the refetch is hanging");
    let mut slowest = Duration::ZERO;
    for i in 0..5 {
        let claims = keycloak_claims(&idp.issuer(), "gateway", &format!("u{i}"), &[]);
        let started = Instant::now();
        assert_eq!(get(&client, &gw.url("/x"), &sign(&key, &claims)).await, 200);
        slowest = slowest.max(started.elapsed());
    }
    let (status, waited) = unknown.await.expect("join");
    eprintln!(
        "known key during a hanging refetch: slowest {slowest:?}; unknown kid: {status} after {waited:?}"
    );
    assert!(slowest < Duration::from_millis(300), "{slowest:?}");
    assert_eq!(status, 401);
    assert!(waited <= Duration::from_millis(1500), "{waited:?}");
    assert!(
        waited >= Duration::from_millis(900),
        "waited for the fetch: {waited:?}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_token_revoked_by_jti_is_refused_even_cached() {
    let setup = Setup::new(Algorithm::ES256).await;
    let idp = Idp::start(setup.dir.path(), "corp").await;
    let key = idp_key(Algorithm::RS256, "known");
    idp.publish(&key);
    let issuer = format!(
        "{}\n[store]\nurl = \"sqlite://authgate.db\"\n",
        keycloak_issuer("corp", &idp, "")
    );
    let gw = start(&setup, &issuer).await;
    keys_fetched(&gw, "corp", 1.0).await;
    let client = setup.client();
    let claims = keycloak_claims(&idp.issuer(), "gateway", "alice", &[]);
    let token = sign(&key, &claims);
    assert_eq!(get(&client, &gw.url("/x"), &token).await, 200);
    assert_eq!(get(&client, &gw.url("/x"), &token).await, 200, "now cached");

    let config = authgate::config::Config::load(
        &gw.dir.join("gateway.toml"),
        authgate::config::LoadOptions::default(),
    )
    .expect("config");
    let store = authgate::store::open(config.store.as_ref().expect("store")).expect("store");
    store
        .revoke_token(
            claims.jti.as_deref().expect("jti"),
            claims.exp.expect("exp"),
        )
        .expect("revoke");
    let mut refused = false;
    for _ in 0..40 {
        if get(&client, &gw.url("/x"), &token).await == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "a revoked external token still passes");
    gw.stop().await;
}
