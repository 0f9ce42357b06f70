//! What a request head must be before anything else looks at it, beyond what hyper checks:
//! one framing, a method the gateway forwards, and one valid authority.
//!
//! Each refusal here closes a way to make the gateway and the upstream read one request
//! differently: two framings (smuggling), two authorities (routing or cache poisoning on
//! the upstream's side), a method that turns the connection into something else.

use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Version};

use crate::error::Error;
use crate::framing::ConflictingFraming;

/// The methods a route may forward; `CONNECT` is not one: a gateway that forwarded it
/// would open a tunnel to wherever the request names.
pub(crate) const FORWARDED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Refuses a head that the gateway and an upstream could read differently (400), or whose
/// method the gateway never forwards (405).
pub(crate) fn check<B>(req: &Request<B>) -> Result<(), Error> {
    if req.extensions().get::<ConflictingFraming>().is_some() {
        return Err(Error::BadRequest(
            "the request has both Content-Length and Transfer-Encoding",
        ));
    }
    if req.method() == Method::CONNECT {
        return Err(Error::MethodNotAllowed(FORWARDED_METHODS));
    }
    authority(req)
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host, and a valid one. RFC 9113
/// §8.3.1: `:authority` and `host`, when both are sent, say the same. An HTTP/1 target in
/// absolute form (`GET http://a/ HTTP/1.1`) names the host instead of Host (RFC 9112
/// §3.2.2), and the proxy forwards that one.
fn authority<B>(req: &Request<B>) -> Result<(), Error> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Error::BadRequest("more than one Host header"));
    }
    if let Some(host) = host
        && !is_valid_host(host)
    {
        return Err(Error::BadRequest("the Host header is not a valid host"));
    }
    match (req.uri().authority(), host) {
        (Some(target), _) if !is_valid_authority(target) => {
            Err(Error::BadRequest("the request target is not a valid host"))
        }
        (Some(target), Some(host))
            if req.version() == Version::HTTP_2
                && !target
                    .as_str()
                    .eq_ignore_ascii_case(host.to_str().unwrap_or_default()) =>
        {
            Err(Error::BadRequest(
                ":authority and Host name different hosts",
            ))
        }
        (Some(_), _) | (None, Some(_)) => Ok(()),
        // HTTP/1.0 predates Host; everything later names where it is going.
        (None, None) if req.version() < Version::HTTP_11 => Ok(()),
        (None, None) => Err(Error::BadRequest("the request has no Host header")),
    }
}

/// The authority the request names, as `check` accepted it: the target's (HTTP/2
/// `:authority`, an HTTP/1 absolute form), else `Host`.
pub(crate) fn host<B>(req: &Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => req.headers().get(header::HOST)?.to_str().ok(),
    }
}

fn is_valid_host(value: &HeaderValue) -> bool {
    Authority::try_from(value.as_bytes()).is_ok_and(|a| is_valid_authority(&a))
}

/// A host and an optional port, as Host takes them: no user info, a port that fits.
fn is_valid_authority(authority: &Authority) -> bool {
    !authority.as_str().is_empty()
        && !authority.as_str().contains('@')
        && port_fits(authority.as_str())
}

/// `http` parses the digits of any length and forgets a port that does not fit in 16 bits.
pub(crate) fn port_fits(authority: &str) -> bool {
    let after_host = authority.rfind(']').map_or(0, |at| at + 1);
    match authority[after_host..].rfind(':') {
        Some(at) => authority[after_host + at + 1..].parse::<u16>().is_ok(),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::builder().version(version).uri(uri);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn one_valid_host_passes() {
        for (version, uri, hosts) in [
            (Version::HTTP_11, "/a", &["example.com"][..]),
            (Version::HTTP_11, "/a", &["127.0.0.1:8443"]),
            (Version::HTTP_11, "/a", &["[::1]:80"]),
            (Version::HTTP_10, "/a", &[]),
            (Version::HTTP_2, "https://example.com/a", &[]),
            (Version::HTTP_2, "https://example.com/a", &["EXAMPLE.com"]),
            (Version::HTTP_2, "/a", &["example.com"]),
            // RFC 9112 §3.2.2: the absolute form's host wins over Host, and is forwarded.
            (Version::HTTP_11, "http://a.example/x", &["b.example"]),
        ] {
            let req = request(version, uri, hosts);
            assert!(check(&req).is_ok(), "{version:?} {uri} {hosts:?}");
        }
    }

    #[test]
    fn missing_repeated_invalid_or_conflicting_hosts_are_400() {
        for (version, uri, hosts) in [
            (Version::HTTP_11, "/a", &[][..]),
            (Version::HTTP_2, "/a", &[]),
            (Version::HTTP_11, "/a", &["a.example", "b.example"]),
            (Version::HTTP_11, "/a", &["a.example", "a.example"]),
            (Version::HTTP_11, "/a", &[""]),
            (Version::HTTP_11, "/a", &["a b"]),
            (Version::HTTP_11, "/a", &["evil.example/path"]),
            (Version::HTTP_11, "/a", &["user@example.com"]),
            (Version::HTTP_11, "/a", &["example.com:99999"]),
            (Version::HTTP_11, "/a", &["[::1]:65536"]),
            (Version::HTTP_11, "/a", &["example.com:"]),
            (Version::HTTP_2, "https://a.example/x", &["b.example"]),
            (Version::HTTP_11, "http://u@a.example/x", &["a.example"]),
        ] {
            let req = request(version, uri, hosts);
            assert!(
                matches!(check(&req), Err(Error::BadRequest(_))),
                "{version:?} {uri} {hosts:?}"
            );
        }
    }

    #[test]
    fn connect_is_never_forwarded() {
        let req = Request::builder()
            .method(Method::CONNECT)
            .uri("example.com:443")
            .header(header::HOST, "example.com:443")
            .body(())
            .expect("request");
        assert!(matches!(check(&req), Err(Error::MethodNotAllowed(_))));
    }
}
