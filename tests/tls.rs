//! TLS on the gateway's public listener, through the real gateway: HTTP/2 negotiated by
//! ALPN, plain HTTP when `tls` is omitted, the TLS handshake timeout, client certificates
//! (mTLS), and the development certificate generated when missing.

mod common;

use std::time::{Duration, Instant};

use authgate::jwt::Algorithm;
use common::{Gateway, Setup, Upstream};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_is_negotiated_by_alpn_and_forwarded() {
    let setup = Setup::new(Algorithm::ES256).await;
    let gw = setup.start().await;
    let token = setup.token("alice", &["admin"]);
    let (status, version, body) =
        common::h2_get(gw.addr, &setup.pki.ca_pem, "/admin/h2?x=1", &token).await;
    assert_eq!(status, 200);
    assert_eq!(version, http::Version::HTTP_2);
    assert!(body.contains("\"user\":\"alice\""), "{body}");
    let got = setup.upstream.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path_and_query, "/admin/h2?x=1");
    assert_eq!(
        got[0].version,
        http::Version::HTTP_11,
        "the upstream is spoken to in HTTP/1.1"
    );
    assert_eq!(
        got[0].headers["host"],
        format!("localhost:{}", gw.addr.port())
    );
    assert_eq!(
        got[0].headers["x-forwarded-host"],
        format!("localhost:{}", gw.addr.port())
    );
    // Refusals over HTTP/2 too.
    let (status, _, _) =
        common::h2_get(gw.addr, &setup.pki.ca_pem, "/admin/h2", "bad.token.here").await;
    assert_eq!(status, 401);
    assert_eq!(setup.upstream.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_served_when_tls_is_omitted() {
    let setup = Setup::new(Algorithm::HS256).await;
    let config = setup.standard_config().replace(
        "tls = { cert = \"server.crt\", key = \"server.key\" }\n",
        "",
    );
    let gw = setup.start_with(&config).await;
    let resp = reqwest::Client::new()
        .get(gw.http_url("/x"))
        .bearer_auth(setup.token("alice", &[]))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let got = setup.upstream.received();
    assert_eq!(got[0].headers["x-forwarded-proto"], "http");
    assert_eq!(got[0].headers["x-auth-user"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_is_cut_off() {
    let setup = Setup::new(Algorithm::HS256).await;
    let config = setup.standard_config().replace(
        "listen = \"127.0.0.1:0\"\ntls",
        "listen = \"127.0.0.1:0\"\ntls_handshake_timeout = \"500ms\"\ntls",
    );
    let gw = setup.start_with(&config).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    // Send nothing: the gateway must close the socket at its handshake timeout.
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed by the gateway: {read:?}"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    // A TLS 1.1-only or garbage client is refused without affecting others.
    stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    assert!(
        !String::from_utf8_lossy(&out).contains("200"),
        "no HTTP over a TLS port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_requires_a_client_certificate_from_the_ca() {
    let setup = Setup::new(Algorithm::HS256).await;
    let config = setup.standard_config().replace(
        "tls = { cert = \"server.crt\", key = \"server.key\" }",
        "tls = { cert = \"server.crt\", key = \"server.key\" }\nclient_ca = \"ca.crt\"",
    );
    let gw = setup.start_with(&config).await;
    let token = setup.token("alice", &[]);

    let without = setup
        .client()
        .get(gw.url("/x"))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(
        without.is_err(),
        "a client without a certificate is refused at the handshake"
    );

    let identity = reqwest::Identity::from_pem(
        format!("{}{}", setup.pki.client_cert_pem, setup.pki.client_key_pem).as_bytes(),
    )
    .expect("identity");
    let with = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(setup.pki.ca_pem.as_bytes()).expect("ca")])
        .identity(identity)
        .build()
        .expect("client")
        .get(gw.url("/x"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(with.status(), 200);
    assert_eq!(setup.upstream.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_material_is_generated_when_missing_and_enabled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream = Upstream::start().await;
    let config = format!(
        r#"[server]
listen = "127.0.0.1:0"
tls = {{ cert = "certs/server.crt", key = "certs/server.key" }}

[tokens]
algorithm = "ES256"
signing_key = "certs/jwt-signing.pem"

[dev]
generate_missing = true

[[upstream]]
name = "app"
url = "{}"

[[route]]
path = "/"
upstream = "app"
auth = "public"
"#,
        upstream.url()
    );
    let gw = Gateway::start(dir.path(), &config).await;
    for file in [
        "certs/server.crt",
        "certs/server.key",
        "certs/jwt-signing.pem",
    ] {
        assert!(dir.path().join(file).exists(), "{file} generated");
    }
    let cert = std::fs::read_to_string(dir.path().join("certs/server.crt")).expect("cert");
    let resp = common::client(&cert, true)
        .get(gw.url("/x"))
        .send()
        .await
        .expect("send");
    assert_eq!(
        resp.status(),
        200,
        "the generated certificate serves localhost"
    );
    gw.stop().await;
}
