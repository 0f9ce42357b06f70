//! Client certificates as a caller identity: the certificate a TLS client presented, read
//! once per connection (its SHA-256, subject, URI and DNS names, common names) with its
//! `X-Forwarded-Client-Cert` value rendered then too, and the `[[client_identity]]`
//! patterns that give such a certificate a name and roles.
//!
//! Only certificates that rustls verified against `server.client_ca` ever get here: a
//! rustls server is handed the peer's certificates only once they verified, so a
//! [`ClientCert`] exists only for a verified one.
//!
//! A certificate's identity is its URI names (SPIFFE IDs), else its DNS names, else its
//! common names: a pattern applies only to that kind of name, so a certificate with a
//! SPIFFE ID is never named by a `dns` or `cn` pattern, whatever else it carries.

mod pattern;

use std::fmt::Write as _;

use http::HeaderValue;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer as _, X509Certificate};
use x509_parser::x509::X509Name;

pub use pattern::CertPattern;

/// A verified client certificate, as the gateway uses it. Built once per connection.
#[derive(Debug)]
pub struct ClientCert {
    /// The SHA-256 of the DER, in lower-case hex (Envoy's `Hash`).
    pub hash: String,
    /// The subject as an RFC 4514 string, in visible ASCII (other bytes `\XX`-escaped).
    pub subject: String,
    /// URI subject alternative names (a SPIFFE ID is one), in visible ASCII.
    pub uris: Vec<String>,
    /// DNS subject alternative names, in visible ASCII.
    pub dns: Vec<String>,
    /// The subject's common names that are strings.
    pub cns: Vec<String>,
    /// The `X-Forwarded-Client-Cert` value the upstream gets.
    pub xfcc: HeaderValue,
}

/// Which names a certificate is known by: the first kind it has of URI, DNS, CN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Uri,
    Dns,
    Cn,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("the client certificate cannot be parsed: {0}")]
    Unparsable(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    #[error("the client certificate's extensions cannot be read: {0}")]
    BadExtensions(#[source] x509_parser::error::X509Error),
}

impl ClientCert {
    /// Reads a verified certificate's DER.
    pub fn from_der(der: &[u8]) -> Result<ClientCert, CertError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(CertError::Unparsable)?;
        let mut uris = Vec::new();
        let mut dns = Vec::new();
        if let Some(san) = cert
            .subject_alternative_name()
            .map_err(CertError::BadExtensions)?
        {
            for name in &san.value.general_names {
                // A name that cannot go in a header is left out, for matching too: the
                // upstream should see every name the gateway decided on.
                match name {
                    GeneralName::URI(uri) if is_visible_ascii(uri) => uris.push((*uri).to_owned()),
                    GeneralName::DNSName(name) if is_visible_ascii(name) => {
                        dns.push((*name).to_owned());
                    }
                    _ => {}
                }
            }
        }
        let cns = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(str::to_owned)
            .collect();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        let hash = digest.as_ref().iter().fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
        let subject = rfc4514(cert.subject());
        let xfcc = xfcc(&hash, &subject, &uris, &dns);
        Ok(ClientCert {
            hash,
            subject,
            uris,
            dns,
            cns,
            xfcc,
        })
    }

    /// The kind of name this certificate is known by.
    pub fn kind(&self) -> NameKind {
        if !self.uris.is_empty() {
            NameKind::Uri
        } else if !self.dns.is_empty() {
            NameKind::Dns
        } else {
            NameKind::Cn
        }
    }

    /// The names of this certificate's kind.
    pub fn names(&self) -> &[String] {
        match self.kind() {
            NameKind::Uri => &self.uris,
            NameKind::Dns => &self.dns,
            NameKind::Cn => &self.cns,
        }
    }
}

/// One `[[client_identity]]`: the certificates `pattern` matches are the caller `name`
/// with `roles`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub name: String,
    pub roles: Vec<String>,
    pub pattern: CertPattern,
}

fn is_visible_ascii(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic())
}

/// `name` as RFC 4514 writes it: the last RDN first, `,` between RDNs and `+` inside one,
/// short names where the registry has them (else the dotted OID). Values are escaped as
/// RFC 4514 §2.4 says (`=` left as it is, as OpenSSL writes it), and every byte outside
/// visible ASCII is written `\XX` too, so the subject always fits in a header. A value
/// that is not a string is `#` and its DER in hex.
fn rfc4514(name: &X509Name<'_>) -> String {
    use x509_parser::asn1_rs::ToDer as _;
    let mut out = String::new();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attribute) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attribute.attr_type();
            match x509_parser::objects::oid2abbrev(oid, x509_parser::objects::oid_registry()) {
                Ok(short) => out.push_str(short),
                Err(_) => out.push_str(&oid.to_id_string()),
            }
            out.push('=');
            match attribute.as_str() {
                Ok(value) => escape_rfc4514(value, &mut out),
                Err(_) => {
                    out.push('#');
                    for b in attribute.attr_value().to_der_vec().unwrap_or_default() {
                        let _ = write!(out, "{b:02x}");
                    }
                }
            }
        }
    }
    out
}

fn escape_rfc4514(value: &str, out: &mut String) {
    let bytes = value.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let edge = (i == 0 && (b == b' ' || b == b'#')) || (i + 1 == bytes.len() && b == b' ');
        if edge || matches!(b, b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\') {
            out.push('\\');
            out.push(char::from(b));
        } else if b.is_ascii_graphic() || b == b' ' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\{b:02X}");
        }
    }
}

/// The `X-Forwarded-Client-Cert` value, as Envoy writes it for one certificate:
/// `Hash=<hex>;Subject="<subject>";URI=<uri>;DNS=<name>`, one `URI=` and one `DNS=` per
/// name. The subject is always quoted; a URI or DNS name only when it holds a character
/// the format uses (`,` `;` `=` `"` `\` or a space). Inside quotes `"` and `\` are escaped
/// with `\`, so no value can end its field early or add one.
fn xfcc(hash: &str, subject: &str, uris: &[String], dns: &[String]) -> HeaderValue {
    let mut out = format!("Hash={hash};Subject=");
    quote(subject, &mut out);
    for (key, value) in uris
        .iter()
        .map(|u| ("URI", u))
        .chain(dns.iter().map(|d| ("DNS", d)))
    {
        out.push(';');
        out.push_str(key);
        out.push('=');
        if value.contains([',', ';', '=', '"', '\\', ' ']) {
            quote(value, &mut out);
        } else {
            out.push_str(value);
        }
    }
    // Every part is visible ASCII (names were filtered, the subject escaped).
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("Hash=invalid"))
}

fn quote(value: &str, out: &mut String) {
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate with this subject and these alternative names, as DER.
    fn cert(subject: &[(rcgen::DnType, &str)], sans: Vec<rcgen::SanType>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        params.subject_alt_names = sans;
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    fn uri(text: &str) -> rcgen::SanType {
        rcgen::SanType::URI(text.try_into().expect("ia5"))
    }

    fn dns(text: &str) -> rcgen::SanType {
        rcgen::SanType::DnsName(text.try_into().expect("ia5"))
    }

    /// Reads an XFCC value back as Envoy's parsers do: `;`-separated `key=value` pairs,
    /// a quoted value unescaped once.
    fn parse_xfcc(value: &str) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        let mut chars = value.chars().peekable();
        while chars.peek().is_some() {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            let mut val = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => val.push(chars.next().expect("escaped char")),
                        '"' => break,
                        c => val.push(c),
                    }
                }
                assert!(matches!(chars.next(), None | Some(';')), "{value}");
            } else {
                val = chars.by_ref().take_while(|c| *c != ';').collect();
            }
            pairs.push((key, val));
        }
        pairs
    }

    #[test]
    fn a_spiffe_certificate_renders_envoys_format() {
        let der = cert(
            &[
                (rcgen::DnType::OrganizationName, "Example"),
                (rcgen::DnType::CommonName, "billing"),
            ],
            vec![
                uri("spiffe://cluster/ns/prod/sa/billing"),
                dns("billing.prod"),
            ],
        );
        let cert = ClientCert::from_der(&der).expect("parse");
        let expected_hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        assert_eq!(cert.hash, expected_hash);
        assert_eq!(cert.subject, "CN=billing,O=Example");
        assert_eq!(cert.uris, ["spiffe://cluster/ns/prod/sa/billing"]);
        assert_eq!(cert.dns, ["billing.prod"]);
        assert_eq!(cert.cns, ["billing"]);
        assert_eq!(cert.kind(), NameKind::Uri);
        assert_eq!(
            cert.xfcc.to_str().expect("ascii"),
            format!(
                "Hash={expected_hash};Subject=\"CN=billing,O=Example\";URI=spiffe://cluster/ns/prod/sa/billing;DNS=billing.prod"
            )
        );
    }

    #[test]
    fn quotes_commas_and_semicolons_in_a_subject_cannot_break_the_format() {
        let der = cert(
            &[(
                rcgen::DnType::CommonName,
                "evil\";URI=spiffe://x/admin, O=\\x; DNS=a",
            )],
            vec![uri("spiffe://x/a;b=c")],
        );
        let cert = ClientCert::from_der(&der).expect("parse");
        // RFC 4514 escapes `"`, `;`, `,` and `\` in the value...
        assert_eq!(
            cert.subject,
            r#"CN=evil\"\;URI=spiffe://x/admin\, O=\\x\; DNS=a"#
        );
        // ...and the XFCC quoting escapes `"` and `\` once more: read back, the fields are
        // exactly the gateway's, the subject and the URI intact.
        let pairs = parse_xfcc(cert.xfcc.to_str().expect("ascii"));
        assert_eq!(
            pairs,
            [
                ("Hash".to_owned(), cert.hash.clone()),
                ("Subject".to_owned(), cert.subject.clone()),
                ("URI".to_owned(), "spiffe://x/a;b=c".to_owned()),
            ]
        );
    }

    #[test]
    fn a_subject_outside_ascii_is_escaped_as_rfc_4514_hex() {
        let der = cert(&[(rcgen::DnType::CommonName, " zoë #1 ")], vec![]);
        let cert = ClientCert::from_der(&der).expect("parse");
        assert_eq!(cert.subject, r"CN=\ zo\C3\AB #1\ ");
        assert_eq!(cert.cns, [" zoë #1 "]);
        assert_eq!(cert.kind(), NameKind::Cn);
        assert!(cert.xfcc.to_str().is_ok());
    }

    #[test]
    fn names_are_known_by_uri_else_dns_else_cn() {
        let only_dns = ClientCert::from_der(&cert(
            &[(rcgen::DnType::CommonName, "x")],
            vec![dns("a.example"), dns("b.example")],
        ))
        .expect("parse");
        assert_eq!(only_dns.kind(), NameKind::Dns);
        assert_eq!(only_dns.names(), ["a.example", "b.example"]);
        let only_cn = ClientCert::from_der(&cert(&[(rcgen::DnType::CommonName, "x")], vec![]))
            .expect("parse");
        assert_eq!(only_cn.names(), ["x"]);
        let nothing = ClientCert::from_der(&cert(&[], vec![])).expect("parse");
        assert_eq!(nothing.kind(), NameKind::Cn);
        assert!(nothing.names().is_empty());
        assert!(
            ClientCert::from_der(b"not a certificate").is_err(),
            "garbage is refused"
        );
    }
}
