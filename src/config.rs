//! `gateway.toml` → a validated [`Config`] of domain types.
//!
//! The file is read strictly (unknown keys are errors) into the private `raw` structs, then
//! every value is checked and turned into what the rest of the gateway uses: socket
//! addresses, durations, keys bound to algorithms, compiled routes, TLS configurations. The
//! hot path never re-validates any of it. Every problem is reported with file, line, key
//! path and the offending value (secrets excepted), and validation goes on after the first
//! problem so `authgate check` can list them all.

mod browser;
mod client_certs;
mod issuers;
mod raw;
mod values;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method, uri};
use ipnet::IpNet;
use toml::Spanned;

pub use crate::buckets::{Rate, RatePer};
use crate::client_cert::ClientIdentity;
use crate::cors::Cors;
pub use crate::error::ErrorBody;
use crate::headers;
use crate::jwt::{Algorithm, Key};
use crate::routes::{
    Auth, CallerKind, HostPattern, LimitKey, PathPattern, RateLimit, Require, Route, RouteTable,
    normalize,
};
use crate::tls::{self, ClientAuth};
pub use browser::{Browser, Provider, SameSite};
pub use issuers::{
    Bearer, DEFAULT_ISSUER_ALGORITHMS, DEFAULT_JWKS_TIMEOUT, ExternalIssuer, JwksSource,
};
use raw::{RawConfig, RawPreviousKey, Source};
pub use values::parse_duration;
use values::{parse_size, read_source, source_path, trim_secret};

/// Limits a TLS client gets to finish its handshake: a peer that opens a socket and stalls
/// would otherwise hold it forever (hyper has no such timeout). HAProxy's and Envoy's edge
/// examples use 10 s or less for the whole request head.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to receive a request's headers (slowloris): HAProxy's `timeout http-request 10s`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head: above nginx's 8 KiB buffers, below Envoy's 60 KiB default.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most request headers: hyper's and nginx's practical limit; more is an attack or a bug.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Largest request body a route accepts: nginx's `client_max_body_size` is 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 20;
/// Longest silence between two pieces of a request body (nginx `client_body_timeout` is
/// 60 s; an API client that pauses 30 s mid-upload is gone).
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more wait in the kernel's accept queue. Sized for a sidecar
/// or an edge replica; each costs a file descriptor and a few KiB.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Envoy's edge guidance: 100 concurrent streams per HTTP/2 connection.
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Grace for in-flight requests at shutdown: under Kubernetes' 30 s default termination
/// grace period, so the kubelet's SIGKILL never lands first.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// Verified tokens remembered: enough for every active user of a busy service at once,
/// ~1 KiB each.
pub const DEFAULT_VERIFIED_CACHE: usize = 10_000;
/// Where the gateway's own endpoints live: Flask-JWT-Extended examples use `/auth`.
pub const DEFAULT_ACCOUNTS_PREFIX: &str = "/auth";
/// NIST SP 800-63B asks for at least 8; 10 leaves room for passphrases without pain.
pub const DEFAULT_MIN_PASSWORD_LENGTH: usize = 10;
/// Failed logins per client IP: enough for an office of humans behind one NAT address
/// (successful logins cost none of it), too few for a guesser or a password sprayer.
pub const DEFAULT_LOGIN_RATE_PER_IP: Rate = Rate {
    count: 20,
    per: RatePer::Minute,
};
/// Failed logins per username from one client IP: OWASP's "a handful of tries, then
/// wait", without letting anyone else's failures lock the user out.
pub const DEFAULT_LOGIN_RATE_PER_USER: Rate = Rate {
    count: 5,
    per: RatePer::Minute,
};
/// Failed logins per username from all IPs together, the cap on a distributed guesser.
/// Once spent it refuses only the IPs that failed for that user within the hour, so it
/// can be low: 720 guesses a day against a 10-character password, while the user logs in
/// from anywhere that has not been guessing.
pub const DEFAULT_LOGIN_RATE_PER_USER_ALL_IPS: Rate = Rate {
    count: 30,
    per: RatePer::Hour,
};
/// Registrations per client IP (each one an argon2 hash and a stored user): people
/// register once, so a household or an office seldom needs 20 in an hour, while a script
/// is held to 480 accounts a day per address.
pub const DEFAULT_REGISTER_RATE_PER_IP: Rate = Rate {
    count: 20,
    per: RatePer::Hour,
};
/// Flask-JWT-Extended's default access-token lifetime.
pub const DEFAULT_ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
/// A week: long enough to stay logged in, short enough that a leaked token dies.
pub const DEFAULT_REFRESH_TTL: Duration = Duration::from_secs(7 * 86_400);
/// `tokens.max_lifetime`, unless set, is this many times the longer of the two TTLs: room
/// for tokens issued before a TTL was halved, and still a bound on what a signed token
/// may claim (14 days with the default TTLs).
pub const DEFAULT_MAX_LIFETIME_TTL_FACTOR: u32 = 2;
/// Clock skew tolerated on `exp`, `nbf` and `iat`; below the 60 s used by the benchmark's
/// "expired" check (`exp` = now − 60).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
pub const DEFAULT_ISSUER: &str = "authgate";
pub const DEFAULT_AUDIENCE: &str = "authgate";
pub const DEFAULT_USER_HEADER: &str = "X-Auth-User";
/// An unreachable upstream should fail fast; nginx's `proxy_connect_timeout` is 60 s, which
/// is too long for an API behind a gateway.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time from sending a request to the upstream's response headers (nginx
/// `proxy_read_timeout` 60 s, HAProxy examples 30 s).
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// An idle pooled connection is closed after this: most servers close theirs after
/// 60–120 s, and a request sent into a connection the server is closing is lost (hyper's
/// own pool uses 90 s). Set it below the upstream's own keep-alive timeout.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The validated configuration. Cheap to share behind an `Arc`; never mutated.
#[derive(Debug)]
pub struct Config {
    pub file: PathBuf,
    pub server: Server,
    pub admin: Option<Admin>,
    pub tokens: Tokens,
    /// `[store]`: where users and revocations live. Without it there are no accounts; the
    /// gateway only verifies tokens issued elsewhere.
    pub store: Option<crate::store::StoreUrl>,
    pub accounts: AccountsConfig,
    pub identity: Identity,
    pub upstreams: Vec<Upstream>,
    pub routes: RouteTable,
    /// `[[client_identity]]`, in file order: the first whose pattern matches names a
    /// client certificate.
    pub client_identities: Vec<ClientIdentity>,
    /// `[[issuer]]`: other issuers whose tokens are accepted, in file order.
    pub issuers: Vec<ExternalIssuer>,
    /// The shape of the gateway's own error bodies (`[compat] error_body`).
    pub error_body: ErrorBody,
    /// `[browser]`: the login page and cookie sessions; `None`: API-only.
    pub browser: Option<Browser>,
    /// Things that load but deserve a look (`authgate check` prints them).
    pub warnings: Vec<ConfigIssue>,
    /// Development material generated because it was missing (logged at start).
    pub generated: Vec<PathBuf>,
}

#[derive(Debug)]
pub struct Server {
    pub listen: SocketAddr,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Whether clients must present a certificate; `None`: no `client_ca`, none asked for.
    pub client_auth: Option<ClientAuth>,
    pub trusted_proxies: Vec<IpNet>,
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub drain_timeout: Duration,
    /// Runtime worker threads; `None`: one per available core.
    pub worker_threads: Option<usize>,
    pub max_headers: usize,
    /// Default body limit of routes without their own.
    pub max_body_bytes: u64,
    pub body_idle_timeout: Duration,
    pub max_connections: usize,
    pub http2_max_concurrent_streams: u32,
}

#[derive(Debug)]
pub struct Admin {
    pub listen: SocketAddr,
}

#[derive(Debug)]
pub struct Tokens {
    /// The signing key first, then `previous_keys`.
    pub keys: Vec<Key>,
    pub issuer: String,
    pub audience: String,
    pub leeway: Duration,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Longest `exp - iat` (or `exp - now`) a token may claim; at least both TTLs.
    pub max_lifetime: Duration,
    /// Verified access tokens kept (0: none).
    pub verified_cache: usize,
}

/// `[accounts]`: the gateway's own endpoints (used when a store is configured).
#[derive(Debug, Clone)]
pub struct AccountsConfig {
    pub prefix: String,
    /// Where each endpoint answers: under `prefix`, or where `paths` puts it.
    pub paths: AccountPaths,
    pub registration: bool,
    pub min_password_length: usize,
    /// Failed logins per client IP.
    pub login_rate_per_ip: Rate,
    /// Failed logins per (username, client IP).
    pub login_rate_per_user: Rate,
    /// Failed logins per username from all IPs; spent, it refuses the IPs that failed.
    pub login_rate_per_user_all_ips: Rate,
    /// Registrations per client IP, a budget apart from the login ones.
    pub register_rate_per_ip: Rate,
}

/// The account endpoints' paths, canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPaths {
    pub register: String,
    pub login: String,
    pub refresh: String,
    pub logout: String,
    pub me: String,
}

impl AccountPaths {
    /// Every endpoint under `prefix`: `{prefix}/login`, and so on.
    pub fn under(prefix: &str) -> AccountPaths {
        AccountPaths {
            register: format!("{prefix}/register"),
            login: format!("{prefix}/login"),
            refresh: format!("{prefix}/refresh"),
            logout: format!("{prefix}/logout"),
            me: format!("{prefix}/me"),
        }
    }
}

impl AccountsConfig {
    /// Every rate the accounts limit by: a reload that changes one starts new buckets.
    pub fn rates(&self) -> [Rate; 4] {
        [
            self.login_rate_per_ip,
            self.login_rate_per_user,
            self.login_rate_per_user_all_ips,
            self.register_rate_per_ip,
        ]
    }
}

#[derive(Debug)]
pub struct Identity {
    pub user_header: HeaderName,
    /// Header → claim name, in file order.
    pub claim_headers: Vec<(HeaderName, String)>,
    pub forward_authorization: bool,
}

impl Identity {
    /// Every header name the gateway sets from a verified token.
    pub fn header_names(&self) -> impl Iterator<Item = &HeaderName> {
        std::iter::once(&self.user_header).chain(self.claim_headers.iter().map(|(h, _)| h))
    }
}

#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub target: UpstreamTarget,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// How long a pooled keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
}

#[derive(Debug)]
pub enum UpstreamTarget {
    /// `builtin:echo`: answers with the request it got, as JSON.
    Echo,
    Http {
        scheme: uri::Scheme,
        authority: uri::Authority,
        /// For https: the TLS client configuration (the upstream's `ca`, or system roots).
        tls: Option<Arc<rustls::ClientConfig>>,
    },
}

/// One problem (or warning) in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}: {}", self.file, line, self.key, self.message),
            None => write!(f, "{}: {}: {}", self.file, self.key, self.message),
        }
    }
}

/// Every problem found in one config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// How loading may touch the disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// With `[dev] generate_missing = true`: write generated material to its configured
    /// path (serving) rather than only holding it in memory (`check`, `explain`).
    pub write_generated: bool,
}

impl Config {
    /// Reads and validates a config file. Relative paths inside it are resolved from its
    /// folder.
    pub fn load(path: &Path, options: LoadOptions) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigIssue {
                file: path.display().to_string(),
                line: None,
                key: "(file)".into(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        Config::from_toml_str(&text, path, options)
    }

    /// Validates config text as if read from `path` (which names it in messages and is the
    /// base of relative paths).
    pub fn from_toml_str(
        text: &str,
        path: &Path,
        options: LoadOptions,
    ) -> Result<Config, ConfigErrors> {
        let mut ctx = Ctx {
            file: path.display().to_string(),
            text,
            base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            errors: Vec::new(),
            warnings: Vec::new(),
            generate: false,
            write_generated: options.write_generated,
            generated: Vec::new(),
        };
        let raw = ctx.parse()?;
        let config = ctx.validate(raw, path);
        if ctx.errors.is_empty()
            && let Some(config) = config
        {
            return Ok(config);
        }
        Err(ConfigErrors(sorted(ctx.errors)))
    }
}

/// Validation state: where we are, and what has been found so far.
struct Ctx<'a> {
    file: String,
    text: &'a str,
    base: PathBuf,
    errors: Vec<ConfigIssue>,
    warnings: Vec<ConfigIssue>,
    generate: bool,
    write_generated: bool,
    generated: Vec<PathBuf>,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1
    }

    fn issue(
        &self,
        span: Option<std::ops::Range<usize>>,
        key: &str,
        message: String,
    ) -> ConfigIssue {
        ConfigIssue {
            file: self.file.clone(),
            line: span.map(|s| self.line_of(s.start)),
            key: key.to_owned(),
            message,
        }
    }

    fn error<T>(&mut self, at: &Spanned<T>, key: &str, message: impl Into<String>) {
        let issue = self.issue(Some(at.span()), key, message.into());
        self.errors.push(issue);
    }

    fn warn<T>(&mut self, at: &Spanned<T>, key: &str, message: impl Into<String>) {
        let issue = self.issue(Some(at.span()), key, message.into());
        self.warnings.push(issue);
    }

    /// Deserializes the file. Unknown keys become errors but do not stop validation. A value
    /// of the wrong type is an error too, and its line is blanked (offsets kept, so every
    /// other span still points into the file) and the file read again, so one wrong value
    /// does not hide the problems after it; only a missing required key stops validation.
    fn parse(&mut self) -> Result<RawConfig, ConfigErrors> {
        /// Bounds the passes, one per wrong value.
        const MAX_PASSES: usize = 64;
        let mut text = self.text.to_owned();
        let mut unknown_seen = HashSet::new();
        for _ in 0..MAX_PASSES {
            let deserializer = toml::Deserializer::parse(&text).map_err(|e| {
                ConfigErrors(vec![self.issue(
                    e.span(),
                    "(syntax)",
                    e.message().to_owned(),
                )])
            })?;
            let mut unknown = Vec::new();
            let mut on_unknown =
                |path: serde_ignored::Path<'_>| unknown.push(raw::ignored_path(&path));
            let parsed = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
                deserializer,
                &mut on_unknown,
            ));
            // Each pass reads up to its first wrong value: an unknown key may show up late.
            for path in unknown {
                let key = raw::display_path(&path);
                if unknown_seen.insert(key.clone()) {
                    let issue = self.issue(
                        raw::key_span(self.text, &path),
                        &key,
                        raw::unknown_key_message(&path),
                    );
                    self.errors.push(issue);
                }
            }
            let error = match parsed {
                Ok(raw) => return Ok(raw),
                Err(error) => error,
            };
            let key = raw::display_path(&raw::error_path(error.path()));
            let inner = error.into_inner();
            let span = inner.span();
            // A missing key has nothing to blank: the structure itself is short of it.
            let structural = inner.message().starts_with("missing field");
            let issue = self.issue(span.clone(), &key, inner.message().to_owned());
            self.errors.push(issue);
            if structural || !span.is_some_and(|span| blank_lines(&mut text, span)) {
                break;
            }
        }
        Err(ConfigErrors(sorted(std::mem::take(&mut self.errors))))
    }

    fn duration(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(v) => match parse_duration(v.get_ref()) {
                Ok(d) => d,
                Err(message) => {
                    self.error(v, key, message);
                    default
                }
            },
        }
    }

    /// The PEM of an optional `ca` file (relative to the config); an unreadable one is an
    /// error at `{key}.ca`.
    fn ca_file(&mut self, ca: Option<&Spanned<String>>, key: &str) -> Result<Option<Vec<u8>>, ()> {
        let Some(ca) = ca else {
            return Ok(None);
        };
        match values::read_file(&values::resolve(&self.base, ca.get_ref())) {
            Ok(pem) => Ok(Some(pem)),
            Err(message) => {
                self.error(ca, &format!("{key}.ca"), message);
                Err(())
            }
        }
    }

    /// A whole number within `range`, or the default with an error.
    fn count(
        &mut self,
        value: &Option<Spanned<i64>>,
        key: &str,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
    ) -> usize {
        let Some(value) = value else {
            return default;
        };
        match usize::try_from(*value.get_ref()) {
            Ok(n) if range.contains(&n) => n,
            _ => {
                self.error(
                    value,
                    key,
                    format!(
                        "{} is outside {}..{}",
                        value.get_ref(),
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
        }
    }

    /// A size such as `"1MiB"`, or the default with an error.
    fn size(&mut self, value: &Option<Spanned<String>>, key: &str, default: u64) -> u64 {
        match value {
            None => default,
            Some(v) => match parse_size(v.get_ref()) {
                Ok(n) => n,
                Err(message) => {
                    self.error(v, key, message);
                    default
                }
            },
        }
    }

    fn socket_addr(&mut self, value: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match value.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    value,
                    key,
                    format!(
                        "\"{}\" is not an IP address and port, like \"0.0.0.0:8443\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// Reads key material; when it is missing, `[dev] generate_missing` is on and `make`
    /// is given, makes it.
    fn material(
        &mut self,
        source: &Spanned<Source>,
        key: &str,
        inline_is_path: bool,
        make: Option<&dyn Fn() -> Result<String, String>>,
    ) -> Option<Vec<u8>> {
        if self.generate
            && let Some(make) = make
            && let Some(path) = source_path(source.get_ref(), &self.base, inline_is_path)
            && !path.exists()
        {
            return self.generate_at(source, key, &path, make);
        }
        match read_source(source.get_ref(), &self.base, inline_is_path) {
            Ok(bytes) => Some(bytes),
            Err(message) => {
                self.error(source, key, message);
                None
            }
        }
    }

    fn generate_at<T>(
        &mut self,
        at: &Spanned<T>,
        key: &str,
        path: &Path,
        make: &dyn Fn() -> Result<String, String>,
    ) -> Option<Vec<u8>> {
        let text = match make() {
            Ok(text) => text,
            Err(message) => {
                self.error(at, key, message);
                return None;
            }
        };
        if self.write_generated {
            if let Err(e) = write_private(path, text.as_bytes()) {
                self.error(
                    at,
                    key,
                    format!("cannot write generated {}: {e}", path.display()),
                );
                return None;
            }
            self.generated.push(path.to_path_buf());
        } else {
            self.warn(
                at,
                key,
                format!(
                    "{} is missing; it will be generated at start (development only)",
                    path.display()
                ),
            );
        }
        Some(text.into_bytes())
    }

    fn validate(&mut self, raw: RawConfig, path: &Path) -> Option<Config> {
        if let Some(generate) = &raw.dev.generate_missing {
            self.generate = *generate.get_ref();
            if self.generate {
                self.warn(
                    generate,
                    "dev.generate_missing",
                    "missing TLS and signing keys are generated: development only, turn off in production",
                );
            }
        }
        let server = self.server(&raw.server);
        let admin = raw.admin.as_ref().and_then(|a| {
            self.socket_addr(&a.listen, "admin.listen")
                .map(|listen| Admin { listen })
        });
        let tokens = self.tokens(&raw.tokens);
        let store = raw.store.as_ref().and_then(|s| self.store(&s.url));
        let accounts = self.accounts(raw.accounts.as_ref());
        if raw.accounts.is_some() && raw.store.is_none() {
            let issue = self.issue(
                None,
                "accounts",
                "accounts need a [store] for their users".into(),
            );
            self.errors.push(issue);
        }
        if let (Some(tokens), Some(_)) = (&tokens, &store)
            && !tokens.keys[0].can_sign()
        {
            self.error(
                &raw.tokens.algorithm,
                "tokens.signing_key",
                "accounts issue tokens: the signing key must be a private key or a secret",
            );
        }
        if store.is_some() {
            for route in routes_under(&raw.route, &accounts.prefix) {
                self.warn(
                    &route.path,
                    "route",
                    format!(
                        "\"{}\" is under the accounts prefix \"{}\": the gateway's own endpoints there win",
                        route.path.get_ref(),
                        accounts.prefix
                    ),
                );
            }
        }
        let identity = self.identity(&raw.identity);
        let upstreams = self.upstreams(&raw.upstream);
        let default_body = server
            .as_ref()
            .map_or(DEFAULT_MAX_BODY_BYTES, |s| s.max_body_bytes);
        let routes = self.routes(&raw.route, &raw.upstream, default_body);
        let client_identities = self.client_identities(&raw);
        let local_issuer = raw
            .tokens
            .issuer
            .as_ref()
            .map_or(DEFAULT_ISSUER, |i| i.get_ref().as_str());
        let issuers = self.issuers(&raw.issuer, local_issuer);
        self.warn_clear_text(
            &raw,
            server.as_ref(),
            store.is_some(),
            identity.as_ref(),
            &upstreams,
        );
        if let (Some(server), Some(admin)) = (&server, &admin)
            && server.listen == admin.listen
            && server.listen.port() != 0
        {
            self.error(
                &raw.admin.as_ref()?.listen,
                "admin.listen",
                "the admin listener must not share the public listener's address",
            );
        }
        let browser = self.browser(raw.browser.as_ref(), store.is_some(), &issuers);
        let error_body = match raw.compat.error_body.as_ref() {
            None => ErrorBody::Rfc6750,
            Some(value) => match value.get_ref().as_str() {
                "rfc6750" => ErrorBody::Rfc6750,
                "flask-jwt-extended" => ErrorBody::FlaskJwtExtended,
                other => {
                    self.error(
                        value,
                        "compat.error_body",
                        format!("\"{other}\" is neither \"rfc6750\" nor \"flask-jwt-extended\""),
                    );
                    ErrorBody::Rfc6750
                }
            },
        };
        Some(Config {
            file: path.to_path_buf(),
            error_body,
            browser,
            server: server?,
            admin,
            tokens: tokens?,
            store,
            accounts,
            identity: identity?,
            upstreams,
            routes,
            client_identities,
            issuers,
            warnings: std::mem::take(&mut self.warnings),
            generated: std::mem::take(&mut self.generated),
        })
    }

    /// Warns where a credential would cross a network unencrypted: passwords and tokens to
    /// a listener without TLS, or the client's token to a plain-HTTP upstream. Loopback
    /// addresses cross no network (a sidecar, or TLS ended by a proxy on the same host).
    fn warn_clear_text(
        &mut self,
        raw: &RawConfig,
        server: Option<&Server>,
        accounts: bool,
        identity: Option<&Identity>,
        upstreams: &[Upstream],
    ) {
        if let Some(server) = server
            && server.tls.is_none()
            && !server.listen.ip().is_loopback()
        {
            let what = if accounts {
                "passwords and tokens"
            } else {
                "tokens"
            };
            self.warn(
                &raw.server.listen,
                "server.listen",
                format!(
                    "no tls on a listener that is not loopback: {what} cross the network in clear text; \
                     set server.tls, or end TLS in a proxy in front (and list it in trusted_proxies)"
                ),
            );
        }
        if identity.is_some_and(|i| i.forward_authorization) {
            for (i, up) in upstreams.iter().enumerate() {
                if let UpstreamTarget::Http {
                    scheme, authority, ..
                } = &up.target
                    && *scheme == uri::Scheme::HTTP
                    && !is_loopback_host(authority.host())
                {
                    self.warn(
                        &raw.upstream[i].url,
                        &format!("upstream[{i}].url"),
                        "identity.forward_authorization sends the client's token to this upstream in clear text; use https",
                    );
                }
            }
        }
    }

    fn server(&mut self, raw: &raw::RawServer) -> Option<Server> {
        let listen = self.socket_addr(&raw.listen, "server.listen");
        let client_auth = self.client_auth(raw);
        let tls = match &raw.tls {
            None => {
                if let Some(ca) = &raw.client_ca {
                    self.error(
                        ca,
                        "server.client_ca",
                        "client certificates need tls: add server.tls",
                    );
                }
                None
            }
            Some(tls) => self.server_tls(tls, raw.client_ca.as_ref().zip(client_auth)),
        };
        let mut trusted_proxies = Vec::new();
        for (i, proxy) in raw.trusted_proxies.iter().enumerate() {
            let text = proxy.get_ref();
            match text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
            {
                Ok(net) => trusted_proxies.push(net),
                Err(_) => self.error(
                    proxy,
                    &format!("server.trusted_proxies[{i}]"),
                    format!("\"{text}\" is not an IP address or CIDR range"),
                ),
            }
        }
        let max_header_bytes = match &raw.max_header_bytes {
            None => DEFAULT_MAX_HEADER_BYTES,
            Some(v) => match parse_size(v.get_ref()) {
                // hyper's smallest read buffer is 8 KiB.
                Ok(n) if (8192..=1 << 20).contains(&n) => n as usize,
                Ok(_) => {
                    self.error(
                        v,
                        "server.max_header_bytes",
                        format!("\"{}\" is outside 8KiB..1MiB", v.get_ref()),
                    );
                    DEFAULT_MAX_HEADER_BYTES
                }
                Err(message) => {
                    self.error(v, "server.max_header_bytes", message);
                    DEFAULT_MAX_HEADER_BYTES
                }
            },
        };
        Some(Server {
            listen: listen?,
            tls: tls.flatten(),
            client_auth,
            trusted_proxies,
            tls_handshake_timeout: self.duration(
                &raw.tls_handshake_timeout,
                "server.tls_handshake_timeout",
                DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            ),
            header_read_timeout: self.duration(
                &raw.header_read_timeout,
                "server.header_read_timeout",
                DEFAULT_HEADER_READ_TIMEOUT,
            ),
            max_header_bytes,
            drain_timeout: self.duration(
                &raw.drain_timeout,
                "server.drain_timeout",
                DEFAULT_DRAIN_TIMEOUT,
            ),
            max_headers: self.count(
                &raw.max_headers,
                "server.max_headers",
                DEFAULT_MAX_HEADERS,
                1..=10_000,
            ),
            max_body_bytes: self.size(
                &raw.max_body_bytes,
                "server.max_body_bytes",
                DEFAULT_MAX_BODY_BYTES,
            ),
            body_idle_timeout: self.duration(
                &raw.body_idle_timeout,
                "server.body_idle_timeout",
                DEFAULT_BODY_IDLE_TIMEOUT,
            ),
            max_connections: self.count(
                &raw.max_connections,
                "server.max_connections",
                DEFAULT_MAX_CONNECTIONS,
                1..=1_000_000,
            ),
            http2_max_concurrent_streams: self.count(
                &raw.http2_max_concurrent_streams,
                "server.http2_max_concurrent_streams",
                DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS as usize,
                1..=10_000,
            ) as u32,
            worker_threads: match &raw.worker_threads {
                Some(n) if !(1..=1024).contains(n.get_ref()) => {
                    self.error(
                        n,
                        "server.worker_threads",
                        format!("{} is outside 1..1024", n.get_ref()),
                    );
                    None
                }
                n => n.as_ref().map(|n| *n.get_ref()),
            },
        })
    }

    /// `Some(None)` never happens; the outer option is "could be built".
    fn server_tls(
        &mut self,
        raw: &Spanned<raw::RawTls>,
        client_ca: Option<(&Spanned<String>, ClientAuth)>,
    ) -> Option<Option<Arc<rustls::ServerConfig>>> {
        let tls = raw.get_ref();
        let cert_path = values::resolve(&self.base, tls.cert.get_ref());
        let key_path = source_path(tls.key.get_ref(), &self.base, true);
        let (cert, key) = if self.generate
            && !cert_path.exists()
            && key_path.as_ref().is_some_and(|k| !k.exists())
        {
            let (cert_pem, key_pem) = match tls::generate_dev_certificate() {
                Ok(pair) => pair,
                Err(e) => {
                    self.error(
                        raw,
                        "server.tls",
                        format!("cannot generate a development certificate: {e}"),
                    );
                    return None;
                }
            };
            let key =
                self.generate_at(&tls.key, "server.tls.key", key_path.as_deref()?, &|| {
                    Ok(key_pem.clone())
                })?;
            let cert = self.generate_at(&tls.cert, "server.tls.cert", &cert_path, &|| {
                Ok(cert_pem.clone())
            })?;
            (cert, key)
        } else {
            let cert = match values::read_file(&cert_path) {
                Ok(c) => Some(c),
                Err(message) => {
                    self.error(&tls.cert, "server.tls.cert", message);
                    None
                }
            };
            let key = self.material(&tls.key, "server.tls.key", true, None);
            (cert?, key?)
        };
        let ca = match client_ca {
            None => None,
            Some((ca, auth)) => match values::read_file(&values::resolve(&self.base, ca.get_ref()))
            {
                Ok(pem) => Some((pem, auth)),
                Err(message) => {
                    self.error(ca, "server.client_ca", message);
                    return None;
                }
            },
        };
        let ca = ca
            .as_ref()
            .map(|(pem, auth)| tls::ClientCa { pem, auth: *auth });
        match tls::server_config(&cert, &key, ca) {
            Ok(config) => Some(Some(config)),
            Err(e) => {
                self.error(raw, "server.tls", e.to_string());
                None
            }
        }
    }

    fn algorithm(&mut self, value: &Spanned<String>, key: &str) -> Option<Algorithm> {
        match value.get_ref().parse::<Algorithm>() {
            Ok(alg) => Some(alg),
            Err(_) => {
                self.error(
                    value,
                    key,
                    format!(
                        "\"{}\" is not a supported algorithm (HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn tokens(&mut self, raw: &raw::RawTokens) -> Option<Tokens> {
        let alg = self.algorithm(&raw.algorithm, "tokens.algorithm");
        let kid = raw.kid.as_ref().map(|k| k.get_ref().clone());
        let signing = match (alg, &raw.signing_key, &raw.secret) {
            (None, _, _) => None,
            (Some(_), Some(k), Some(_)) => {
                self.error(
                    k,
                    "tokens.signing_key",
                    "give either signing_key or secret, not both",
                );
                None
            }
            (Some(alg), None, None) => {
                self.error(
                    &raw.algorithm,
                    "tokens",
                    format!(
                        "{alg:?} needs {}",
                        if is_hmac(alg) {
                            "a secret"
                        } else {
                            "a signing_key"
                        }
                    ),
                );
                None
            }
            (Some(alg), Some(pem), None) => {
                self.pem_key(alg, pem, "tokens.signing_key", kid.clone(), true)
            }
            (Some(alg), None, Some(secret)) => {
                self.secret_key(alg, secret, "tokens.secret", kid.clone(), true)
            }
        };
        if let (Some(key), Some(at)) = (&signing, &raw.signing_key)
            && !key.can_sign()
        {
            self.warn(
                at,
                "tokens.signing_key",
                "a public key verifies tokens but cannot sign them (token mint, login)",
            );
        }
        let mut keys: Vec<Key> = signing.into_iter().collect();
        for (i, prev) in raw.previous_keys.iter().enumerate() {
            let key_path = format!("tokens.previous_keys[{i}]");
            if let Some(key) = self.previous_key(prev, &key_path, alg) {
                keys.push(key);
            }
        }
        let mut seen = HashSet::new();
        for (i, key) in keys.iter().enumerate() {
            if !seen.insert(key.kid.clone()) {
                let at = if i == 0 {
                    raw.algorithm.span()
                } else {
                    raw.previous_keys[i - 1].span()
                };
                let issue = self.issue(
                    Some(at),
                    "tokens.previous_keys",
                    format!("two keys share the kid \"{}\"", key.kid),
                );
                self.errors.push(issue);
            }
        }
        let text = |v: &Option<Spanned<String>>, default: &str| {
            v.as_ref()
                .map_or_else(|| default.to_owned(), |s| s.get_ref().clone())
        };
        let access_ttl = self.duration(&raw.access_ttl, "tokens.access_ttl", DEFAULT_ACCESS_TTL);
        let refresh_ttl =
            self.duration(&raw.refresh_ttl, "tokens.refresh_ttl", DEFAULT_REFRESH_TTL);
        let longest_ttl = access_ttl.max(refresh_ttl);
        let max_lifetime = self.duration(
            &raw.max_lifetime,
            "tokens.max_lifetime",
            longest_ttl.saturating_mul(DEFAULT_MAX_LIFETIME_TTL_FACTOR),
        );
        if let Some(at) = &raw.max_lifetime
            && max_lifetime < longest_ttl
        {
            self.error(
                at,
                "tokens.max_lifetime",
                format!(
                    "\"{}\" is shorter than access_ttl or refresh_ttl: the gateway would refuse its own tokens",
                    at.get_ref()
                ),
            );
        }
        let tokens = Tokens {
            issuer: text(&raw.issuer, DEFAULT_ISSUER),
            audience: text(&raw.audience, DEFAULT_AUDIENCE),
            leeway: self.duration(&raw.leeway, "tokens.leeway", DEFAULT_LEEWAY),
            access_ttl,
            refresh_ttl,
            max_lifetime,
            verified_cache: self.count(
                &raw.verified_cache,
                "tokens.verified_cache",
                DEFAULT_VERIFIED_CACHE,
                0..=10_000_000,
            ),
            keys,
        };
        (!tokens.keys.is_empty()).then_some(tokens)
    }

    /// A PEM key for `alg`; the signing key (`generate`) may be made in development.
    fn pem_key(
        &mut self,
        alg: Algorithm,
        source: &Spanned<Source>,
        key: &str,
        kid: Option<String>,
        generate: bool,
    ) -> Option<Key> {
        if is_hmac(alg) {
            self.error(
                source,
                key,
                format!("{alg:?} is an HMAC algorithm: give `secret`, not a PEM key"),
            );
            return None;
        }
        let make = || crate::jwt::generate_key(alg).map_err(|e| e.to_string());
        let pem = self.material(source, key, true, generate.then_some(&make as _))?;
        match Key::from_pem(alg, &pem, kid) {
            Ok(k) => Some(k),
            Err(e) => {
                self.error(source, key, e.to_string());
                None
            }
        }
    }

    fn secret_key(
        &mut self,
        alg: Algorithm,
        source: &Spanned<Source>,
        key: &str,
        kid: Option<String>,
        generate: bool,
    ) -> Option<Key> {
        if matches!(source.get_ref(), Source::Inline(_)) {
            self.warn(source, key, "the secret is written in the config file; prefer { env = \"VAR\" } or { file = \"path\" }");
        }
        let make = || crate::jwt::generate_key(alg).map_err(|e| e.to_string());
        let secret =
            trim_secret(self.material(source, key, false, generate.then_some(&make as _))?);
        match Key::from_secret(alg, &secret, kid) {
            Ok(k) => Some(k),
            Err(e) => {
                self.error(source, key, e.to_string());
                None
            }
        }
    }

    fn previous_key(
        &mut self,
        raw: &Spanned<RawPreviousKey>,
        key: &str,
        default_alg: Option<Algorithm>,
    ) -> Option<Key> {
        let prev = raw.get_ref();
        let alg = match &prev.algorithm {
            Some(name) => {
                let spanned = Spanned::new(raw.span(), name.clone());
                self.algorithm(&spanned, &format!("{key}.algorithm"))?
            }
            None => default_alg?,
        };
        // Spans of the inner values are not kept by the untagged entry; the entry's own
        // span names the line.
        let at = |v: &Source| Spanned::new(raw.span(), v.clone());
        match (&prev.key, &prev.secret) {
            (Some(pem), None) => self.pem_key(alg, &at(pem), key, prev.kid.clone(), false),
            (None, Some(secret)) => self.secret_key(alg, &at(secret), key, prev.kid.clone(), false),
            _ => {
                self.error(raw, key, "give exactly one of key or secret");
                None
            }
        }
    }

    fn store(&mut self, url: &Spanned<String>) -> Option<crate::store::StoreUrl> {
        let text = url.get_ref();
        if text.starts_with("redis://") {
            // Parsed as the client will read it, without connecting.
            return match redis::IntoConnectionInfo::into_connection_info(text.as_str()) {
                Ok(_) => Some(crate::store::StoreUrl::Redis(text.clone())),
                // Not echoed: the URL may hold a password.
                Err(e) => {
                    self.error(url, "store.url", format!("not a Redis URL: {e}"));
                    None
                }
            };
        }
        match text.strip_prefix("sqlite://") {
            Some(path) if !path.is_empty() => Some(crate::store::StoreUrl::Sqlite(
                // `sqlite:///abs/file.db` is absolute; `sqlite://data/file.db` relative to the
                // config file's folder.
                values::resolve(&self.base, path),
            )),
            _ => {
                // Only the scheme is echoed: the rest may hold a password.
                let what = match text.split_once("://") {
                    Some(("rediss", _)) => "rediss:// (Redis over TLS) is not supported".into(),
                    Some((scheme, _)) => format!("\"{scheme}://\" is not a store URL"),
                    None => "not a store URL".to_owned(),
                };
                self.error(
                    url,
                    "store.url",
                    format!("{what}; use \"sqlite://path/to/file.db\" or \"redis://host:port/db\""),
                );
                None
            }
        }
    }

    fn accounts(&mut self, raw: Option<&raw::RawAccounts>) -> AccountsConfig {
        let mut config = AccountsConfig {
            prefix: DEFAULT_ACCOUNTS_PREFIX.to_owned(),
            paths: AccountPaths::under(DEFAULT_ACCOUNTS_PREFIX),
            registration: true,
            min_password_length: DEFAULT_MIN_PASSWORD_LENGTH,
            login_rate_per_ip: DEFAULT_LOGIN_RATE_PER_IP,
            login_rate_per_user: DEFAULT_LOGIN_RATE_PER_USER,
            login_rate_per_user_all_ips: DEFAULT_LOGIN_RATE_PER_USER_ALL_IPS,
            register_rate_per_ip: DEFAULT_REGISTER_RATE_PER_IP,
        };
        let Some(raw) = raw else {
            return config;
        };
        if let Some(prefix) = &raw.prefix {
            let text = prefix.get_ref();
            match normalize(text) {
                Ok(canonical)
                    if canonical == *text
                        && text.len() > 1
                        && !text.ends_with('/')
                        && !text.contains(';') =>
                {
                    config.prefix = text.clone();
                    config.paths = AccountPaths::under(text);
                }
                _ => self.error(
                    prefix,
                    "accounts.prefix",
                    format!("\"{text}\" is not a path prefix like \"/auth\""),
                ),
            }
        }
        if let Some(paths) = &raw.paths {
            for (given, path, name) in [
                (&paths.register, &mut config.paths.register, "register"),
                (&paths.login, &mut config.paths.login, "login"),
                (&paths.refresh, &mut config.paths.refresh, "refresh"),
                (&paths.logout, &mut config.paths.logout, "logout"),
                (&paths.me, &mut config.paths.me, "me"),
            ] {
                let Some(given) = given else { continue };
                let text = given.get_ref();
                match normalize(text) {
                    Ok(canonical)
                        if canonical == *text && text.len() > 1 && !text.contains(';') =>
                    {
                        text.clone_into(path);
                    }
                    _ => self.error(
                        given,
                        &format!("accounts.paths.{name}"),
                        format!("\"{text}\" is not a path like \"/login\""),
                    ),
                }
            }
        }
        if let Some(open) = raw.registration {
            config.registration = open;
        }
        if let Some(min) = &raw.min_password_length {
            match usize::try_from(*min.get_ref()) {
                Ok(n) if (1..=256).contains(&n) => config.min_password_length = n,
                _ => self.error(
                    min,
                    "accounts.min_password_length",
                    format!("{} is outside 1..256", min.get_ref()),
                ),
            }
        }
        for (value, key, slot) in [
            (
                &raw.login_rate_per_ip,
                "accounts.login_rate_per_ip",
                &mut config.login_rate_per_ip,
            ),
            (
                &raw.login_rate_per_user,
                "accounts.login_rate_per_user",
                &mut config.login_rate_per_user,
            ),
            (
                &raw.login_rate_per_user_all_ips,
                "accounts.login_rate_per_user_all_ips",
                &mut config.login_rate_per_user_all_ips,
            ),
            (
                &raw.register_rate_per_ip,
                "accounts.register_rate_per_ip",
                &mut config.register_rate_per_ip,
            ),
        ] {
            if let Some(value) = value {
                match parse_rate(value.get_ref()) {
                    Some(rate) => *slot = rate,
                    None => self.error(
                        value,
                        key,
                        format!(
                            "\"{}\" is not a rate like \"5/m\" (per s, m or h)",
                            value.get_ref()
                        ),
                    ),
                }
            }
        }
        config
    }

    fn header_name(
        &mut self,
        at: &Spanned<String>,
        key: &str,
        taken: &mut HashSet<String>,
    ) -> Option<HeaderName> {
        let text = at.get_ref();
        let Ok(name) = HeaderName::from_bytes(text.as_bytes()) else {
            self.error(at, key, format!("\"{text}\" is not a valid header name"));
            return None;
        };
        let folded = headers::fold(name.as_str());
        if headers::is_reserved(&folded) {
            self.error(
                at,
                key,
                format!("\"{text}\" is a header the gateway manages itself"),
            );
            return None;
        }
        if !taken.insert(folded.into_owned()) {
            self.error(
                at,
                key,
                format!("\"{text}\" is already used as an identity header"),
            );
            return None;
        }
        Some(name)
    }

    fn identity(&mut self, raw: &raw::RawIdentity) -> Option<Identity> {
        let mut taken = HashSet::new();
        let default = Spanned::new(0..0, DEFAULT_USER_HEADER.to_owned());
        let user_header = self.header_name(
            raw.user_header.as_ref().unwrap_or(&default),
            "identity.user_header",
            &mut taken,
        );
        let mut claim_headers = Vec::new();
        for (header, claim) in &raw.claim_headers {
            let key = format!("identity.claim_headers.{header}");
            let at = Spanned::new(claim.span(), header.clone());
            if let Some(name) = self.header_name(&at, &key, &mut taken) {
                claim_headers.push((name, claim.get_ref().clone()));
            }
        }
        Some(Identity {
            user_header: user_header?,
            claim_headers,
            forward_authorization: raw.forward_authorization,
        })
    }

    fn upstreams(&mut self, raw: &[raw::RawUpstream]) -> Vec<Upstream> {
        let mut upstreams = Vec::new();
        let mut names = HashSet::new();
        for (i, up) in raw.iter().enumerate() {
            let key = format!("upstream[{i}]");
            let name = up.name.get_ref();
            if name.is_empty() {
                self.error(&up.name, &format!("{key}.name"), "an upstream needs a name");
            } else if !names.insert(name.clone()) {
                self.error(
                    &up.name,
                    &format!("{key}.name"),
                    format!("two upstreams are named \"{name}\""),
                );
            }
            let connect_timeout = self.duration(
                &up.connect_timeout,
                &format!("{key}.connect_timeout"),
                DEFAULT_CONNECT_TIMEOUT,
            );
            let timeout = self.duration(
                &up.timeout,
                &format!("{key}.timeout"),
                DEFAULT_UPSTREAM_TIMEOUT,
            );
            let idle_timeout = self.duration(
                &up.idle_timeout,
                &format!("{key}.idle_timeout"),
                DEFAULT_UPSTREAM_IDLE_TIMEOUT,
            );
            if let Some(target) = self.upstream_target(up, &key) {
                upstreams.push(Upstream {
                    name: name.clone(),
                    target,
                    connect_timeout,
                    timeout,
                    idle_timeout,
                });
            }
        }
        upstreams
    }

    fn upstream_target(&mut self, up: &raw::RawUpstream, key: &str) -> Option<UpstreamTarget> {
        let url = up.url.get_ref();
        let url_key = format!("{key}.url");
        if url == "builtin:echo" {
            if let Some(ca) = &up.ca {
                self.error(ca, &format!("{key}.ca"), "builtin:echo takes no ca");
            }
            return Some(UpstreamTarget::Echo);
        }
        let bad = format!("\"{url}\" is not http://host:port, https://host:port or builtin:echo");
        let Ok(parsed) = url.parse::<http::Uri>() else {
            self.error(&up.url, &url_key, bad);
            return None;
        };
        let (Some(scheme), Some(authority)) =
            (parsed.scheme().cloned(), parsed.authority().cloned())
        else {
            self.error(&up.url, &url_key, bad);
            return None;
        };
        if !crate::head::port_fits(authority.as_str()) {
            self.error(
                &up.url,
                &url_key,
                format!("\"{url}\": the port is not a number from 0 to 65535"),
            );
            return None;
        }
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            self.error(
                &up.url,
                &url_key,
                format!("\"{url}\": an upstream URL has no path; requests keep theirs"),
            );
            return None;
        }
        let tls = if scheme == uri::Scheme::HTTPS {
            let ca = self.ca_file(up.ca.as_ref(), key).ok()?;
            match tls::client_config(ca.as_deref()) {
                Ok(config) => Some(Arc::new(config)),
                Err(e) => {
                    self.error(
                        up.ca.as_ref().unwrap_or(&up.url),
                        &format!("{key}.ca"),
                        e.to_string(),
                    );
                    return None;
                }
            }
        } else if scheme == uri::Scheme::HTTP {
            if let Some(ca) = &up.ca {
                self.error(ca, &format!("{key}.ca"), "ca is for https upstreams");
            }
            None
        } else {
            self.error(&up.url, &url_key, bad);
            return None;
        };
        Some(UpstreamTarget::Http {
            scheme,
            authority,
            tls,
        })
    }

    fn routes(
        &mut self,
        raw: &[raw::RawRoute],
        upstreams: &[raw::RawUpstream],
        default_body: u64,
    ) -> RouteTable {
        let mut routes = Vec::new();
        for (index, r) in raw.iter().enumerate() {
            let key = format!("route[{index}]");
            let pattern = self.route_path(&r.path, &format!("{key}.path"));
            let methods = r.methods.as_ref().map(|methods| {
                methods
                    .iter()
                    .enumerate()
                    .filter_map(|(j, m)| {
                        let text = m.get_ref();
                        let valid = !text.is_empty() && text.bytes().all(|b| b.is_ascii_uppercase());
                        match Method::from_bytes(text.as_bytes()) {
                            Ok(method) if valid => Some(method),
                            _ => {
                                self.error(m, &format!("{key}.methods[{j}]"), format!("\"{text}\" is not an HTTP method (upper case, like \"GET\")"));
                                None
                            }
                        }
                    })
                    .collect::<Vec<_>>()
            });
            let auth = match r.auth.as_ref().map(|a| a.get_ref().as_str()) {
                None | Some("required") => Auth::Required,
                Some("public") => Auth::Public,
                Some("optional") => Auth::Optional,
                Some("client_cert") => Auth::ClientCert,
                Some(other) => {
                    self.error(
                        r.auth.as_ref().unwrap_or(&r.path),
                        &format!("{key}.auth"),
                        format!("\"{other}\" is not \"required\", \"public\", \"optional\" or \"client_cert\""),
                    );
                    Auth::Required
                }
            };
            let require = r.require.as_ref().map_or_else(Require::default, |req| {
                let req = req.get_ref();
                let max_auth_age = req.max_auth_age.as_ref().map(|age| {
                    self.duration(
                        &Some(age.clone()),
                        &format!("{key}.require.max_auth_age"),
                        Duration::ZERO,
                    )
                });
                let kind = req.kind.as_ref().map(|kind| match kind.get_ref().as_str() {
                    "user" => CallerKind::User,
                    "api_key" => CallerKind::ApiKey,
                    other => {
                        self.error(
                            kind,
                            &format!("{key}.require.kind"),
                            format!("\"{other}\" is not \"user\" or \"api_key\""),
                        );
                        CallerKind::User
                    }
                });
                Require {
                    roles: req.roles.clone(),
                    any_roles: req.any_roles.clone(),
                    claims: req.claims.clone().into_iter().collect(),
                    fresh: req.fresh,
                    max_auth_age,
                    kind,
                }
            });
            if let Some(req) = &r.require {
                let refused = match auth {
                    Auth::Required => None,
                    Auth::Public => Some("a public route cannot require roles"),
                    Auth::Optional => Some(
                        "an optional route cannot require anything: a request without a token passes it",
                    ),
                    // Its caller has a name and roles, nothing else a requirement could read.
                    Auth::ClientCert => {
                        let other = req.get_ref();
                        (!other.claims.is_empty()
                            || other.fresh
                            || other.max_auth_age.is_some()
                            || other.kind.is_some())
                            .then_some(
                                "a client_cert route can require only roles and any_roles: a certificate's caller has no other claims",
                            )
                    }
                };
                if let Some(message) = refused {
                    self.error(req, &format!("{key}.require"), message);
                }
            }
            let rewrite = self.route_rewrite(r, &key);
            let host = r.host.as_ref().and_then(|host| {
                let pattern = HostPattern::parse(host.get_ref());
                if pattern.is_none() {
                    self.error(
                        host,
                        &format!("{key}.host"),
                        format!(
                            "\"{}\" is not a host name or \"*.\" and one (no port, no scheme)",
                            host.get_ref()
                        ),
                    );
                }
                pattern
            });
            let cors = r.cors.as_ref().and_then(|cors| self.route_cors(cors, &key));
            let rate_limit = r
                .rate_limit
                .as_ref()
                .and_then(|limit| self.route_rate_limit(limit, &key));
            let upstream = upstreams
                .iter()
                .position(|u| u.name.get_ref() == r.upstream.get_ref());
            if upstream.is_none() {
                self.error(
                    &r.upstream,
                    &format!("{key}.upstream"),
                    format!("no upstream named \"{}\"", r.upstream.get_ref()),
                );
            }
            let max_body_bytes = r.max_body_bytes.as_ref().map(|_| {
                self.size(
                    &r.max_body_bytes,
                    &format!("{key}.max_body_bytes"),
                    default_body,
                )
            });
            if let (Some(pattern), Some(upstream)) = (pattern, upstream) {
                routes.push(Route {
                    max_body_bytes: max_body_bytes.unwrap_or(default_body),
                    index,
                    host,
                    pattern,
                    methods,
                    auth,
                    require,
                    upstream,
                    websocket: r.websocket.unwrap_or(true),
                    rewrite,
                    cors,
                    rate_limit,
                });
            }
        }
        let table = RouteTable::new(routes);
        for (route, shadow) in table.unreachable() {
            let at = &raw[route.index].path;
            self.warn(
                at,
                &format!("route[{}]", route.index),
                format!(
                    "can never match: route[{}] has the same path and takes all its methods",
                    shadow.index
                ),
            );
        }
        for (i, up) in upstreams.iter().enumerate() {
            if !table.iter().any(|r| r.upstream == i) {
                self.warn(
                    &up.name,
                    &format!("upstream[{i}]"),
                    format!("no route uses upstream \"{}\"", up.name.get_ref()),
                );
            }
        }
        table
    }

    /// A route's `rate_limit`: `requests` (at least 1) per `"1s"`, `"1m"` or `"1h"`, by
    /// `key` `"user"` (the default) or `"ip"`.
    fn route_rate_limit(
        &mut self,
        raw: &Spanned<raw::RawRateLimit>,
        key: &str,
    ) -> Option<RateLimit> {
        let limit = raw.get_ref();
        let key = format!("{key}.rate_limit");
        let unit = limit.per.trim();
        let per = match unit.strip_prefix('1').unwrap_or(unit) {
            "s" => Some(RatePer::Second),
            "m" => Some(RatePer::Minute),
            "h" => Some(RatePer::Hour),
            _ => None,
        };
        if per.is_none() {
            self.error(
                raw,
                &format!("{key}.per"),
                format!("\"{}\" is not \"1s\", \"1m\" or \"1h\"", limit.per),
            );
        }
        if limit.requests == 0 {
            self.error(raw, &format!("{key}.requests"), "at least 1");
        }
        let by = match limit.key.as_deref() {
            None | Some("user") => Some(LimitKey::User),
            Some("ip") => Some(LimitKey::Ip),
            Some(other) => {
                self.error(
                    raw,
                    &format!("{key}.key"),
                    format!("\"{other}\" is neither \"user\" nor \"ip\""),
                );
                None
            }
        };
        Some(RateLimit {
            rate: Rate {
                count: (limit.requests > 0).then_some(limit.requests)?,
                per: per?,
            },
            key: by?,
        })
    }

    /// A route's `cors`: origins as `scheme://host[:port]` (or `*`), methods, header names,
    /// the preflight cache time.
    fn route_cors(&mut self, raw: &Spanned<raw::RawCors>, key: &str) -> Option<Cors> {
        let key = format!("{key}.cors");
        let cors = raw.get_ref();
        let mut valid = true;
        if cors.allow_origins.is_empty() {
            self.error(
                raw,
                &format!("{key}.allow_origins"),
                "list at least one origin",
            );
            valid = false;
        }
        for (i, origin) in cors.allow_origins.iter().enumerate() {
            let ok = origin == "*"
                || origin.parse::<http::Uri>().is_ok_and(|uri| {
                    uri.scheme().is_some()
                        && uri.authority().is_some()
                        && matches!(uri.path(), "" | "/")
                        && !origin.ends_with('/')
                        && uri.query().is_none()
                });
            if !ok {
                self.error(
                    raw,
                    &format!("{key}.allow_origins[{i}]"),
                    format!(
                        "\"{origin}\" is not an origin like \"https://app.example.com\" (or \"*\")"
                    ),
                );
                valid = false;
            }
        }
        let methods = cors
            .allow_methods
            .clone()
            .unwrap_or_else(|| ["GET", "HEAD", "POST"].map(str::to_owned).to_vec());
        let mut allow_methods = Vec::new();
        for (i, method) in methods.iter().enumerate() {
            match Method::from_bytes(method.as_bytes()) {
                Ok(m) if method.bytes().all(|b| b.is_ascii_uppercase()) => allow_methods.push(m),
                _ => {
                    self.error(
                        raw,
                        &format!("{key}.allow_methods[{i}]"),
                        format!("\"{method}\" is not an HTTP method (upper case, like \"GET\")"),
                    );
                    valid = false;
                }
            }
        }
        let mut allow_headers = Vec::new();
        for (i, name) in cors.allow_headers.iter().enumerate() {
            match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                Ok(name) => allow_headers.push(name),
                Err(_) => {
                    self.error(
                        raw,
                        &format!("{key}.allow_headers[{i}]"),
                        format!("\"{name}\" is not a header name"),
                    );
                    valid = false;
                }
            }
        }
        let max_age = match &cors.max_age {
            None => None,
            Some(text) => match parse_duration(text) {
                Ok(d) => Some(d),
                Err(message) => {
                    self.error(raw, &format!("{key}.max_age"), message);
                    valid = false;
                    None
                }
            },
        };
        valid.then_some(Cors {
            allow_origins: cors.allow_origins.clone(),
            allow_methods,
            allow_headers,
            allow_credentials: cors.allow_credentials,
            max_age,
        })
    }

    /// What replaces a route's matched prefix upstream: `strip_prefix = true` is `"/"`,
    /// `rewrite` a canonical path prefix of its own; not both.
    fn route_rewrite(&mut self, r: &raw::RawRoute, key: &str) -> Option<String> {
        let strip = r.strip_prefix.as_ref().filter(|s| *s.get_ref());
        match (strip, &r.rewrite) {
            (Some(strip), Some(_)) => {
                self.error(
                    strip,
                    &format!("{key}.strip_prefix"),
                    "strip_prefix and rewrite cannot both be set: rewrite = \"/\" strips",
                );
                None
            }
            (Some(_), None) => Some("/".to_owned()),
            (None, Some(to)) => {
                let rewrite_key = format!("{key}.rewrite");
                if to.get_ref().starts_with('=') {
                    self.error(
                        to,
                        &rewrite_key,
                        "a rewrite is a path prefix, not an exact path",
                    );
                    return None;
                }
                match self.route_path(to, &rewrite_key)? {
                    PathPattern::Prefix(prefix) => Some(prefix),
                    PathPattern::Exact(_) => None,
                }
            }
            (None, None) => None,
        }
    }

    fn route_path(&mut self, at: &Spanned<String>, key: &str) -> Option<PathPattern> {
        let text = at.get_ref();
        let (exact, path) = match text.strip_prefix('=') {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        if path.contains(['?', '#', ';']) {
            self.error(
                at,
                key,
                format!("\"{text}\": a route path has no query, fragment or ;parameters"),
            );
            return None;
        }
        match normalize(path) {
            Ok(canonical) if canonical == path => {}
            Ok(canonical) => {
                self.error(
                    at,
                    key,
                    format!(
                        "\"{text}\" is not in canonical form; write \"{}{canonical}\"",
                        if exact { "=" } else { "" }
                    ),
                );
                return None;
            }
            Err(e) => {
                self.error(
                    at,
                    key,
                    format!("\"{text}\" is not a valid route path: {e}"),
                );
                return None;
            }
        }
        Some(if exact {
            PathPattern::Exact(path.to_owned())
        } else if path.len() > 1 {
            PathPattern::Prefix(path.trim_end_matches('/').to_owned())
        } else {
            PathPattern::Prefix("/".to_owned())
        })
    }
}

/// `"5/m"`: a count per second, minute or hour, at least 1.
fn parse_rate(text: &str) -> Option<Rate> {
    let (count, per) = text.split_once('/')?;
    let count: u32 = count.trim().parse().ok().filter(|n| *n > 0)?;
    let per = match per.trim() {
        "s" => RatePer::Second,
        "m" => RatePer::Minute,
        "h" => RatePer::Hour,
        _ => return None,
    };
    Some(Rate { count, per })
}

/// The routes whose path lies under `prefix`.
fn routes_under<'a>(
    routes: &'a [raw::RawRoute],
    prefix: &'a str,
) -> impl Iterator<Item = &'a raw::RawRoute> {
    routes.iter().filter(move |r| {
        let path = r.path.get_ref().trim_start_matches('=');
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Issues in file order (those without a line first), so `check` reads top to bottom.
fn sorted(mut issues: Vec<ConfigIssue>) -> Vec<ConfigIssue> {
    issues.sort_by_key(|issue| issue.line);
    issues
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Writes generated key material readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests;

/// `localhost` or a loopback address, as an upstream URL names its host.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Replaces the lines that `span` touches with spaces (line breaks kept). False when there
/// was nothing left to blank there.
fn blank_lines(text: &mut String, span: std::ops::Range<usize>) -> bool {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |at| at + 1);
    let end = text[span.end.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |at| span.end + at);
    let lines = &text[start..end];
    // Blanking a table header would move its keys into the table before it.
    if lines.bytes().all(|b| b.is_ascii_whitespace())
        || lines.lines().any(|line| line.trim_start().starts_with('['))
    {
        return false;
    }
    // Byte for byte, so the offsets after it do not move.
    let blanked: String = text[start..end]
        .bytes()
        .map(|b| if b == b'\n' { '\n' } else { ' ' })
        .collect();
    text.replace_range(start..end, &blanked);
    true
}
