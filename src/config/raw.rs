//! The file format: `gateway.toml` as serde reads it. Each value keeps its span, so
//! validation can name the line of a bad value. Unknown keys are not refused here but
//! collected while deserializing (`serde_ignored`), so one misspelt key does not hide the
//! other problems of the file. Nothing outside `config` sees these types.

use std::fmt;

use std::collections::BTreeMap;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

#[derive(Debug, Deserialize)]
pub(super) struct RawConfig {
    pub(super) server: RawServer,
    pub(super) admin: Option<RawAdmin>,
    pub(super) tokens: RawTokens,
    pub(super) store: Option<RawStore>,
    pub(super) accounts: Option<RawAccounts>,
    #[serde(default)]
    pub(super) identity: RawIdentity,
    #[serde(default)]
    pub(super) dev: RawDev,
    #[serde(default)]
    pub(super) compat: RawCompat,
    pub(super) browser: Option<Spanned<RawBrowser>>,
    #[serde(default)]
    pub(super) upstream: Vec<RawUpstream>,
    #[serde(default)]
    pub(super) route: Vec<RawRoute>,
    #[serde(default)]
    pub(super) client_identity: Vec<RawClientIdentity>,
    #[serde(default)]
    pub(super) issuer: Vec<RawIssuer>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawServer {
    pub(super) listen: Spanned<String>,
    pub(super) tls: Option<Spanned<RawTls>>,
    pub(super) client_ca: Option<Spanned<String>>,
    pub(super) client_auth: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<Spanned<String>>,
    pub(super) tls_handshake_timeout: Option<Spanned<String>>,
    pub(super) header_read_timeout: Option<Spanned<String>>,
    pub(super) max_header_bytes: Option<Spanned<String>>,
    pub(super) drain_timeout: Option<Spanned<String>>,
    pub(super) worker_threads: Option<Spanned<usize>>,
    pub(super) max_headers: Option<Spanned<i64>>,
    pub(super) max_body_bytes: Option<Spanned<String>>,
    pub(super) body_idle_timeout: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) http2_max_concurrent_streams: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawTls {
    pub(super) cert: Spanned<String>,
    pub(super) key: Spanned<Source>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawAdmin {
    pub(super) listen: Spanned<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawTokens {
    pub(super) issuer: Option<Spanned<String>>,
    pub(super) audience: Option<Spanned<String>>,
    pub(super) algorithm: Spanned<String>,
    pub(super) signing_key: Option<Spanned<Source>>,
    pub(super) secret: Option<Spanned<Source>>,
    pub(super) kid: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) previous_keys: Vec<Spanned<RawPreviousKey>>,
    pub(super) access_ttl: Option<Spanned<String>>,
    pub(super) refresh_ttl: Option<Spanned<String>>,
    pub(super) leeway: Option<Spanned<String>>,
    pub(super) max_lifetime: Option<Spanned<String>>,
    pub(super) verified_cache: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawStore {
    pub(super) url: Spanned<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawAccounts {
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) registration: Option<bool>,
    pub(super) min_password_length: Option<Spanned<i64>>,
    pub(super) login_rate_per_ip: Option<Spanned<String>>,
    pub(super) login_rate_per_user: Option<Spanned<String>>,
    pub(super) login_rate_per_user_all_ips: Option<Spanned<String>>,
    pub(super) register_rate_per_ip: Option<Spanned<String>>,
    pub(super) paths: Option<RawAccountPaths>,
}

/// `[accounts] paths`: where each endpoint answers, instead of under `prefix`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawAccountPaths {
    pub(super) register: Option<Spanned<String>>,
    pub(super) login: Option<Spanned<String>>,
    pub(super) refresh: Option<Spanned<String>>,
    pub(super) logout: Option<Spanned<String>>,
    pub(super) me: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawBrowser {
    pub(super) cookie_secure: Option<bool>,
    pub(super) cookie_domain: Option<Spanned<String>>,
    pub(super) same_site: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allowed_redirect_hosts: Vec<Spanned<String>>,
    pub(super) title: Option<Spanned<String>>,
    pub(super) hsts: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) provider: Vec<RawProvider>,
}

/// `[[browser.provider]]`: "Log in with ..." by OpenID Connect.
#[derive(Debug, Deserialize)]
pub(super) struct RawProvider {
    pub(super) issuer: Spanned<String>,
    pub(super) client_id: Spanned<String>,
    pub(super) client_secret: Spanned<Source>,
    pub(super) scopes: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawCompat {
    pub(super) error_body: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawIdentity {
    pub(super) user_header: Option<Spanned<String>>,
    /// In file order: the order headers are set in, and the order clashes are reported in.
    #[serde(default, deserialize_with = "ordered_map")]
    pub(super) claim_headers: Vec<(String, Spanned<String>)>,
    #[serde(default)]
    pub(super) forward_authorization: bool,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawDev {
    #[serde(default)]
    pub(super) generate_missing: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawUpstream {
    pub(super) name: Spanned<String>,
    pub(super) url: Spanned<String>,
    pub(super) ca: Option<Spanned<String>>,
    pub(super) connect_timeout: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawRoute {
    pub(super) path: Spanned<String>,
    pub(super) methods: Option<Vec<Spanned<String>>>,
    pub(super) upstream: Spanned<String>,
    pub(super) auth: Option<Spanned<String>>,
    pub(super) require: Option<Spanned<RawRequire>>,
    pub(super) max_body_bytes: Option<Spanned<String>>,
    pub(super) websocket: Option<bool>,
    pub(super) strip_prefix: Option<Spanned<bool>>,
    pub(super) host: Option<Spanned<String>>,
    pub(super) cors: Option<Spanned<RawCors>>,
    pub(super) rate_limit: Option<Spanned<RawRateLimit>>,
    pub(super) rewrite: Option<Spanned<String>>,
}

/// A `[[client_identity]]`: the certificates its `match` takes are the caller `name`.
#[derive(Debug, Deserialize)]
pub(super) struct RawClientIdentity {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) roles: Vec<Spanned<String>>,
    #[serde(rename = "match")]
    pub(super) matches: Spanned<RawCertMatch>,
}

/// An `[[issuer]]`: tokens of another issuer, verified against its JWKS.
#[derive(Debug, Deserialize)]
pub(super) struct RawIssuer {
    pub(super) name: Spanned<String>,
    pub(super) issuer: Spanned<String>,
    pub(super) discovery: Option<Spanned<bool>>,
    pub(super) jwks_uri: Option<Spanned<String>>,
    pub(super) audiences: Spanned<Vec<Spanned<String>>>,
    pub(super) algorithms: Option<Vec<Spanned<String>>>,
    pub(super) username_claim: Option<Spanned<String>>,
    pub(super) roles_claim: Option<Spanned<String>>,
    pub(super) ca: Option<Spanned<String>>,
    pub(super) jwks_bearer: Option<Spanned<Source>>,
    pub(super) timeout: Option<Spanned<String>>,
}

/// `match = { uri = "..." }`, or `dns`, or `cn`: exactly one, checked in validation.
#[derive(Debug, Deserialize)]
pub(super) struct RawCertMatch {
    pub(super) uri: Option<Spanned<String>>,
    pub(super) dns: Option<Spanned<String>>,
    pub(super) cn: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawRateLimit {
    pub(super) requests: u32,
    pub(super) per: String,
    pub(super) key: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawCors {
    pub(super) allow_origins: Vec<String>,
    #[serde(default)]
    pub(super) allow_methods: Option<Vec<String>>,
    #[serde(default)]
    pub(super) allow_headers: Vec<String>,
    #[serde(default)]
    pub(super) allow_credentials: bool,
    pub(super) max_age: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawRequire {
    #[serde(default)]
    pub(super) roles: Vec<String>,
    #[serde(default)]
    pub(super) any_roles: Vec<String>,
    #[serde(default)]
    pub(super) claims: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) fresh: bool,
    pub(super) max_auth_age: Option<Spanned<String>>,
    pub(super) kind: Option<Spanned<String>>,
}

/// Where a value comes from: written in the file, `{ env = "VAR" }` or `{ file = "path" }`.
/// What an inline string means (a value or a path) is the caller's to say.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Source {
    Inline(String),
    Env(String),
    File(String),
}

/// Inline values may be secrets: never print them.
impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Inline(_) => f.write_str("Inline(..)"),
            Source::Env(var) => write!(f, "Env({var})"),
            Source::File(path) => write!(f, "File({path})"),
        }
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SourceVisitor;
        impl<'de> Visitor<'de> for SourceVisitor {
            type Value = Source;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a string, { env = "VAR" } or { file = "path" }"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Source, E> {
                Ok(Source::Inline(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Source, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        r#"expected { env = "VAR" } or { file = "path" }"#,
                    ));
                };
                let value: String = map.next_value()?;
                let source = match key.as_str() {
                    "env" => Source::Env(value),
                    "file" => Source::File(value),
                    other => return Err(de::Error::unknown_field(other, &["env", "file"])),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "`{extra}`: give exactly one of `env` or `file`"
                    )));
                }
                Ok(source)
            }
        }
        d.deserialize_any(SourceVisitor)
    }
}

/// A `previous_keys` entry: a path to a PEM key, or a table for a secret, another algorithm
/// or an explicit `kid`.
#[derive(Debug)]
pub(super) struct RawPreviousKey {
    pub(super) key: Option<Source>,
    pub(super) secret: Option<Source>,
    pub(super) algorithm: Option<String>,
    pub(super) kid: Option<String>,
}

impl<'de> Deserialize<'de> for RawPreviousKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            key: Option<Source>,
            secret: Option<Source>,
            algorithm: Option<String>,
            kid: Option<String>,
        }
        struct PreviousKeyVisitor;
        impl<'de> Visitor<'de> for PreviousKeyVisitor {
            type Value = RawPreviousKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    r#"a path, or { key = "path" | secret = ..., algorithm = "...", kid = "..." }"#,
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPreviousKey, E> {
                Ok(RawPreviousKey {
                    key: Some(Source::Inline(v.to_owned())),
                    secret: None,
                    algorithm: None,
                    kid: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawPreviousKey, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawPreviousKey {
                    key: t.key,
                    secret: t.secret,
                    algorithm: t.algorithm,
                    kid: t.kid,
                })
            }
        }
        d.deserialize_any(PreviousKeyVisitor)
    }
}

/// A TOML table as its entries in file order (`BTreeMap` would sort them).
fn ordered_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, Spanned<String>)>, D::Error> {
    struct OrderedVisitor;
    impl<'de> Visitor<'de> for OrderedVisitor {
        type Value = Vec<(String, Spanned<String>)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(r#"a table of header = "claim""#)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::new();
            while let Some(entry) = map.next_entry()? {
                entries.push(entry);
            }
            Ok(entries)
        }
    }
    d.deserialize_map(OrderedVisitor)
}

/// One step of a key path: `route[2].upstream` is `route`, `[2]`, `upstream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment {
    Key(String),
    Index(usize),
}

/// The field name `toml::Spanned` uses internally; not part of the user's key path.
const SPANNED_FIELD: &str = "$__serde_spanned_private_value";

/// The key path of a key that no struct field took.
pub(super) fn ignored_path(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    use serde_ignored::Path;
    match path {
        Path::Root => Vec::new(),
        Path::Seq { parent, index } => {
            let mut segments = ignored_path(parent);
            segments.push(Segment::Index(*index));
            segments
        }
        Path::Map { parent, key } => {
            let mut segments = ignored_path(parent);
            if key != SPANNED_FIELD {
                segments.push(Segment::Key(key.clone()));
            }
            segments
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

/// The key path where deserialization failed.
pub(super) fn error_path(path: &serde_path_to_error::Path) -> Vec<Segment> {
    use serde_path_to_error::Segment as S;
    path.iter()
        .filter_map(|segment| match segment {
            S::Seq { index } => Some(Segment::Index(*index)),
            S::Map { key } | S::Enum { variant: key } if key != SPANNED_FIELD => {
                Some(Segment::Key(key.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The keys a table of the file takes, for "unknown key" messages: keep it in step with
/// the structs above (a missing name only makes a message less helpful).
pub(super) fn known_keys(table: &[Segment]) -> &'static [&'static str] {
    let names: Vec<&str> = table
        .iter()
        .filter_map(|s| match s {
            Segment::Key(k) => Some(k.as_str()),
            Segment::Index(_) => None,
        })
        .collect();
    match names.as_slice() {
        [] => &[
            "server",
            "admin",
            "tokens",
            "store",
            "accounts",
            "identity",
            "dev",
            "compat",
            "browser",
            "upstream",
            "route",
            "client_identity",
            "issuer",
        ],
        ["client_identity"] => &["name", "roles", "match"],
        ["issuer"] => &[
            "name",
            "issuer",
            "discovery",
            "jwks_uri",
            "audiences",
            "algorithms",
            "username_claim",
            "roles_claim",
            "ca",
            "jwks_bearer",
            "timeout",
        ],
        ["client_identity", "match"] => &["uri", "dns", "cn"],
        ["compat"] => &["error_body"],
        ["browser"] => &[
            "cookie_secure",
            "cookie_domain",
            "same_site",
            "allowed_redirect_hosts",
            "title",
            "hsts",
        ],
        ["accounts", "paths"] => &["register", "login", "refresh", "logout", "me"],
        ["store"] => &["url"],
        ["accounts"] => &[
            "prefix",
            "registration",
            "min_password_length",
            "login_rate_per_ip",
            "login_rate_per_user",
            "login_rate_per_user_all_ips",
            "register_rate_per_ip",
            "paths",
        ],
        ["server"] => &[
            "listen",
            "tls",
            "client_ca",
            "client_auth",
            "trusted_proxies",
            "tls_handshake_timeout",
            "header_read_timeout",
            "max_header_bytes",
            "drain_timeout",
            "worker_threads",
            "max_headers",
            "max_body_bytes",
            "body_idle_timeout",
            "max_connections",
            "http2_max_concurrent_streams",
        ],
        ["server", "tls"] => &["cert", "key"],
        ["admin"] => &["listen"],
        ["tokens"] => &[
            "issuer",
            "audience",
            "algorithm",
            "signing_key",
            "secret",
            "kid",
            "previous_keys",
            "access_ttl",
            "refresh_ttl",
            "leeway",
            "max_lifetime",
            "verified_cache",
        ],
        ["identity"] => &["user_header", "claim_headers", "forward_authorization"],
        ["dev"] => &["generate_missing"],
        ["upstream"] => &[
            "name",
            "url",
            "ca",
            "connect_timeout",
            "timeout",
            "idle_timeout",
        ],
        ["route"] => &[
            "path",
            "methods",
            "upstream",
            "auth",
            "require",
            "max_body_bytes",
            "websocket",
            "strip_prefix",
            "rewrite",
            "host",
            "cors",
            "rate_limit",
        ],
        ["route", "require"] => &[
            "roles",
            "any_roles",
            "claims",
            "fresh",
            "max_auth_age",
            "kind",
        ],
        ["route", "rate_limit"] => &["requests", "per", "key"],
        ["route", "cors"] => &[
            "allow_origins",
            "allow_methods",
            "allow_headers",
            "allow_credentials",
            "max_age",
        ],
        _ => &[],
    }
}

/// The message for an unknown key at `path`, naming the keys its table takes.
pub(super) fn unknown_key_message(path: &[Segment]) -> String {
    let Some((Segment::Key(name), table)) = path.split_last() else {
        return "unknown key".to_owned();
    };
    let known = known_keys(table);
    let list = known
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match known.len() {
        0 => format!("unknown key `{name}`"),
        1 => format!("unknown key `{name}`, expected {list}"),
        _ => format!("unknown key `{name}`, expected one of {list}"),
    }
}

/// `route[2].upstream`; the top level is `(top level)`.
pub(super) fn display_path(segments: &[Segment]) -> String {
    if segments.is_empty() {
        return "(top level)".to_owned();
    }
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Where a key path's key (or array element) is written in the file.
pub(super) fn key_span(text: &str, segments: &[Segment]) -> Option<std::ops::Range<usize>> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut array: Option<&[Spanned<DeValue<'_>>]> = None;
    let mut span = None;
    for segment in segments {
        let value = match segment {
            Segment::Key(key) => {
                let (k, v) = table?.iter().find(|(k, _)| k.get_ref() == key)?;
                span = Some(k.span());
                v
            }
            Segment::Index(i) => {
                let v = array?.get(*i)?;
                span = Some(v.span());
                v
            }
        };
        (table, array) = match value.get_ref() {
            DeValue::Table(t) => (Some(t), None),
            DeValue::Array(a) => (None, Some(&a[..])),
            _ => (None, None),
        };
    }
    span
}
