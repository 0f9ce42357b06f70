//! The command line: its grammar, and every command besides `serve` (which lives in
//! `main.rs`, next to the runtime it starts).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::auth::{Issuer, now_secs};
use crate::config::{Config, ConfigErrors, LoadOptions, UpstreamTarget};
use crate::error::error_chain;
use crate::jwt::{Algorithm, KeyError, SignError};
use crate::passwords::PasswordError;
use crate::routes::{self, Auth, LimitKey, Require, normalize};
use crate::store::{ApiKey, Store, StoreError, User};

#[derive(Debug, Parser)]
#[command(
    name = "authgate",
    version,
    about = "Authentication gateway: TLS, JWT, identity headers"
)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        env = "AUTHGATE_CONFIG",
        default_value = "gateway.toml"
    )]
    pub config: PathBuf,
    /// Log lines as JSON (the default when standard error is not a terminal) or text.
    #[arg(long, global = true, env = "AUTHGATE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve (the default).
    Serve,
    /// Validate the configuration; print every problem with its line; exit 1 if any.
    Check,
    /// Show which route a request matches, what it requires and where it goes.
    Explain {
        /// The request method, like GET.
        method: String,
        /// A path (`/admin/x?y=1`) or a whole URL.
        url: String,
    },
    /// Key material.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Development tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Accounts in the configured store (safe while a gateway runs on it).
    #[command(subcommand)]
    User(UserCommand),
    /// API keys for machines, in the configured store (safe while a gateway runs on it).
    #[command(subcommand)]
    Apikey(ApiKeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key and print it, once, on standard output: only its hash is stored.
    Create {
        /// The identity the key's callers get (a name no user has).
        name: String,
        /// A role; repeat for more.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Lifetime, like "90d" (default: no expiry).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List keys: name, roles, created, last used, expiry (never the key).
    List,
    /// Revoke a key: refused by every gateway on the store within a second.
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from standard input (no echo on a terminal).
    /// With registration off, this is how the first admin is made (in a pod:
    /// `kubectl exec -i POD -- authgate user add admin --role admin < password-file`).
    Add {
        /// 3 to 64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit.
        name: String,
        /// A role (letters, digits, '.', '_', '-', ':'); repeat for more.
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List users, their roles and state.
    List,
    /// Delete a user and refuse every token it holds.
    Remove { name: String },
    /// Replace a user's password (read from standard input) and end its sessions.
    SetPassword { name: String },
    /// Refuse the user's logins and every token it holds.
    Disable { name: String },
    /// Allow the user to log in again.
    Enable { name: String },
    /// Revoke every refresh token of the user and every access token issued until now.
    Revoke { name: String },
}

/// Every algorithm `key generate` makes a key for.
const KEY_ALGORITHMS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new signing key: a PKCS#8 PEM private key, or an HMAC secret for HS*.
    Generate {
        /// The algorithm the key signs with.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(KEY_ALGORITHMS))]
        alg: String,
        /// Where to write it (its folder is created).
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Sign an access token with the configured signing key (for trying the gateway).
    Mint {
        /// The subject (user name).
        #[arg(long)]
        sub: String,
        /// A role to put in the `roles` claim; repeat for more.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Lifetime, like "15m" (default: tokens.access_ttl).
        #[arg(long)]
        ttl: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Logs go to standard error, filtered by `RUST_LOG` (default `info`): one JSON object per
/// line for log collectors, or text for a terminal.
/// Longest field value a text log line writes (client text is already cut far shorter).
const LOGGED_FIELD_CHARS: usize = 4096;

pub fn init_logging(format: Option<LogFormat>) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::field::MakeExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    let format = format.unwrap_or(if terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        // The text format writes field values as they are: escape them, so no value can
        // start a line of its own or send a terminal an escape sequence.
        LogFormat::Text => builder
            .with_ansi(terminal)
            .fmt_fields(
                tracing_subscriber::fmt::format::debug_fn(|out, field, value| {
                    let text = format!("{value:?}");
                    if field.name() != "message" {
                        write!(out, "{field}=")?;
                    }
                    crate::untrusted::write_escaped(out, &text, LOGGED_FIELD_CHARS)
                })
                .delimited(" "),
            )
            .try_init(),
    };
}

/// Why a command failed. Printed with its causes, one line.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// Every problem of the config file, one per line.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// What the user asked for cannot be done as asked.
    #[error("{0}")]
    Refused(String),
    #[error("cannot {action} {}", .path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the password")]
    ReadPassword(#[source] std::io::Error),
    #[error("cannot hash the password")]
    Hashing(#[source] PasswordError),
    #[error("cannot generate the key")]
    Key(#[source] KeyError),
    #[error("cannot sign the token")]
    Signing(#[source] SignError),
}

fn refused(message: impl Into<String>) -> CliError {
    CliError::Refused(message.into())
}

pub fn run(command: Command, config_path: &Path) -> ExitCode {
    let result = match command {
        Command::Serve => Err(refused("serve is handled by main")),
        Command::Check => return check(config_path),
        Command::Explain { method, url } => explain(config_path, &method, &url),
        Command::Key(KeyCommand::Generate { alg, out, force }) => key_generate(&alg, &out, force),
        Command::Token(TokenCommand::Mint { sub, roles, ttl }) => {
            token_mint(config_path, sub, roles, ttl.as_deref())
        }
        Command::User(command) => user(config_path, command),
        Command::Apikey(command) => api_key(config_path, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("authgate: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> Result<Config, CliError> {
    Ok(Config::load(path, LoadOptions::default())?)
}

fn check(path: &Path) -> ExitCode {
    match Config::load(path, LoadOptions::default()) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            let count =
                |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
            println!(
                "{}: ok ({}, {})",
                path.display(),
                count(config.routes.iter().count(), "route"),
                count(config.upstreams.len(), "upstream")
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for issue in &errors.0 {
                eprintln!("error: {issue}");
            }
            ExitCode::FAILURE
        }
    }
}

fn explain(path: &Path, method: &str, url: &str) -> Result<(), CliError> {
    let config = load(path)?;
    let method: http::Method = method
        .parse()
        .map_err(|_| refused(format!("\"{method}\" is not an HTTP method")))?;
    let uri: http::Uri = url
        .parse()
        .map_err(|_| refused(format!("\"{url}\" is not a URL or path")))?;
    let mut out = std::io::stdout().lock();
    let mut say = |label: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{label:<11} {value}");
    };
    say(
        "request",
        &format!(
            "{method} {}",
            uri.path_and_query().map_or("/", |p| p.as_str())
        ),
    );
    let normalized = match normalize(uri.path()) {
        Ok(p) => p,
        Err(e) => {
            say("decision", &format!("400 {}", e.description()));
            return Ok(());
        }
    };
    say("normalized", &normalized);
    if let Some(authority) = uri.authority() {
        say("host", &routes::canonical_host(authority.as_str()));
    }
    let host = uri.authority().map(http::uri::Authority::as_str);
    let Some(route) = config.routes.match_request(&method, host, &normalized) else {
        say("decision", &"404 no route matches");
        return Ok(());
    };
    let methods = route.methods.as_ref().map_or_else(
        || "all".to_owned(),
        |ms| ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(" "),
    );
    say(
        "route",
        &format!(
            "route[{}] path = \"{}\",{} methods = {methods}",
            route.index,
            route.pattern,
            route
                .host
                .as_ref()
                .map_or_else(String::new, |h| format!(" host = \"{h}\",")),
        ),
    );
    say(
        "auth",
        &match route.auth {
            Auth::Public => "public (no token needed)".to_owned(),
            Auth::Optional => {
                "optional: a valid access token adds the identity; none passes without".to_owned()
            }
            Auth::Required if route.require.is_empty() => {
                "required: a valid access token".to_owned()
            }
            Auth::Required => format!("required: an access token {}", describe(&route.require)),
            Auth::ClientCert if route.require.is_empty() => {
                "client_cert: a verified client certificate that a [[client_identity]] names"
                    .to_owned()
            }
            Auth::ClientCert => format!(
                "client_cert: a verified client certificate that a [[client_identity]] names, {}",
                describe(&route.require)
            ),
        },
    );
    if let Some(cors) = &route.cors {
        let methods: Vec<&str> = cors.allow_methods.iter().map(|m| m.as_str()).collect();
        say(
            "cors",
            &format!(
                "origins {}; methods {}{}",
                cors.allow_origins.join(" "),
                methods.join(" "),
                if cors.allow_credentials {
                    "; with credentials"
                } else {
                    ""
                }
            ),
        );
    }
    if let Some(limit) = route.rate_limit {
        let per = match limit.rate.per {
            crate::config::RatePer::Second => "second",
            crate::config::RatePer::Minute => "minute",
            crate::config::RatePer::Hour => "hour",
        };
        let by = match limit.key {
            LimitKey::User => "caller",
            LimitKey::Ip => "client address",
        };
        say(
            "rate limit",
            &format!("{} requests a {per} per {by}", limit.rate.count),
        );
    }
    let upstream = &config.upstreams[route.upstream];
    let target = match &upstream.target {
        UpstreamTarget::Echo => "builtin:echo".to_owned(),
        UpstreamTarget::Http {
            scheme, authority, ..
        } => format!("{scheme}://{authority}"),
    };
    say("upstream", &format!("{} ({target})", upstream.name));
    let query = uri.query().map_or_else(String::new, |q| format!("?{q}"));
    let forwarded = route
        .rewritten(&normalized)
        .unwrap_or_else(|| normalized.into_owned());
    say("forwarded", &format!("{method} {forwarded}{query}"));
    Ok(())
}

/// A route's requirements as `explain` says them.
fn describe(require: &Require) -> String {
    let mut parts = Vec::new();
    if let Some(kind) = require.kind {
        parts.push(format!("only of kind {}", kind.as_str()));
    }
    if !require.roles.is_empty() {
        parts.push(format!("with roles {}", require.roles.join(", ")));
    }
    if !require.any_roles.is_empty() {
        parts.push(format!(
            "with one of the roles {}",
            require.any_roles.join(", ")
        ));
    }
    for (claim, value) in &require.claims {
        parts.push(format!("whose {claim} is or contains \"{value}\""));
    }
    if require.fresh {
        parts.push("fresh from a password login".to_owned());
    }
    if let Some(age) = require.max_auth_age {
        parts.push(format!(
            "from a password entered at most {}s ago",
            age.as_secs()
        ));
    }
    parts.join(", ")
}

fn key_generate(alg: &str, out: &Path, force: bool) -> Result<(), CliError> {
    let alg: Algorithm = alg
        .parse()
        .map_err(|_| refused(format!("\"{alg}\" is not a supported algorithm")))?;
    let text = crate::jwt::generate_key(alg).map_err(CliError::Key)?;
    if out.exists() && !force {
        return Err(refused(format!(
            "{} exists; pass --force to replace it",
            out.display()
        )));
    }
    let file_error = |action, path: &Path| {
        let path = path.to_owned();
        move |source| CliError::File {
            action,
            path,
            source,
        }
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(file_error("create", dir))?;
    }
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(out)
        .map_err(file_error("write", out))?;
    // `mode` only applies to a new file; a replaced one must not keep looser permissions.
    use std::os::unix::fs::PermissionsExt as _;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(file_error("restrict", out))?;
    file.write_all(text.as_bytes())
        .map_err(file_error("write", out))?;
    println!("wrote a {alg:?} key to {}", out.display());
    Ok(())
}

fn token_mint(
    path: &Path,
    sub: String,
    roles: Vec<String>,
    ttl: Option<&str>,
) -> Result<(), CliError> {
    let config = load(path)?;
    let ttl = match ttl {
        Some(text) => crate::config::parse_duration(text).map_err(CliError::Refused)?,
        None => config.tokens.access_ttl,
    };
    if ttl > config.tokens.max_lifetime {
        return Err(refused(
            "the ttl is longer than tokens.max_lifetime: the gateway would refuse the token",
        ));
    }
    if sub.is_empty() || !crate::jwt::is_forwardable(&sub) {
        return Err(refused(
            "the subject must be visible ASCII (it becomes the identity header)",
        ));
    }
    let issuer = Issuer::new(&config.tokens)
        .ok_or_else(|| refused("the signing key is a public key: it cannot sign"))?;
    let now = now_secs();
    let exp = now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let token = issuer
        .access_token(&sub, &roles, now, exp, crate::auth::Login::default())
        .map_err(CliError::Signing)?;
    println!("{token}");
    Ok(())
}

/// Opens the store the config names.
fn open_store(config: &Config) -> Result<std::sync::Arc<dyn Store>, CliError> {
    let url = config
        .store
        .as_ref()
        .ok_or_else(|| refused("the config has no [store]: there are no accounts"))?;
    Ok(crate::store::open(url)?)
}

fn user(config_path: &Path, command: UserCommand) -> Result<(), CliError> {
    let config = load(config_path)?;
    let store = open_store(&config)?;
    // Tokens issued in this second are revoked too: `iat` has one-second resolution.
    let now_and_before = now_secs() + 1;
    // The stored spelling: names ignore case, but tokens carry the stored one, and so
    // must every revocation.
    let stored_name = |name: &str| -> Result<String, CliError> {
        match store.user(name)? {
            Some(user) => Ok(user.name),
            None => Err(no_such_user(name)),
        }
    };
    match command {
        UserCommand::Add { name, roles } => {
            crate::accounts::check_username(&name).map_err(|e| refused(e.description()))?;
            for role in &roles {
                check_role(role)?;
            }
            let password = read_password(config.accounts.min_password_length)?;
            let hash = crate::passwords::hash_blocking(&password).map_err(CliError::Hashing)?;
            let user = User::new(name.clone(), hash, roles, now_secs());
            match store.create_user(&user) {
                Err(StoreError::Conflict) => {
                    return Err(refused(format!(
                        "\"{name}\" is taken by a user or an API key"
                    )));
                }
                other => other?,
            }
            println!("added {name}");
        }
        UserCommand::List => {
            for user in store.users()? {
                println!(
                    "{}\troles={}\t{}\tlogin={}",
                    user.name,
                    user.roles.join(","),
                    if user.disabled { "disabled" } else { "enabled" },
                    user.provider
                        .map_or_else(|| "password".to_owned(), |p| format!("provider:{p}")),
                );
            }
        }
        UserCommand::Remove { name } => {
            let name = stored_name(&name)?;
            if !store.remove_user(&name, now_and_before)? {
                return Err(no_such_user(&name));
            }
            println!("removed {name}; its tokens are refused");
        }
        UserCommand::SetPassword { name } => {
            let name = stored_name(&name)?;
            let password = read_password(config.accounts.min_password_length)?;
            let hash = crate::passwords::hash_blocking(&password).map_err(CliError::Hashing)?;
            store.set_password(&name, &hash)?;
            store.revoke_user(&name, now_and_before)?;
            println!("password of {name} replaced; its sessions are ended");
        }
        UserCommand::Disable { name } => {
            let name = stored_name(&name)?;
            store.set_disabled(&name, true)?;
            store.revoke_user(&name, now_and_before)?;
            println!("disabled {name}; its tokens are refused");
        }
        UserCommand::Enable { name } => {
            let name = stored_name(&name)?;
            store.set_disabled(&name, false)?;
            println!("enabled {name}");
        }
        UserCommand::Revoke { name } => {
            let name = stored_name(&name)?;
            store.revoke_user(&name, now_and_before)?;
            tracing::info!(target: "authgate::audit", event = "revoke", user = %name, "revoked from the command line");
            println!("revoked every token of {name}");
        }
    }
    Ok(())
}

fn api_key(config_path: &Path, command: ApiKeyCommand) -> Result<(), CliError> {
    let config = load(config_path)?;
    let store = open_store(&config)?;
    match command {
        ApiKeyCommand::Create { name, roles, ttl } => {
            crate::accounts::check_username(&name).map_err(|e| refused(e.description()))?;
            for role in &roles {
                check_role(role)?;
            }
            let now = now_secs();
            let expires_at = ttl
                .map(|text| crate::config::parse_duration(&text).map_err(CliError::Refused))
                .transpose()?
                .map(|ttl| now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)));
            let key = crate::api_keys::mint();
            let stored = ApiKey {
                name: name.clone(),
                id: crate::auth::random_uuid(),
                hash: crate::api_keys::digest(&key),
                roles,
                created_at: now,
                expires_at,
                last_used_at: None,
            };
            match store.create_api_key(&stored) {
                Err(StoreError::Conflict) => {
                    return Err(refused(format!(
                        "\"{name}\" is taken by a user or another key"
                    )));
                }
                other => other?,
            }
            // The key alone on stdout, so a script can capture it; it is never shown again.
            println!("{key}");
            eprintln!("created API key {name}; store it now: it cannot be shown again");
        }
        ApiKeyCommand::List => {
            let never = || "never".to_owned();
            for key in store.api_keys()? {
                println!(
                    "{}\troles={}\tcreated={}\tlast_used={}\texpires={}",
                    key.name,
                    key.roles.join(","),
                    utc(key.created_at),
                    key.last_used_at.map_or_else(never, utc),
                    key.expires_at.map_or_else(never, utc),
                );
            }
        }
        ApiKeyCommand::Revoke { name } => {
            let Some(key) = store.revoke_api_key(&name)? else {
                return Err(refused(format!("no API key named \"{name}\"")));
            };
            tracing::info!(target: "authgate::audit", event = "revoke_api_key", key = %key.name, "revoked from the command line");
            println!("revoked API key {}", key.name);
        }
    }
    Ok(())
}

/// Seconds since the epoch as an RFC 3339 UTC time, to the second.
fn utc(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

fn no_such_user(name: &str) -> CliError {
    refused(format!("no user named \"{name}\""))
}

/// Roles travel comma-joined in a header: no commas, nothing a header cannot hold.
fn check_role(role: &str) -> Result<(), CliError> {
    let ok = !role.is_empty()
        && role.len() <= 64
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(refused(format!(
            "\"{role}\" is not a role name (letters, digits, '.', '_', '-', ':')"
        )))
    }
}

/// A new password: prompted twice without echo on a terminal, else one line of stdin.
fn read_password(min_length: usize) -> Result<String, CliError> {
    use std::io::IsTerminal as _;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(CliError::ReadPassword)?;
        let second = rpassword::prompt_password("Again: ").map_err(CliError::ReadPassword)?;
        if first != second {
            return Err(refused("the passwords differ"));
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(CliError::ReadPassword)?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.chars().count() < min_length {
        return Err(refused(format!(
            "the password must have at least {min_length} characters"
        )));
    }
    if password.len() > crate::passwords::MAX_PASSWORD_BYTES {
        return Err(refused("the password is too long"));
    }
    Ok(password)
}
