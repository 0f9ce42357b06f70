//! Durable state behind one trait: users, API keys, refresh-token families, revocations.
//!
//! The trait is synchronous on purpose: every backend call runs on the blocking pool
//! (`spawn_blocking`), never on the async runtime, and SQLite (the embedded default) is a
//! blocking library. The Redis backend, for several replicas, implements the same trait;
//! its `revocations_since` cursor is a counter on the server, so every replica's map
//! follows every replica's revocations.
//!
//! Durability contract: when a method that revokes returns `Ok`, the revocation is on
//! disk (SQLite in WAL mode with `synchronous = FULL`; Redis as its persistence is set up),
//! so a crash of the gateway right after cannot lose it. Callers write the store first,
//! then the in-memory map, then answer the client.

mod redis;
mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

pub use redis::RedisStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the name is taken")]
    Conflict,
    #[error("the store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot create the store's folder {}", .dir.display())]
    Folder {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the store has schema version {found}, newer than this authgate knows ({known})")]
    NewerSchema { found: usize, known: usize },
}

/// A user account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// The argon2id PHC string.
    pub password_hash: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created_at: i64,
    /// The latest `revoke_user` instant of this user, if any (read only; derived from the
    /// revocations).
    pub revoked_before: Option<i64>,
    /// The `[[browser.provider]]` (its issuer's name) this user logs in with; `None` for a
    /// local user with a password. A provider's user has no password hash.
    pub provider: Option<String>,
}

impl User {
    /// A new, enabled account.
    pub fn new(name: String, password_hash: String, roles: Vec<String>, now: i64) -> User {
        User {
            name,
            password_hash,
            roles,
            disabled: false,
            created_at: now,
            revoked_before: None,
            provider: None,
        }
    }
}

/// An API key as stored: its hash, never the key. Its name is an identity as a user's is,
/// so a name is either a user's or a key's, never both (case-insensitive, as users).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub name: String,
    /// A public, random id: what a revocation of the key records (as a token's `jti`).
    pub id: String,
    /// The key's SHA-256, in hex.
    pub hash: String,
    pub roles: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl ApiKey {
    /// Until when a revocation of this key must be kept: its expiry, or for ever.
    pub fn revocation_until(&self) -> i64 {
        self.expires_at.unwrap_or(i64::MAX)
    }
}

/// One refresh token of a family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub jti: String,
    pub family: String,
    pub user: String,
    pub exp: i64,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live: it is now spent and its successor is stored.
    Rotated { user: String },
    /// The token was already spent: the whole family is now revoked.
    Reused { family: String, user: String },
    /// The family was revoked before (logout, reuse, `user revoke`).
    Revoked,
    /// No such token, or it has expired.
    Unknown,
}

/// A revocation as the hot path applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// An access token id, refused until `exp`.
    Token { jti: String, exp: i64 },
    /// Every token of `user` issued before `before` is refused.
    User { user: String, before: i64 },
}

pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new account; [`StoreError::Conflict`] when a user or an API key has its
    /// name.
    fn create_user(&self, user: &User) -> Result<(), StoreError>;
    fn user(&self, name: &str) -> Result<Option<User>, StoreError>;
    fn users(&self) -> Result<Vec<User>, StoreError>;
    /// Removes the user and refuses every token it holds (as `revoke_user` at `before`);
    /// false if there was no such user.
    fn remove_user(&self, name: &str, before: i64) -> Result<bool, StoreError>;
    fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, StoreError>;
    fn set_disabled(&self, name: &str, disabled: bool) -> Result<bool, StoreError>;
    /// A provider's user at login: created when new, its roles replaced when it is that
    /// provider's already; the stored user comes back (disabled, revocations and all).
    /// [`StoreError::Conflict`] when the name is a local user's, another provider's, or
    /// an API key's: an identity provider never takes over an account it did not make.
    fn upsert_provider_user(&self, user: &User) -> Result<User, StoreError>;

    /// Stores a new key; [`StoreError::Conflict`] when a key or a user has its name.
    fn create_api_key(&self, key: &ApiKey) -> Result<(), StoreError>;
    /// Every key, by name.
    fn api_keys(&self) -> Result<Vec<ApiKey>, StoreError>;
    /// A number that grows with every key created: the gateway reloads its keys when it
    /// changes (a removed key is refused through its revocation instead).
    fn api_keys_version(&self) -> Result<i64, StoreError>;
    /// Removes the key and records the revocation of its id, atomically; the removed key,
    /// if there was one.
    fn revoke_api_key(&self, name: &str) -> Result<Option<ApiKey>, StoreError>;
    /// Records when keys were last used (a later time never goes back).
    fn touch_api_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError>;

    /// Stores the first refresh token of a new family.
    fn start_family(&self, first: &RefreshToken, now: i64) -> Result<(), StoreError>;
    /// Spends refresh token `presented` and stores `next_jti` (valid until `next_exp`) in
    /// the same family, atomically; or reports why not (a reuse also revokes the family).
    fn rotate(
        &self,
        presented: &str,
        next_jti: &str,
        next_exp: i64,
        now: i64,
    ) -> Result<Rotation, StoreError>;
    /// Revokes the family of refresh token `jti`; the user it belonged to, if known.
    fn revoke_family_of(&self, jti: &str, now: i64) -> Result<Option<String>, StoreError>;

    /// Records an access-token revocation (until `exp`).
    fn revoke_token(&self, jti: &str, exp: i64) -> Result<(), StoreError>;
    /// Refuses every token of `user` issued before `before`, and revokes every refresh
    /// family of the user.
    fn revoke_user(&self, user: &str, before: i64) -> Result<(), StoreError>;
    /// Revocations recorded after `cursor` (0: all still in force), and the new cursor.
    fn revocations_since(&self, cursor: i64) -> Result<(Vec<Revocation>, i64), StoreError>;
    /// Forgets what can no longer matter: revocations of tokens expired by `now` and user
    /// revocations older than `user_horizon`, expired refresh tokens.
    fn purge(&self, now: i64, user_horizon: i64) -> Result<(), StoreError>;
    /// Whether the store answers (readiness).
    fn ping(&self) -> Result<(), StoreError>;
}

/// Where the store lives, from `[store] url`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    /// `redis://host:port/db`, as the redis crate reads it; may hold a password.
    Redis(String),
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            StoreUrl::Redis(_) => f.write_str("Redis(..)"),
        }
    }
}

/// Opens (and creates or migrates) the configured store.
pub fn open(url: &StoreUrl) -> Result<Arc<dyn Store>, StoreError> {
    match url {
        StoreUrl::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path)?)),
        StoreUrl::Redis(url) => Ok(Arc::new(RedisStore::open(url)?)),
    }
}
