//! Callers by client certificate: each `[[client_identity]]` made into its caller once per
//! config (claims, identity headers), so naming a certificate costs a few pattern matches
//! and a reference count. Done per request rather than per connection, so a reload's new
//! identities apply to connections already open.

use std::sync::Arc;

use super::{Caller, IdentityHeaders, Via};
use crate::client_cert::{CertPattern, ClientCert, ClientIdentity};
use crate::error::Error;
use crate::jwt::{Claims, OneOrMany};

/// The `[[client_identity]]` entries of one config, in file order.
#[derive(Debug)]
pub(crate) struct CertCallers {
    /// `None`: the name or a role cannot be a header value (config refuses those, so this
    /// is only a guard: such an entry refuses its certificates rather than forward them
    /// without an identity).
    entries: Vec<(CertPattern, Option<Arc<Caller>>)>,
}

impl CertCallers {
    pub(crate) fn new(identities: &[ClientIdentity], headers: &IdentityHeaders) -> CertCallers {
        let entries = identities
            .iter()
            .map(|identity| {
                let claims = Claims {
                    sub: identity.name.clone(),
                    roles: OneOrMany::Many(identity.roles.clone()),
                    ..Claims::default()
                };
                let caller = headers
                    .render(&claims)
                    .ok()
                    .map(|headers| Arc::new(Caller::new(claims, headers, Via::ClientCert)));
                (identity.pattern.clone(), caller)
            })
            .collect();
        CertCallers { entries }
    }

    /// The caller of the first entry whose pattern matches the certificate: 401 without a
    /// certificate, 403 for a verified one that no entry names.
    pub(crate) fn caller(&self, cert: Option<&ClientCert>) -> Result<Arc<Caller>, Error> {
        let cert = cert.ok_or(Error::MissingClientCertificate)?;
        let (_, caller) = self
            .entries
            .iter()
            .find(|(pattern, _)| pattern.matches(cert))
            .ok_or(Error::UnknownClientCertificate)?;
        caller
            .clone()
            .ok_or(Error::Internal("a client identity cannot be forwarded"))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderName;

    use super::*;
    use crate::client_cert::NameKind;
    use crate::config::Identity;

    fn der(cn: &str, sans: Vec<rcgen::SanType>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.subject_alt_names = sans;
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    fn identity(name: &str, roles: &[&str], kind: NameKind, pattern: &str) -> ClientIdentity {
        ClientIdentity {
            name: name.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            pattern: CertPattern::parse(kind, pattern).expect("pattern"),
        }
    }

    #[test]
    fn the_first_entry_for_the_certificates_kind_of_name_answers() {
        let headers = IdentityHeaders::new(&Identity {
            user_header: HeaderName::from_static("x-auth-user"),
            claim_headers: vec![(HeaderName::from_static("x-auth-roles"), "roles".into())],
            forward_authorization: false,
        });
        let callers = CertCallers::new(
            &[
                // A CN entry never names a certificate that has a URI name.
                identity("by-cn", &["admin"], NameKind::Cn, "billing"),
                identity(
                    "billing",
                    &["payments", "read"],
                    NameKind::Uri,
                    "spiffe://c/ns/*/sa/billing",
                ),
                identity("second", &[], NameKind::Uri, "spiffe://c/ns/prod/sa/*"),
                identity("web", &[], NameKind::Dns, "*.web.svc"),
            ],
            &headers,
        );
        let cert = |cn, sans| ClientCert::from_der(&der(cn, sans)).expect("parse");
        let spiffe = |id: &str| rcgen::SanType::URI(id.try_into().expect("ia5"));

        let caller = callers
            .caller(Some(&cert(
                "billing",
                vec![spiffe("spiffe://c/ns/prod/sa/billing")],
            )))
            .expect("mapped");
        assert_eq!(caller.name(), "billing");
        assert_eq!(caller.roles(), ["payments", "read"]);
        assert_eq!(caller.via, Via::ClientCert);
        let rendered: Vec<(&str, &str)> = caller
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().expect("ascii")))
            .collect();
        assert_eq!(
            rendered,
            [
                ("x-auth-user", "billing"),
                ("x-auth-roles", "payments,read")
            ]
        );

        let other = callers
            .caller(Some(&cert("x", vec![spiffe("spiffe://c/ns/prod/sa/web")])))
            .expect("mapped");
        assert_eq!(other.name(), "second");
        let web = cert(
            "x",
            vec![rcgen::SanType::DnsName(
                "a.web.svc".try_into().expect("ia5"),
            )],
        );
        assert_eq!(callers.caller(Some(&web)).expect("mapped").name(), "web");
        assert_eq!(
            callers
                .caller(Some(&cert("billing", vec![])))
                .expect("mapped")
                .name(),
            "by-cn"
        );

        assert!(matches!(
            callers.caller(Some(&cert("x", vec![spiffe("spiffe://c/ns/prod/db/x")]))),
            Err(Error::UnknownClientCertificate)
        ));
        assert!(matches!(
            callers.caller(None),
            Err(Error::MissingClientCertificate)
        ));
    }
}
