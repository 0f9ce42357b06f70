//! rustls configuration from PEM bytes: the server side (ALPN `h2` and `http/1.1`, TLS 1.2
//! and 1.3 only, optional client-certificate verification) and the client side used for
//! https upstreams. Both use the aws-lc-rs provider explicitly, so nothing depends on a
//! process-wide default having been installed.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no PEM certificate found")]
    NoCertificate,
    #[error("no PEM private key found")]
    NoKey,
    #[error("the certificate and key were refused: {0}")]
    Refused(#[source] rustls::Error),
    #[error("a CA certificate was refused: {0}")]
    BadCa(#[source] rustls::Error),
    #[error("client certificate verification could not be set up: {0}")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

fn roots(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem)? {
        roots.add(cert).map_err(TlsError::BadCa)?;
    }
    Ok(roots)
}

/// Whether a client must present a certificate (`server.client_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client without one is served; one that presents a certificate that does not
    /// verify is still refused at the handshake.
    Optional,
    /// A client without one fails the handshake.
    Required,
}

/// The CA that issues client certificates, and whether one is required.
#[derive(Debug, Clone, Copy)]
pub struct ClientCa<'a> {
    pub pem: &'a [u8],
    pub auth: ClientAuth,
}

/// The listener's TLS configuration. With `client_ca`, a client certificate is verified
/// against it (mTLS), and required unless `client_ca.auth` is optional.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca: Option<ClientCa<'_>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(TlsError::Refused)?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca.pem)?), provider());
            let verifier = match ca.auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(verifier.build().map_err(TlsError::ClientVerifier)?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::Refused)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server's preference (rustls lists its strongest suites first), as auditors
    // such as testssl.sh expect of a browser-facing site.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// TLS for https upstreams: trust `ca_pem` when given, else the system's roots.
pub fn client_config(ca_pem: Option<&[u8]>) -> Result<ClientConfig, TlsError> {
    let roots = match ca_pem {
        Some(pem) => roots(pem)?,
        None => {
            let mut roots = RootCertStore::empty();
            // Unreadable system certificates are skipped: an upstream with its own `ca`
            // does not need them, and one without will fail its handshake visibly.
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            roots
        }
    };
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(TlsError::Refused)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// TLS for fetching an issuer's keys: the system's roots, and `extra_pem`'s besides them
/// (a private CA, say Kubernetes' own, next to the public ones a cloud provider uses).
pub fn client_config_with_system_roots(extra_pem: Option<&[u8]>) -> Result<ClientConfig, TlsError> {
    let mut roots = match extra_pem {
        Some(pem) => roots(pem)?,
        None => RootCertStore::empty(),
    };
    // Unreadable system certificates are skipped, as for upstreams.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(TlsError::Refused)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A client configuration for plain-http upstreams, which never use it: the connector type
/// is shared with https upstreams.
pub fn client_config_without_roots() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

/// A self-signed certificate for `localhost`, `127.0.0.1` and `::1`, as PEM (certificate,
/// private key): development material only.
pub fn generate_dev_certificate() -> Result<(String, String), rcgen::Error> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(names)?;
    Ok((cert.pem(), signing_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certificate_makes_a_server_config_with_alpn() {
        let (cert, key) = generate_dev_certificate().expect("generate");
        let config = server_config(cert.as_bytes(), key.as_bytes(), None).expect("config");
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(matches!(
            server_config(b"junk", key.as_bytes(), None),
            Err(TlsError::NoCertificate)
        ));
        assert!(matches!(
            server_config(cert.as_bytes(), b"junk", None),
            Err(TlsError::NoKey)
        ));
    }
}
