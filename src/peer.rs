//! Where a request comes from: the connection's peer, whether it is a trusted proxy, the
//! client's address behind such proxies, and the forwarded chain the upstream gets.
//!
//! A peer's own forwarding headers (`X-Forwarded-For`, `-Proto`, `-Host`, a request id)
//! are believed only when the peer's address is in `server.trusted_proxies`.
//!
//! A TLS peer's verified client certificate is read here, once per connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use rustls::pki_types::CertificateDer;

use crate::client_cert::{CertError, ClientCert};
use crate::headers::X_FORWARDED_FOR;

/// Where a request came from, as the accepting socket saw it. Built once per connection.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    pub(crate) tls: bool,
    /// The peer's address as an `X-Forwarded-For` value, rendered once per connection.
    forwarded_for: HeaderValue,
    /// The client certificate rustls verified, if the peer presented one.
    client_cert: Option<Arc<ClientCert>>,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr, tls: bool) -> Peer {
        let ip = addr.ip().to_canonical();
        Peer {
            addr: SocketAddr::new(ip, addr.port()),
            tls,
            forwarded_for: HeaderValue::from_str(&ip.to_string())
                .expect("an IP address is a valid header value"),
            client_cert: None,
        }
    }

    /// A TLS peer, with the certificate chain rustls verified (its first is the client's
    /// own). rustls hands a server the chain only once it verified, so what is here is
    /// verified; one that cannot be read is an error, not a peer without a certificate.
    pub(crate) fn tls(
        addr: SocketAddr,
        chain: Option<&[CertificateDer<'_>]>,
    ) -> Result<Peer, CertError> {
        let client_cert = match chain.and_then(<[_]>::first) {
            Some(der) => Some(Arc::new(ClientCert::from_der(der)?)),
            None => None,
        };
        Ok(Peer {
            client_cert,
            ..Peer::new(addr, true)
        })
    }

    pub(crate) fn client_cert(&self) -> Option<&ClientCert> {
        self.client_cert.as_deref()
    }
}

/// The proxies whose forwarding headers are believed (`server.trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub(crate) fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(nets)
    }

    /// Whether the peer's own forwarding headers are believed.
    pub(crate) fn trust(&self, peer: &Peer) -> bool {
        self.contains(peer.addr.ip())
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the peer's, or behind trusted proxies the nearest address in
    /// `X-Forwarded-For` that is not one of them (the only one that cannot be forged).
    pub(crate) fn client_ip(&self, headers: &HeaderMap, peer: &Peer) -> IpAddr {
        let peer_ip = peer.addr.ip();
        if !self.contains(peer_ip) {
            return peer_ip;
        }
        let hops: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if self.contains(ip) => continue,
                Ok(ip) => return ip,
                Err(_) => break,
            }
        }
        peer_ip
    }
}

/// `X-Forwarded-For` as the upstream gets it: a trusted proxy's chain with the peer
/// appended, or the peer alone.
pub(crate) fn forwarded_for(headers: &HeaderMap, peer: &Peer, trusted: bool) -> HeaderValue {
    if trusted {
        let chain: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !chain.is_empty() {
            let text = format!("{}, {}", chain.join(", "), peer.addr.ip());
            if let Ok(value) = HeaderValue::from_str(&text) {
                return value;
            }
        }
    }
    peer.forwarded_for.clone()
}
