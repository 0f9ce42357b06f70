//! `[[issuer]]`: tokens of other issuers (an OpenID provider, Kubernetes), verified with
//! the keys each one publishes. Everything that can be checked without the network is
//! checked here: one source of keys, https only, no HMAC, at least one audience.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use toml::Spanned;

use crate::jwt::Algorithm;

use super::raw::{RawIssuer, Source};
use super::{Ctx, is_hmac, is_loopback_host, values};

/// One fetch (discovery and JWKS together) takes at most this: long enough for a slow
/// provider, short enough that a request waiting on a new key is not held much longer.
pub const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// What tokens of an issuer are signed with when `algorithms` is not given: RS256 is the
/// one algorithm every OpenID provider must support (OpenID Connect Core §15.1).
pub const DEFAULT_ISSUER_ALGORITHMS: &[Algorithm] = &[Algorithm::RS256];

/// A validated `[[issuer]]`.
#[derive(Debug, Clone)]
pub struct ExternalIssuer {
    /// For logs, metrics and `/readyz`.
    pub name: String,
    /// The exact `iss` its tokens carry.
    pub issuer: String,
    pub jwks: JwksSource,
    /// A token must name one of these in `aud`.
    pub audiences: Vec<String>,
    /// What its keys may be bound to; never an HMAC algorithm.
    pub algorithms: Vec<Algorithm>,
    /// The claim the identity header carries.
    pub username_claim: String,
    /// The path to the roles, one claim name per segment (`realm_access.roles`).
    pub roles_claim: Vec<String>,
    /// The system roots plus `ca`, for the JWKS and discovery endpoints.
    pub tls: Arc<rustls::ClientConfig>,
    pub bearer: Option<Bearer>,
    pub timeout: Duration,
}

/// Where an issuer's keys are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// The discovery document at this URL names the JWKS.
    Discovery(Uri),
    /// The JWKS itself.
    Uri(Uri),
}

/// The bearer token sent to the JWKS endpoint.
#[derive(Clone)]
pub enum Bearer {
    /// Read at each fetch: a Kubernetes projected token is rotated on disk.
    File(PathBuf),
    Fixed(String),
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bearer::File(path) => write!(f, "File({})", path.display()),
            Bearer::Fixed(_) => f.write_str("Fixed(..)"),
        }
    }
}

impl Ctx<'_> {
    /// `[[issuer]]` in file order. `local` is `[tokens] issuer`, which no entry may claim.
    pub(super) fn issuers(&mut self, raw: &[RawIssuer], local: &str) -> Vec<ExternalIssuer> {
        let mut issuers: Vec<ExternalIssuer> = Vec::new();
        for (i, entry) in raw.iter().enumerate() {
            let key = format!("issuer[{i}]");
            let name = entry.name.get_ref();
            if name.is_empty() || !crate::jwt::is_forwardable(name) {
                self.error(
                    &entry.name,
                    &format!("{key}.name"),
                    "a name is visible ASCII, not empty",
                );
            } else if issuers.iter().any(|other| &other.name == name) {
                self.error(
                    &entry.name,
                    &format!("{key}.name"),
                    format!("\"{name}\" names another [[issuer]] already"),
                );
            }
            let iss = entry.issuer.get_ref();
            if iss.is_empty() {
                self.error(
                    &entry.issuer,
                    &format!("{key}.issuer"),
                    "the issuer is the exact iss of its tokens: not empty",
                );
            } else if iss == local {
                self.error(
                    &entry.issuer,
                    &format!("{key}.issuer"),
                    format!("\"{iss}\" is the gateway's own issuer ([tokens] issuer)"),
                );
            } else if raw[..i].iter().any(|other| other.issuer.get_ref() == iss) {
                self.error(
                    &entry.issuer,
                    &format!("{key}.issuer"),
                    format!("\"{iss}\" is the issuer of another [[issuer]] already"),
                );
            }
            let jwks = self.jwks_source(entry, &key);
            if entry.audiences.get_ref().is_empty() {
                self.error(
                    &entry.audiences,
                    &format!("{key}.audiences"),
                    "give at least one audience: tokens meant for other services must not pass",
                );
            }
            let algorithms = self.issuer_algorithms(entry, &key);
            let username_claim = match &entry.username_claim {
                Some(claim) if claim.get_ref().is_empty() => {
                    self.error(
                        claim,
                        &format!("{key}.username_claim"),
                        "a claim name is not empty",
                    );
                    String::new()
                }
                Some(claim) => claim.get_ref().clone(),
                None => "sub".to_owned(),
            };
            let roles_claim = match &entry.roles_claim {
                Some(path) => {
                    let segments: Vec<String> =
                        path.get_ref().split('.').map(str::to_owned).collect();
                    if segments.iter().any(String::is_empty) {
                        self.error(
                            path,
                            &format!("{key}.roles_claim"),
                            format!("\"{}\" is not a dotted path of claim names", path.get_ref()),
                        );
                    }
                    segments
                }
                None => vec!["roles".to_owned()],
            };
            let tls = self.issuer_tls(entry, &key);
            let bearer = entry
                .jwks_bearer
                .as_ref()
                .and_then(|source| self.bearer(source, &format!("{key}.jwks_bearer")));
            let timeout = self.duration(
                &entry.timeout,
                &format!("{key}.timeout"),
                DEFAULT_JWKS_TIMEOUT,
            );
            if let Some(at) = &entry.timeout
                && timeout.is_zero()
            {
                self.error(at, &format!("{key}.timeout"), "a timeout is more than zero");
            }
            if let (Some(jwks), Some(algorithms), Some(tls)) = (jwks, algorithms, tls) {
                issuers.push(ExternalIssuer {
                    name: name.clone(),
                    issuer: iss.clone(),
                    jwks,
                    audiences: entry
                        .audiences
                        .get_ref()
                        .iter()
                        .map(|a| a.get_ref().clone())
                        .collect(),
                    algorithms,
                    username_claim,
                    roles_claim,
                    tls,
                    bearer,
                    timeout,
                });
            }
        }
        issuers
    }

    /// Exactly one of `discovery = true` and `jwks_uri`.
    fn jwks_source(&mut self, entry: &RawIssuer, key: &str) -> Option<JwksSource> {
        let discovery = entry.discovery.as_ref().is_some_and(|d| *d.get_ref());
        match (discovery, &entry.jwks_uri) {
            (true, Some(uri)) => {
                self.error(
                    uri,
                    &format!("{key}.jwks_uri"),
                    "give discovery = true or jwks_uri, not both",
                );
                None
            }
            (false, None) => {
                self.error(
                    &entry.name,
                    key,
                    "give discovery = true (keys found from the issuer) or jwks_uri",
                );
                None
            }
            (true, None) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    entry.issuer.get_ref().trim_end_matches('/')
                );
                self.fetch_url(&entry.issuer, &format!("{key}.issuer"), &url)
                    .map(JwksSource::Discovery)
            }
            (false, Some(uri)) => self
                .fetch_url(uri, &format!("{key}.jwks_uri"), uri.get_ref())
                .map(JwksSource::Uri),
        }
    }

    /// An https URL; http only on a loopback host (tests), with a warning: keys fetched in
    /// clear text could be anyone's.
    fn fetch_url<T>(&mut self, at: &Spanned<T>, key: &str, url: &str) -> Option<Uri> {
        let parsed = url.parse::<Uri>().ok().filter(|u| u.authority().is_some());
        let Some(parsed) = parsed else {
            self.error(at, key, format!("\"{url}\" is not an https URL"));
            return None;
        };
        match parsed.scheme_str() {
            Some("https") => Some(parsed),
            Some("http") if parsed.host().is_some_and(is_loopback_host) => {
                self.warn(
                    at,
                    key,
                    format!("\"{url}\" is plain http: for tests only, keys in clear text could be anyone's"),
                );
                Some(parsed)
            }
            _ => {
                self.error(
                    at,
                    key,
                    format!("\"{url}\" is not https: an issuer's keys are fetched over https only"),
                );
                None
            }
        }
    }

    /// `algorithms`, default RS256; HMAC refused: an issuer's keys are public, and a key
    /// bound to HMAC would let anyone sign with it.
    fn issuer_algorithms(&mut self, entry: &RawIssuer, key: &str) -> Option<Vec<Algorithm>> {
        let Some(names) = &entry.algorithms else {
            return Some(DEFAULT_ISSUER_ALGORITHMS.to_vec());
        };
        if names.is_empty() {
            self.error(
                &entry.name,
                &format!("{key}.algorithms"),
                "give at least one algorithm (default [\"RS256\"])",
            );
            return None;
        }
        let mut algorithms = Vec::new();
        let mut ok = true;
        for (j, name) in names.iter().enumerate() {
            let at = format!("{key}.algorithms[{j}]");
            match self.algorithm(name, &at) {
                Some(alg) if is_hmac(alg) => {
                    self.error(
                        name,
                        &at,
                        format!("{} is HMAC: another issuer's keys are public, anyone could sign with them", name.get_ref()),
                    );
                    ok = false;
                }
                Some(alg) => algorithms.push(alg),
                None => ok = false,
            }
        }
        ok.then_some(algorithms)
    }

    /// The system roots, and `ca` besides them.
    fn issuer_tls(&mut self, entry: &RawIssuer, key: &str) -> Option<Arc<rustls::ClientConfig>> {
        let ca = self.ca_file(entry.ca.as_ref(), key).ok()?;
        match crate::tls::client_config_with_system_roots(ca.as_deref()) {
            Ok(config) => Some(Arc::new(config)),
            Err(e) => {
                match &entry.ca {
                    Some(at) => self.error(at, &format!("{key}.ca"), e.to_string()),
                    None => self.error(&entry.name, key, e.to_string()),
                }
                None
            }
        }
    }

    /// A file is read at each fetch (checked readable now); an env or inline value once.
    fn bearer(&mut self, source: &Spanned<Source>, key: &str) -> Option<Bearer> {
        match source.get_ref() {
            Source::File(path) => {
                let path = values::resolve(&self.base, path);
                if let Err(message) = values::read_file(&path) {
                    self.error(source, key, message);
                    return None;
                }
                Some(Bearer::File(path))
            }
            other => match values::read_source(other, &self.base, false) {
                Ok(bytes) => Some(Bearer::Fixed(
                    String::from_utf8_lossy(&bytes).trim().to_owned(),
                )),
                Err(message) => {
                    self.error(source, key, message);
                    None
                }
            },
        }
    }
}
