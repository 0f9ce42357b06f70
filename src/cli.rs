//! The command line: its grammar, and every command besides `serve` (which lives in
//! `main.rs`, next to the runtime it starts).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LoadOptions, UpstreamTarget};
use crate::jwt::{Algorithm, Claims, OneOrMany, Signer};
use crate::routes::{Auth, normalize};

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
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from standard input (no echo on a terminal).
    Add {
        name: String,
        /// A role; repeat for more.
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

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new signing key: a PKCS#8 PEM private key, or an HMAC secret for HS*.
    Generate {
        #[arg(long)]
        alg: String,
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
pub fn init_logging(format: Option<LogFormat>) {
    use std::io::IsTerminal as _;
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
        LogFormat::Text => builder.with_ansi(terminal).try_init(),
    };
}

pub fn run(command: Command, config_path: &Path) -> ExitCode {
    let result = match command {
        Command::Serve => Err("serve is handled by main".to_owned()),
        Command::Check => return check(config_path),
        Command::Explain { method, url } => explain(config_path, &method, &url),
        Command::Key(KeyCommand::Generate { alg, out, force }) => key_generate(&alg, &out, force),
        Command::Token(TokenCommand::Mint { sub, roles, ttl }) => {
            token_mint(config_path, sub, roles, ttl.as_deref())
        }
        Command::User(command) => user(config_path, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("authgate: {message}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> Result<Config, String> {
    Config::load(path, LoadOptions::default()).map_err(|e| e.to_string())
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

fn explain(path: &Path, method: &str, url: &str) -> Result<(), String> {
    let config = load(path)?;
    let method: http::Method = method
        .parse()
        .map_err(|_| format!("\"{method}\" is not an HTTP method"))?;
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("\"{url}\" is not a URL or path"))?;
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
    let Some(route) = config.routes.match_request(&method, &normalized) else {
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
            "route[{}] path = \"{}\", methods = {methods}",
            route.index, route.pattern
        ),
    );
    say(
        "auth",
        &match route.auth {
            Auth::Public => "public (no token needed)".to_owned(),
            Auth::Required if route.required_roles.is_empty() => {
                "required: a valid access token".to_owned()
            }
            Auth::Required => format!(
                "required: an access token with roles {}",
                route.required_roles.join(", ")
            ),
        },
    );
    let upstream = &config.upstreams[route.upstream];
    let target = match &upstream.target {
        UpstreamTarget::Echo => "builtin:echo".to_owned(),
        UpstreamTarget::Http {
            scheme, authority, ..
        } => format!("{scheme}://{authority}"),
    };
    say("upstream", &format!("{} ({target})", upstream.name));
    let query = uri.query().map_or_else(String::new, |q| format!("?{q}"));
    say("forwarded", &format!("{method} {normalized}{query}"));
    Ok(())
}

fn key_generate(alg: &str, out: &Path, force: bool) -> Result<(), String> {
    let alg: Algorithm = alg
        .parse()
        .map_err(|_| format!("\"{alg}\" is not a supported algorithm"))?;
    let text = crate::jwt::generate_key(alg).map_err(|e| e.to_string())?;
    if out.exists() && !force {
        return Err(format!(
            "{} exists; pass --force to replace it",
            out.display()
        ));
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    // `mode` only applies to a new file; a replaced one must not keep looser permissions.
    use std::os::unix::fs::PermissionsExt as _;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", out.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("wrote a {alg:?} key to {}", out.display());
    Ok(())
}

fn token_mint(
    path: &Path,
    sub: String,
    roles: Vec<String>,
    ttl: Option<&str>,
) -> Result<(), String> {
    let config = load(path)?;
    let tokens = &config.tokens;
    let ttl = match ttl {
        Some(text) => crate::config::parse_duration(text)?,
        None => tokens.access_ttl,
    };
    let signer = Signer::new(tokens.keys[0].clone())
        .ok_or("the signing key is a public key: it cannot sign")?;
    let now = crate::credentials::now_secs();
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).map_err(|_| "no randomness for the token id")?;
    let claims = Claims {
        sub,
        iat: Some(now),
        nbf: Some(now),
        exp: Some(now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2)),
        jti: Some(jti.iter().map(|b| format!("{b:02x}")).collect()),
        token_type: Some("access".into()),
        fresh: Some(false),
        iss: Some(tokens.issuer.clone()),
        aud: Some(OneOrMany::One(tokens.audience.clone())),
        roles: OneOrMany::Many(roles),
        extra: Default::default(),
    };
    let token = signer.sign(&claims).map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(())
}

/// Opens the store the config names.
fn open_store(config: &Config) -> Result<std::sync::Arc<dyn crate::store::Store>, String> {
    let url = config
        .store
        .as_ref()
        .ok_or("the config has no [store]: there are no accounts")?;
    crate::store::open(url).map_err(|e| e.to_string())
}

fn user(config_path: &Path, command: UserCommand) -> Result<(), String> {
    let config = load(config_path)?;
    let store = open_store(&config)?;
    let store_err = |e: crate::store::StoreError| e.to_string();
    // Tokens issued in this second are revoked too: `iat` has one-second resolution.
    let now_and_before = crate::credentials::now_secs() + 1;
    // The stored spelling: names ignore case, but tokens carry the stored one, and so
    // must every revocation.
    let stored_name = |name: &str| -> Result<String, String> {
        match store.user(name).map_err(store_err)? {
            Some(user) => Ok(user.name),
            None => Err(format!("no user named \"{name}\"")),
        }
    };
    match command {
        UserCommand::Add { name, roles } => {
            crate::accounts::check_username(&name).map_err(|e| e.description().to_owned())?;
            for role in &roles {
                check_role(role)?;
            }
            let password = read_password(config.accounts.min_password_length)?;
            let user = crate::store::User {
                password_hash: crate::passwords::hash_blocking(&password)
                    .map_err(|e| e.to_string())?,
                name: name.clone(),
                roles,
                disabled: false,
                created_at: crate::credentials::now_secs(),
                revoked_before: None,
            };
            match store.create_user(&user) {
                Err(crate::store::StoreError::Conflict) => {
                    return Err(format!("a user named \"{name}\" exists"));
                }
                other => other.map_err(store_err)?,
            }
            println!("added {name}");
        }
        UserCommand::List => {
            for user in store.users().map_err(store_err)? {
                println!(
                    "{}\troles={}\t{}",
                    user.name,
                    user.roles.join(","),
                    if user.disabled { "disabled" } else { "enabled" }
                );
            }
        }
        UserCommand::Remove { name } => {
            let name = stored_name(&name)?;
            if !store
                .remove_user(&name, now_and_before)
                .map_err(store_err)?
            {
                return Err(format!("no user named \"{name}\""));
            }
            println!("removed {name}; its tokens are refused");
        }
        UserCommand::SetPassword { name } => {
            let name = stored_name(&name)?;
            let password = read_password(config.accounts.min_password_length)?;
            let hash = crate::passwords::hash_blocking(&password).map_err(|e| e.to_string())?;
            store.set_password(&name, &hash).map_err(store_err)?;
            store
                .revoke_user(&name, now_and_before)
                .map_err(store_err)?;
            println!("password of {name} replaced; its sessions are ended");
        }
        UserCommand::Disable { name } => {
            let name = stored_name(&name)?;
            store.set_disabled(&name, true).map_err(store_err)?;
            store
                .revoke_user(&name, now_and_before)
                .map_err(store_err)?;
            println!("disabled {name}; its tokens are refused");
        }
        UserCommand::Enable { name } => {
            let name = stored_name(&name)?;
            store.set_disabled(&name, false).map_err(store_err)?;
            println!("enabled {name}");
        }
        UserCommand::Revoke { name } => {
            let name = stored_name(&name)?;
            store
                .revoke_user(&name, now_and_before)
                .map_err(store_err)?;
            tracing::info!(target: "authgate::audit", event = "revoke", user = %name, "revoked from the command line");
            println!("revoked every token of {name}");
        }
    }
    Ok(())
}

/// Roles travel comma-joined in a header: no commas, nothing a header cannot hold.
fn check_role(role: &str) -> Result<(), String> {
    let ok = !role.is_empty()
        && role.len() <= 64
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{role}\" is not a role name (letters, digits, '.', '_', '-', ':')"
        ))
    }
}

/// A new password: prompted twice without echo on a terminal, else one line of stdin.
fn read_password(min_length: usize) -> Result<String, String> {
    use std::io::IsTerminal as _;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let second = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if first != second {
            return Err("the passwords differ".to_owned());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.chars().count() < min_length {
        return Err(format!(
            "the password must have at least {min_length} characters"
        ));
    }
    if password.len() > crate::passwords::MAX_PASSWORD_BYTES {
        return Err("the password is too long".to_owned());
    }
    Ok(password)
}
