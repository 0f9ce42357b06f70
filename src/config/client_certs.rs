//! Client certificates as callers: `server.client_auth`, the `[[client_identity]]` entries
//! that name certificates, and the routes with `auth = "client_cert"` that need both.

use crate::client_cert::{CertPattern, ClientIdentity, NameKind};
use crate::jwt::is_forwardable;
use crate::tls::ClientAuth;

use super::Ctx;
use super::raw::{RawConfig, RawServer};

impl Ctx<'_> {
    /// `server.client_auth`: `None` without `client_ca`. With one it defaults to
    /// `required`, which is what `client_ca` alone meant before `client_auth` existed.
    pub(super) fn client_auth(&mut self, raw: &RawServer) -> Option<ClientAuth> {
        if raw.client_ca.is_none() {
            if let Some(value) = &raw.client_auth {
                self.error(
                    value,
                    "server.client_auth",
                    "client_auth needs server.client_ca, the CA whose certificates are verified",
                );
            }
            return None;
        }
        Some(match raw.client_auth.as_ref() {
            None => ClientAuth::Required,
            Some(value) => match value.get_ref().as_str() {
                "required" => ClientAuth::Required,
                "optional" => ClientAuth::Optional,
                other => {
                    self.error(
                        value,
                        "server.client_auth",
                        format!("\"{other}\" is neither \"optional\" nor \"required\""),
                    );
                    ClientAuth::Required
                }
            },
        })
    }

    /// `[[client_identity]]` in file order, and the check that what uses certificates has a
    /// `client_ca` to verify them.
    pub(super) fn client_identities(&mut self, raw: &RawConfig) -> Vec<ClientIdentity> {
        let verified = raw.server.client_ca.is_some();
        for (i, route) in raw.route.iter().enumerate() {
            let Some(auth) = route.auth.as_ref().filter(|a| a.get_ref() == "client_cert") else {
                continue;
            };
            if !verified {
                self.error(
                    auth,
                    &format!("route[{i}].auth"),
                    "client_cert needs server.client_ca (and server.tls) to verify certificates",
                );
            } else if raw.client_identity.is_empty() {
                self.warn(
                    auth,
                    &format!("route[{i}].auth"),
                    "no [[client_identity]] names a certificate: every request here is refused",
                );
            }
        }
        let mut identities = Vec::new();
        for (i, entry) in raw.client_identity.iter().enumerate() {
            let key = format!("client_identity[{i}]");
            // Once: the fix is one line in [server], not one per entry.
            if i == 0 && !verified {
                self.error(
                    &entry.name,
                    &key,
                    "client identities need server.client_ca (and server.tls) to verify certificates",
                );
            }
            let name = entry.name.get_ref();
            // The name and roles become identity headers: refused here, not per request.
            if !is_forwardable(name) || name.is_empty() {
                self.error(
                    &entry.name,
                    &format!("{key}.name"),
                    format!("\"{name}\" cannot be a header value: visible ASCII, not empty, no space at either end"),
                );
            }
            for (j, role) in entry.roles.iter().enumerate() {
                if !is_forwardable(role.get_ref()) || role.get_ref().is_empty() {
                    self.error(
                        role,
                        &format!("{key}.roles[{j}]"),
                        format!(
                            "\"{}\" cannot be a header value: visible ASCII, not empty, no space at either end",
                            role.get_ref()
                        ),
                    );
                }
            }
            let pattern = self.cert_pattern(entry, &key);
            if let Some(pattern) = pattern {
                identities.push(ClientIdentity {
                    name: name.clone(),
                    roles: entry.roles.iter().map(|r| r.get_ref().clone()).collect(),
                    pattern,
                });
            }
        }
        identities
    }

    /// The one pattern of an entry's `match`. A certificate is known by one kind of name
    /// (URI, else DNS, else CN), so a `match` with two kinds could never be read as both.
    fn cert_pattern(
        &mut self,
        entry: &super::raw::RawClientIdentity,
        key: &str,
    ) -> Option<CertPattern> {
        let matches = entry.matches.get_ref();
        let given: Vec<_> = [
            (NameKind::Uri, "uri", &matches.uri),
            (NameKind::Dns, "dns", &matches.dns),
            (NameKind::Cn, "cn", &matches.cn),
        ]
        .into_iter()
        .filter_map(|(kind, name, value)| value.as_ref().map(|v| (kind, name, v)))
        .collect();
        let [(kind, name, value)] = given.as_slice() else {
            self.error(
                &entry.matches,
                &format!("{key}.match"),
                if given.is_empty() {
                    "give one of uri, dns or cn"
                } else {
                    "give only one of uri, dns or cn: a certificate is known by one kind of name"
                },
            );
            return None;
        };
        match CertPattern::parse(*kind, value.get_ref()) {
            Ok(pattern) => Some(pattern),
            Err(message) => {
                self.error(*value, &format!("{key}.match.{name}"), message);
                None
            }
        }
    }
}
