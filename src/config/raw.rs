//! The file format: `gateway.toml` as serde reads it. Every struct denies unknown keys and
//! keeps the span of each value, so validation can name the line of a bad value. Nothing
//! outside `config` sees these types.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) server: RawServer,
    pub(super) admin: Option<RawAdmin>,
    pub(super) tokens: RawTokens,
    #[serde(default)]
    pub(super) identity: RawIdentity,
    #[serde(default)]
    pub(super) dev: RawDev,
    #[serde(default)]
    pub(super) upstream: Vec<RawUpstream>,
    #[serde(default)]
    pub(super) route: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Spanned<String>,
    pub(super) tls: Option<Spanned<RawTls>>,
    pub(super) client_ca: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<Spanned<String>>,
    pub(super) tls_handshake_timeout: Option<Spanned<String>>,
    pub(super) header_read_timeout: Option<Spanned<String>>,
    pub(super) max_header_bytes: Option<Spanned<String>>,
    pub(super) drain_timeout: Option<Spanned<String>>,
    pub(super) worker_threads: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Spanned<String>,
    pub(super) key: Spanned<Source>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    pub(super) user_header: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) claim_headers: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub(super) forward_authorization: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDev {
    #[serde(default)]
    pub(super) generate_missing: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) name: Spanned<String>,
    pub(super) url: Spanned<String>,
    pub(super) ca: Option<Spanned<String>>,
    pub(super) connect_timeout: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) path: Spanned<String>,
    pub(super) methods: Option<Vec<Spanned<String>>>,
    pub(super) upstream: Spanned<String>,
    pub(super) auth: Option<Spanned<String>>,
    pub(super) require: Option<Spanned<RawRequire>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRequire {
    #[serde(default)]
    pub(super) roles: Vec<String>,
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
