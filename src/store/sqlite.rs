//! The embedded store: one SQLite file in WAL mode with `synchronous = FULL`, so every
//! acknowledged write has reached the disk. The gateway and `authgate user ...` open the
//! same file; SQLite's locking makes that safe, and a short busy timeout makes a writer
//! wait for the other instead of failing.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

use super::{ApiKey, RefreshToken, Revocation, Rotation, Store, StoreError, User};

/// How long a write waits for another process's write to finish before the store is
/// reported unavailable (503). Writes take milliseconds; seconds mean trouble.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// The schema, one entry per version (`PRAGMA user_version`); applied in order.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    -- Unique regardless of case: "Alice" and "alice" are one account.
    name          TEXT PRIMARY KEY COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL DEFAULT '[]',
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);
CREATE TABLE refresh_families (
    id         TEXT PRIMARY KEY,
    user       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX refresh_families_user ON refresh_families (user);
CREATE TABLE refresh_tokens (
    jti      TEXT PRIMARY KEY,
    family   TEXT NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    exp      INTEGER NOT NULL,
    spent_at INTEGER
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE TABLE revocations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL CHECK (kind IN ('token', 'user')),
    subject    TEXT NOT NULL,
    until      INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX revocations_subject ON revocations (kind, subject);
"#,
    r#"
CREATE TABLE api_keys (
    -- AUTOINCREMENT: sqlite_sequence is the version the gateway follows.
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL UNIQUE COLLATE NOCASE,
    id           TEXT NOT NULL UNIQUE,
    hash         TEXT NOT NULL UNIQUE,
    roles        TEXT NOT NULL DEFAULT '[]',
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER
);
"#,
    r#"
ALTER TABLE users ADD COLUMN provider TEXT;
"#,
];

#[derive(Debug)]
pub struct SqliteStore {
    /// One connection: SQLite serializes writers anyway, and every call is short.
    conn: Mutex<Connection>,
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

impl SqliteStore {
    /// Opens the file (creating it and its folder if needed) and brings the schema to the
    /// current version.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Folder {
                dir: dir.to_owned(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(unavailable)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(unavailable)?;
        let store = SqliteStore {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves a connection that is still usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(unavailable)?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > MIGRATIONS.len() {
            return Err(StoreError::NewerSchema {
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(migration).map_err(unavailable)?;
            tx.pragma_update(
                None,
                "user_version",
                i64::try_from(i + 1).unwrap_or(i64::MAX),
            )
            .map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)
    }
}

/// A presented refresh token, as `rotate` finds it.
struct Presented {
    family: String,
    exp: i64,
    spent: bool,
    user: String,
    family_revoked: bool,
}

/// What `user_from_row` reads, in its order.
const USER_COLUMNS: &str = "name, password_hash, roles, disabled, created_at,
    (SELECT max(until) FROM revocations WHERE kind = 'user' AND subject = users.name),
    provider";

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let roles: String = row.get(2)?;
    Ok(User {
        name: row.get(0)?,
        password_hash: row.get(1)?,
        roles: serde_json::from_str(&roles).unwrap_or_default(),
        disabled: row.get(3)?,
        created_at: row.get(4)?,
        revoked_before: row.get(5)?,
        provider: row.get(6)?,
    })
}

/// Revokes every live refresh family of `user` and records the user revocation.
fn revoke_user_in(tx: &rusqlite::Transaction<'_>, user: &str, before: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO revocations (kind, subject, until, created_at) VALUES ('user', ?1, ?2, ?2)",
        params![user, before],
    )?;
    tx.execute(
        "UPDATE refresh_families SET revoked_at = ?2 WHERE user = ?1 AND revoked_at IS NULL",
        params![user, before],
    )?;
    Ok(())
}

fn api_key_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKey> {
    let roles: String = row.get(3)?;
    Ok(ApiKey {
        name: row.get(0)?,
        id: row.get(1)?,
        hash: row.get(2)?,
        roles: serde_json::from_str(&roles).unwrap_or_default(),
        created_at: row.get(4)?,
        expires_at: row.get(5)?,
        last_used_at: row.get(6)?,
    })
}

const API_KEY_COLUMNS: &str = "name, id, hash, roles, created_at, expires_at, last_used_at";

impl SqliteStore {
    /// Runs `insert` unless `taken` finds the name in the other table, in one transaction:
    /// a name is a user's or a key's, never both.
    fn insert_name(
        &self,
        taken: &str,
        name: &str,
        insert: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<usize>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let clash = tx
            .query_row(taken, params![name], |_| Ok(()))
            .optional()
            .map_err(unavailable)?;
        if clash.is_some() {
            return Err(StoreError::Conflict);
        }
        match insert(&tx) {
            Ok(_) => tx.commit().map_err(unavailable),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict)
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}

impl Store for SqliteStore {
    fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let roles = serde_json::to_string(&user.roles).unwrap_or_else(|_| "[]".into());
        self.insert_name("SELECT 1 FROM api_keys WHERE name = ?1", &user.name, |tx| {
            tx.execute(
                "INSERT INTO users (name, password_hash, roles, disabled, created_at, provider) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![user.name, user.password_hash, roles, user.disabled, user.created_at, user.provider],
            )
        })
    }

    fn upsert_provider_user(&self, user: &User) -> Result<User, StoreError> {
        let roles = serde_json::to_string(&user.roles).unwrap_or_else(|_| "[]".into());
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let key_clash = tx
            .query_row(
                "SELECT 1 FROM api_keys WHERE name = ?1",
                params![user.name],
                |_| Ok(()),
            )
            .optional()
            .map_err(unavailable)?;
        let existing: Option<Option<String>> = tx
            .query_row(
                "SELECT provider FROM users WHERE name = ?1",
                params![user.name],
                |row| row.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        match existing {
            _ if key_clash.is_some() => return Err(StoreError::Conflict),
            None => tx.execute(
                "INSERT INTO users (name, password_hash, roles, disabled, created_at, provider) VALUES (?1, '', ?2, 0, ?3, ?4)",
                params![user.name, roles, user.created_at, user.provider],
            ),
            Some(provider) if provider.is_some() && provider == user.provider => tx.execute(
                "UPDATE users SET roles = ?2 WHERE name = ?1",
                params![user.name, roles],
            ),
            Some(_) => return Err(StoreError::Conflict),
        }
        .map_err(unavailable)?;
        let stored = tx
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
                params![user.name],
                user_from_row,
            )
            .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        Ok(stored)
    }

    fn create_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let roles = serde_json::to_string(&key.roles).unwrap_or_else(|_| "[]".into());
        self.insert_name("SELECT 1 FROM users WHERE name = ?1", &key.name, |tx| {
            tx.execute(
                "INSERT INTO api_keys (name, id, hash, roles, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![key.name, key.id, key.hash, roles, key.created_at, key.expires_at],
            )
        })
    }

    fn api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY name"
            ))
            .map_err(unavailable)?;
        let keys = stmt
            .query_map([], api_key_from_row)
            .map_err(unavailable)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        Ok(keys)
    }

    fn api_keys_version(&self) -> Result<i64, StoreError> {
        self.conn()
            .query_row(
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'api_keys'), 0)",
                [],
                |row| row.get(0),
            )
            .map_err(unavailable)
    }

    fn revoke_api_key(&self, name: &str) -> Result<Option<ApiKey>, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let key = tx
            .query_row(
                &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE name = ?1"),
                params![name],
                api_key_from_row,
            )
            .optional()
            .map_err(unavailable)?;
        if let Some(key) = &key {
            tx.execute("DELETE FROM api_keys WHERE id = ?1", params![key.id])
                .map_err(unavailable)?;
            tx.execute(
                "INSERT INTO revocations (kind, subject, until, created_at) VALUES ('token', ?1, ?2, strftime('%s','now'))",
                params![key.id, key.revocation_until()],
            )
            .map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)?;
        Ok(key)
    }

    fn touch_api_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        for (name, at) in used {
            tx.execute(
                "UPDATE api_keys SET last_used_at = ?2 WHERE name = ?1 AND coalesce(last_used_at, 0) < ?2",
                params![name, at],
            )
            .map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)
    }

    fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
                params![name],
                user_from_row,
            )
            .optional()
            .map_err(unavailable)
    }

    fn users(&self) -> Result<Vec<User>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))
            .map_err(unavailable)?;
        let users = stmt
            .query_map([], user_from_row)
            .map_err(unavailable)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        Ok(users)
    }

    fn remove_user(&self, name: &str, before: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let removed = tx
            .execute("DELETE FROM users WHERE name = ?1", params![name])
            .map_err(unavailable)?;
        if removed > 0 {
            revoke_user_in(&tx, name, before).map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)?;
        Ok(removed > 0)
    }

    fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, StoreError> {
        self.conn()
            .execute(
                "UPDATE users SET password_hash = ?2 WHERE name = ?1",
                params![name, password_hash],
            )
            .map(|n| n > 0)
            .map_err(unavailable)
    }

    fn set_disabled(&self, name: &str, disabled: bool) -> Result<bool, StoreError> {
        self.conn()
            .execute(
                "UPDATE users SET disabled = ?2 WHERE name = ?1",
                params![name, disabled],
            )
            .map(|n| n > 0)
            .map_err(unavailable)
    }

    fn start_family(&self, first: &RefreshToken, now: i64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        tx.execute(
            "INSERT INTO refresh_families (id, user, created_at) VALUES (?1, ?2, ?3)",
            params![first.family, first.user, now],
        )
        .map_err(unavailable)?;
        tx.execute(
            "INSERT INTO refresh_tokens (jti, family, exp) VALUES (?1, ?2, ?3)",
            params![first.jti, first.family, first.exp],
        )
        .map_err(unavailable)?;
        tx.commit().map_err(unavailable)
    }

    fn rotate(
        &self,
        presented: &str,
        next_jti: &str,
        next_exp: i64,
        now: i64,
    ) -> Result<Rotation, StoreError> {
        let mut conn = self.conn();
        // IMMEDIATE: the read and the spend are one step, so of two concurrent refreshes
        // with the same token exactly one sees it live.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let found: Option<Presented> = tx
            .query_row(
                "SELECT t.family, t.exp, t.spent_at, f.user, f.revoked_at
                 FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family
                 WHERE t.jti = ?1",
                params![presented],
                |row| {
                    Ok(Presented {
                        family: row.get(0)?,
                        exp: row.get(1)?,
                        spent: row.get::<_, Option<i64>>(2)?.is_some(),
                        user: row.get(3)?,
                        family_revoked: row.get::<_, Option<i64>>(4)?.is_some(),
                    })
                },
            )
            .optional()
            .map_err(unavailable)?;
        let outcome = match found {
            None => Rotation::Unknown,
            Some(p) if p.family_revoked => Rotation::Revoked,
            Some(p) if p.spent => {
                tx.execute(
                    "UPDATE refresh_families SET revoked_at = ?2 WHERE id = ?1",
                    params![p.family, now],
                )
                .map_err(unavailable)?;
                Rotation::Reused {
                    family: p.family,
                    user: p.user,
                }
            }
            Some(p) if p.exp <= now => Rotation::Unknown,
            Some(p) => {
                tx.execute(
                    "UPDATE refresh_tokens SET spent_at = ?2 WHERE jti = ?1",
                    params![presented, now],
                )
                .map_err(unavailable)?;
                tx.execute(
                    "INSERT INTO refresh_tokens (jti, family, exp) VALUES (?1, ?2, ?3)",
                    params![next_jti, p.family, next_exp],
                )
                .map_err(unavailable)?;
                Rotation::Rotated { user: p.user }
            }
        };
        tx.commit().map_err(unavailable)?;
        Ok(outcome)
    }

    fn revoke_family_of(&self, jti: &str, now: i64) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let found: Option<(String, String)> = tx
            .query_row(
                "SELECT f.id, f.user FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family
                 WHERE t.jti = ?1",
                params![jti],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(unavailable)?;
        if let Some((family, _)) = &found {
            tx.execute(
                "UPDATE refresh_families SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![family, now],
            )
            .map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)?;
        Ok(found.map(|(_, user)| user))
    }

    fn revoke_token(&self, jti: &str, exp: i64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO revocations (kind, subject, until, created_at) VALUES ('token', ?1, ?2, strftime('%s','now'))",
                params![jti, exp],
            )
            .map(|_| ())
            .map_err(unavailable)
    }

    fn revoke_user(&self, user: &str, before: i64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        revoke_user_in(&tx, user, before).map_err(unavailable)?;
        tx.commit().map_err(unavailable)
    }

    fn revocations_since(&self, cursor: i64) -> Result<(Vec<Revocation>, i64), StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, kind, subject, until FROM revocations WHERE id > ?1 ORDER BY id",
            )
            .map_err(unavailable)?;
        let mut next = cursor;
        let mut found = Vec::new();
        let rows = stmt
            .query_map(params![cursor], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })
            .map_err(unavailable)?;
        for row in rows {
            let (id, kind, subject, until) = row.map_err(unavailable)?;
            next = next.max(id);
            found.push(match kind.as_str() {
                "user" => Revocation::User {
                    user: subject,
                    before: until,
                },
                _ => Revocation::Token {
                    jti: subject,
                    exp: until,
                },
            });
        }
        Ok((found, next))
    }

    fn purge(&self, now: i64, user_horizon: i64) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute_batch("BEGIN IMMEDIATE").map_err(unavailable)?;
        let result = (|| {
            conn.execute(
                "DELETE FROM revocations WHERE kind = 'token' AND until < ?1",
                params![now],
            )?;
            conn.execute(
                "DELETE FROM revocations WHERE kind = 'user' AND until < ?1",
                params![user_horizon],
            )?;
            conn.execute("DELETE FROM refresh_tokens WHERE exp < ?1", params![now])?;
            conn.execute(
                "DELETE FROM refresh_families WHERE id NOT IN (SELECT family FROM refresh_tokens)",
                [],
            )?;
            conn.execute_batch("COMMIT")
        })();
        if result.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        result.map_err(unavailable)
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.conn()
            .query_row("SELECT 1", [], |_| Ok(()))
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The store contract itself is checked on every backend in tests/store.rs.

    #[test]
    fn the_schema_survives_reopening() {
        let user = |name: &str| User {
            name: name.into(),
            password_hash: "$argon2id$dummy".into(),
            roles: Vec::new(),
            disabled: false,
            created_at: 1,
            revoked_before: None,
            provider: None,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        SqliteStore::open(&path)
            .expect("open")
            .create_user(&user("alice"))
            .expect("create");
        let again = SqliteStore::open(&path).expect("reopen");
        assert!(again.user("alice").expect("read").is_some());
    }
}
