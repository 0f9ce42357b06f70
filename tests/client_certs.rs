//! Client certificates as a caller identity, through the real gateway over real TLS:
//! `auth = "client_cert"` routes admit services by the certificate alone, as the
//! `[[client_identity]]` that names it; the verified certificate goes upstream in
//! `X-Forwarded-Client-Cert` on every route, and no client copy of that header ever does.

mod common;

use authgate::jwt::Algorithm;
use common::{Gateway, Setup};
use http::HeaderMap;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, SanType,
};

/// A CA for client certificates (written as `clients-ca.crt`), and another that the
/// gateway does not trust.
struct ClientPki {
    ca: Issuer<'static, KeyPair>,
    other: Issuer<'static, KeyPair>,
}

/// A client certificate: the identity reqwest presents, and the DER the gateway hashes.
struct ClientCert {
    identity: reqwest::Identity,
    der: Vec<u8>,
}

fn new_ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().expect("ca key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).expect("ca cert").pem();
    (Issuer::new(params, key), pem)
}

impl ClientPki {
    fn write(setup: &Setup) -> ClientPki {
        let (ca, pem) = new_ca("clients CA");
        std::fs::write(setup.dir.path().join("clients-ca.crt"), pem).expect("write");
        let (other, _) = new_ca("someone else's CA");
        ClientPki { ca, other }
    }

    /// A certificate issued by `issuer` with this subject and these alternative names.
    fn issue(
        issuer: &Issuer<'static, KeyPair>,
        subject: &[(DnType, &str)],
        sans: Vec<SanType>,
    ) -> ClientCert {
        let key = KeyPair::generate().expect("client key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, issuer).expect("client cert");
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        ClientCert {
            identity: reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"),
            der: cert.der().to_vec(),
        }
    }

    fn spiffe(&self, id: &str) -> ClientCert {
        ClientPki::issue(
            &self.ca,
            &[
                (DnType::OrganizationName, "Example"),
                (DnType::CommonName, "svc"),
            ],
            vec![uri(id)],
        )
    }
}

fn uri(id: &str) -> SanType {
    SanType::URI(id.try_into().expect("ia5"))
}

const BILLING: &str = "spiffe://cluster/ns/prod/sa/billing";

/// The standard set-up's head with `client_ca` and `client_auth`, then client_cert routes,
/// a public route, a token route, and the identities.
fn config(setup: &Setup, client_auth: &str, server_extra: &str) -> String {
    let head = setup.head().replace(
        "tls = { cert = \"server.crt\", key = \"server.key\" }\n",
        &format!(
            "tls = {{ cert = \"server.crt\", key = \"server.key\" }}\nclient_ca = \"clients-ca.crt\"\nclient_auth = \"{client_auth}\"\n{server_extra}"
        ),
    );
    assert!(head.contains("client_ca"), "the head names tls");
    format!(
        r#"{head}
[[route]]
path = "/svc"
upstream = "app"
auth = "client_cert"

[[route]]
path = "/payments"
upstream = "app"
auth = "client_cert"
require = {{ roles = ["payments"] }}

[[route]]
path = "/public"
upstream = "app"
auth = "public"

[[route]]
path = "/"
upstream = "app"

[[client_identity]]
name = "billing"
roles = ["payments", "read"]
match = {{ uri = "spiffe://cluster/ns/*/sa/billing" }}

[[client_identity]]
name = "reports"
roles = ["read"]
match = {{ uri = "spiffe://cluster/ns/*/sa/reports" }}

[[client_identity]]
name = "web"
match = {{ dns = "*.web.svc" }}

[[client_identity]]
name = "legacy"
match = {{ cn = "legacy-*" }}
"#
    )
}

/// A client trusting the server's CA, presenting `cert` if given.
fn client(setup: &Setup, cert: Option<&ClientCert>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(setup.pki.ca_pem.as_bytes()).expect("ca")])
        .timeout(std::time::Duration::from_secs(20));
    if let Some(cert) = cert {
        builder = builder.identity(cert.identity.clone());
    }
    builder.build().expect("client")
}

async fn get(
    setup: &Setup,
    gw: &Gateway,
    cert: Option<&ClientCert>,
    path: &str,
) -> (u16, serde_json::Value, HeaderMap) {
    let resp = client(setup, cert)
        .get(gw.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.expect("a JSON body");
    (status, body, headers)
}

fn sha256_hex(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every value the upstream got under a name that folds to `x-forwarded-client-cert`.
fn xfcc_values(headers: &HeaderMap) -> Vec<String> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().replace('_', "-") == "x-forwarded-client-cert")
        .map(|(_, value)| value.to_str().expect("ascii").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spiffe_certificate_is_the_caller_its_client_identity_names() {
    let setup = Setup::new(Algorithm::ES256).await;
    let pki = ClientPki::write(&setup);
    let gw = setup.start_with(&config(&setup, "optional", "")).await;
    let billing = pki.spiffe(BILLING);

    let (status, body, _) = get(&setup, &gw, Some(&billing), "/svc/orders?x=1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "billing");
    let got = setup.upstream.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path_and_query, "/svc/orders?x=1");
    assert_eq!(got[0].headers["x-auth-user"], "billing");
    assert_eq!(got[0].headers["x-auth-roles"], "payments,read");
    assert_eq!(
        xfcc_values(&got[0].headers),
        [format!(
            "Hash={};Subject=\"CN=svc,O=Example\";URI={BILLING}",
            sha256_hex(&billing.der)
        )]
    );

    // Its roles meet a route's requirement; another service's do not.
    setup.upstream.clear();
    let (status, _, _) = get(&setup, &gw, Some(&billing), "/payments").await;
    assert_eq!(status, 200);
    let reports = pki.spiffe("spiffe://cluster/ns/prod/sa/reports");
    let (status, body, _) = get(&setup, &gw, Some(&reports), "/payments").await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "insufficient_scope");
    assert_eq!(
        setup.upstream.paths(),
        ["/payments"],
        "only billing's request went up"
    );
    let (status, body, _) = get(&setup, &gw, Some(&reports), "/svc").await;
    assert_eq!(
        (status, &body["user"]),
        (200, &serde_json::json!("reports"))
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cert_route_refuses_no_certificate_and_an_unnamed_one() {
    let setup = Setup::new(Algorithm::ES256).await;
    let pki = ClientPki::write(&setup);
    let gw = setup.start_with(&config(&setup, "optional", "")).await;

    // A verified certificate that no [[client_identity]] names: 403.
    let intruder = pki.spiffe("spiffe://cluster/ns/prod/sa/intruder");
    let (status, body, headers) = get(&setup, &gw, Some(&intruder), "/svc").await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "unknown_client_certificate");
    assert!(headers.get("www-authenticate").is_none());
    // A URI outside the pattern's segment: `*` does not cross `/`.
    let nested = pki.spiffe("spiffe://cluster/ns/a/b/sa/billing");
    let (status, _, _) = get(&setup, &gw, Some(&nested), "/svc").await;
    assert_eq!(status, 403);

    // No certificate: 401 with the bare challenge, whatever token comes along.
    let (status, body, headers) = get(&setup, &gw, None, "/svc").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "client_certificate_required");
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"authgate\"");
    let resp = client(&setup, None)
        .get(gw.url("/svc"))
        .bearer_auth(setup.token("alice", &["payments"]))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401, "a token is no certificate");
    assert!(
        setup.upstream.received().is_empty(),
        "nothing went upstream"
    );

    // Without a certificate the other routes work as ever, with no XFCC upstream.
    let (status, _, _) = get(&setup, &gw, None, "/public/x").await;
    assert_eq!(status, 200);
    let resp = client(&setup, None)
        .get(gw.url("/api"))
        .bearer_auth(setup.token("alice", &[]))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let got = setup.upstream.received();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| xfcc_values(&r.headers).is_empty()));
    assert_eq!(got[1].headers["x-auth-user"], "alice");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_and_cn_certificates_are_named_by_their_own_kind_of_name() {
    let setup = Setup::new(Algorithm::ES256).await;
    let pki = ClientPki::write(&setup);
    let gw = setup.start_with(&config(&setup, "optional", "")).await;

    // Only a DNS name: the `dns` identity; its CN is not looked at.
    let web = ClientPki::issue(
        &pki.ca,
        &[(DnType::CommonName, "legacy-web")],
        vec![SanType::DnsName("api.web.svc".try_into().expect("ia5"))],
    );
    let (status, body, _) = get(&setup, &gw, Some(&web), "/svc").await;
    assert_eq!((status, &body["user"]), (200, &serde_json::json!("web")));
    // Only a common name: the `cn` identity.
    let legacy = ClientPki::issue(&pki.ca, &[(DnType::CommonName, "legacy-batch")], vec![]);
    let (status, body, _) = get(&setup, &gw, Some(&legacy), "/svc").await;
    assert_eq!((status, &body["user"]), (200, &serde_json::json!("legacy")));
    // A DNS name one label too deep for `*.web.svc`.
    let deep = ClientPki::issue(
        &pki.ca,
        &[],
        vec![SanType::DnsName("a.api.web.svc".try_into().expect("ia5"))],
    );
    let (status, _, _) = get(&setup, &gw, Some(&deep), "/svc").await;
    assert_eq!(status, 403);

    let got = setup.upstream.received();
    assert_eq!(got.len(), 2);
    assert_eq!(
        xfcc_values(&got[0].headers),
        [format!(
            "Hash={};Subject=\"CN=legacy-web\";DNS=api.web.svc",
            sha256_hex(&web.der)
        )]
    );
    assert_eq!(got[1].headers["x-auth-user"], "legacy");
    assert_eq!(
        xfcc_values(&got[1].headers),
        [format!(
            "Hash={};Subject=\"CN=legacy-batch\"",
            sha256_hex(&legacy.der)
        )]
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_fails_the_handshake() {
    let setup = Setup::new(Algorithm::ES256).await;
    let pki = ClientPki::write(&setup);
    let gw = setup.start_with(&config(&setup, "optional", "")).await;
    let forged = ClientPki::issue(
        &pki.other,
        &[(DnType::CommonName, "svc")],
        vec![uri(BILLING)],
    );
    for path in ["/svc", "/public"] {
        let sent = client(&setup, Some(&forged)).get(gw.url(path)).send().await;
        assert!(sent.is_err(), "{path}: refused at the handshake: {sent:?}");
    }
    assert!(setup.upstream.received().is_empty());
    // The gateway still serves everyone else.
    let (status, _, _) = get(&setup, &gw, Some(&pki.spiffe(BILLING)), "/svc").await;
    assert_eq!(status, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_auth_refuses_a_connection_without_a_certificate() {
    let setup = Setup::new(Algorithm::ES256).await;
    let pki = ClientPki::write(&setup);
    let gw = setup.start_with(&config(&setup, "required", "")).await;
    let sent = client(&setup, None).get(gw.url("/public")).send().await;
    assert!(sent.is_err(), "refused at the handshake: {sent:?}");
    assert!(setup.upstream.received().is_empty());
    let (status, body, _) = get(&setup, &gw, Some(&pki.spiffe(BILLING)), "/svc").await;
    assert_eq!(
        (status, &body["user"]),
        (200, &serde_json::json!("billing"))
    );
    gw.stop().await;
}

/// Client copies of `X-Forwarded-Client-Cert`, in several spellings and copies, as raw
/// header lines.
const FORGED_XFCC: &str = "X-Forwarded-Client-Cert: Hash=forged;URI=spiffe://cluster/ns/prod/sa/admin\r\n\
x-forwarded-client-cert: Hash=forged2\r\n\
X-FORWARDED-CLIENT-CERT: Hash=forged3\r\n\
X_Forwarded_Client_Cert: Hash=forged4\r\n\
x-forwarded_client-CERT: Hash=forged5\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_copy_of_xfcc_never_reaches_the_upstream() {
    // From any peer, a trusted proxy's too: only the gateway verified the certificate.
    for trusted in ["", "trusted_proxies = [\"127.0.0.0/8\"]\n"] {
        let setup = Setup::new(Algorithm::ES256).await;
        let pki = ClientPki::write(&setup);
        let gw = setup.start_with(&config(&setup, "optional", trusted)).await;

        // Without a certificate, on a public route: no XFCC at all upstream.
        let (status, text) =
            common::raw_get(gw.addr, &setup.pki.ca_pem, "/public/raw", FORGED_XFCC).await;
        assert_eq!(status, 200, "{text}");
        let got = setup.upstream.received();
        assert_eq!(got.len(), 1);
        assert_eq!(
            xfcc_values(&got[0].headers),
            Vec::<String>::new(),
            "{trusted}"
        );

        // With a certificate, on a public route and a client_cert route: exactly the
        // gateway's value.
        let billing = pki.spiffe(BILLING);
        let ours = format!(
            "Hash={};Subject=\"CN=svc,O=Example\";URI={BILLING}",
            sha256_hex(&billing.der)
        );
        for path in ["/public/x", "/svc/x"] {
            setup.upstream.clear();
            let resp = client(&setup, Some(&billing))
                .get(gw.url(path))
                .header("x-forwarded-client-cert", "Hash=forged")
                .header("X-Forwarded-Client-Cert", "Hash=forged2")
                .header("X_Forwarded_Client_Cert", "Hash=forged3")
                .header("x-forwarded_client-cert", "Hash=forged4")
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status(), 200, "{path}");
            let got = setup.upstream.received();
            assert_eq!(got.len(), 1);
            assert_eq!(
                xfcc_values(&got[0].headers),
                [ours.as_str()],
                "{path} {trusted}"
            );
        }
        gw.stop().await;
    }
}
