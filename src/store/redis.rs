//! The shared store for several replicas: one Redis server (`redis://host:port/db`).
//!
//! Every operation that reads and writes is one Lua script, so it is atomic on the server
//! the way the SQLite backend's transactions are: of two replicas refreshing the same
//! token at once, exactly one sees it live. Revocations are a sorted set scored by a
//! counter, which is the cursor `revocations_since` reads from, so each replica's map
//! follows every other replica's revocations; a new data set (its epoch key changed) or a
//! counter below a replica's cursor (Redis lost its data, or failed over to a replica that
//! was behind) makes the replica read everything again. Purging walks only what expired, through indexes scored by time,
//! and one replica at a time does it.
//!
//! Durability is the server's: with `appendonly yes` and `appendfsync always` an
//! acknowledged revocation survives a crash of Redis as it survives one of the gateway.
//! Keys are under `authgate:`; the scripts name some keys they derive, so this is for a
//! single Redis server (or a primary with replicas), not Redis Cluster. Commands are those
//! of Redis 5 and later; the tests run Redis 7.

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use redis::{Connection, Script};

use super::{ApiKey, RefreshToken, Revocation, Rotation, Store, StoreError, User};

/// Connecting and each command: a store that does not answer within this is unavailable
/// (503), as a locked SQLite file is after its busy timeout.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept for the next calls; calls run in parallel, each on its own.
const MAX_IDLE: usize = 8;
/// How long refresh tokens and families are kept after their `exp`: a spent token must
/// still be recognized (reuse detection) while the verifier's leeway accepts it, as the
/// SQLite backend keeps it until a purge at `now - leeway`. A day covers any sane leeway.
const RETAIN_AFTER_EXP: i64 = 86_400;

const USERS: &str = "authgate:users";

/// Users are keyed by their name folded to lower case: unique regardless of case, as in
/// the SQLite backend (`COLLATE NOCASE` folds ASCII).
fn user_key(name: &str) -> String {
    format!("authgate:user:{}", name.to_ascii_lowercase())
}

const API_KEYS: &str = "authgate:api_keys";
/// Counts the keys ever created: the version the gateway follows.
const API_KEY_SEQ: &str = "authgate:api_key_seq";

/// Keys are named as users are, folded to lower case; a name is a user's or a key's.
fn api_key_key(name: &str) -> String {
    format!("authgate:api_key:{}", name.to_ascii_lowercase())
}

fn token_key(jti: &str) -> String {
    format!("authgate:refresh:{jti}")
}

/// Shared by the scripts that revoke a user: records the revocation, keeps the user's
/// latest `revoked_before`, and revokes every refresh family of the user.
const REVOKE_USER_LUA: &str = r#"
local function revoke_user(user, before)
  local seq = redis.call('INCR', 'authgate:revocation_seq')
  local member = seq .. '|u|' .. before .. '|' .. user
  redis.call('ZADD', 'authgate:revocations', seq, member)
  redis.call('ZADD', 'authgate:revoked_users_by_before', before, member)
  local key = 'authgate:user_revoked:' .. user
  local current = redis.call('GET', key)
  if not current or tonumber(current) < before then
    redis.call('SET', key, before)
  end
  for _, family in ipairs(redis.call('ZRANGE', 'authgate:user_families:' .. user, 0, -1)) do
    local fkey = 'authgate:family:' .. family
    if redis.call('EXISTS', fkey) == 1 then
      redis.call('HSETNX', fkey, 'revoked_at', before)
    end
  end
end
"#;

/// A user as six strings: name, hash, roles (JSON), disabled, created_at, revoked_before
/// (empty when never revoked).
const READ_USER_LUA: &str = r#"
local function read_user(key)
  local u = redis.call('HMGET', key, 'name', 'hash', 'roles', 'disabled', 'created_at', 'provider')
  if not u[1] then return nil end
  local revoked = redis.call('GET', 'authgate:user_revoked:' .. u[1]) or ''
  return {u[1], u[2], u[3], u[4], u[5], revoked, u[6] or ''}
end
"#;

static CREATE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'hash', ARGV[2], 'roles', ARGV[3],
           'disabled', ARGV[4], 'created_at', ARGV[5])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'provider', ARGV[6]) end
redis.call('SADD', KEYS[2], KEYS[1])
return 1
"#,
    )
});

/// A provider's user: created, or its roles replaced when it is that provider's already;
/// nil when the name is anyone else's (see `Store::upsert_provider_user`).
static UPSERT_PROVIDER_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{READ_USER_LUA}
if redis.call('EXISTS', KEYS[3]) == 1 then return nil end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'name', ARGV[1], 'hash', '', 'roles', ARGV[2],
             'disabled', '0', 'created_at', ARGV[3], 'provider', ARGV[4])
  redis.call('SADD', KEYS[2], KEYS[1])
elseif redis.call('HGET', KEYS[1], 'provider') == ARGV[4] then
  redis.call('HSET', KEYS[1], 'roles', ARGV[2])
else
  return nil
end
return read_user(KEYS[1])
"#
    ))
});

static USER: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{READ_USER_LUA}\nreturn read_user(KEYS[1])")));

static ALL_USERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{READ_USER_LUA}
local all = {{}}
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local u = read_user(key)
  if u then for _, field in ipairs(u) do table.insert(all, field) end end
end
return all
"#
    ))
});

static REMOVE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{REVOKE_USER_LUA}
local name = redis.call('HGET', KEYS[1], 'name')
if not name then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], KEYS[1])
revoke_user(name, tonumber(ARGV[1]))
return 1
"#
    ))
});

/// Sets one field of an existing user; 0 if there is no such user.
static SET_USER_FIELD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"#,
    )
});

const API_KEY_FIELDS_LUA: &str =
    "'name', 'id', 'hash', 'roles', 'created_at', 'expires_at', 'last_used_at'";

static CREATE_API_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'id', ARGV[2], 'hash', ARGV[3], 'roles', ARGV[4],
           'created_at', ARGV[5], 'expires_at', ARGV[6], 'last_used_at', '')
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('INCR', KEYS[4])
return 1
"#,
    )
});

static ALL_API_KEYS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"
local all = {{}}
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local k = redis.call('HMGET', key, {API_KEY_FIELDS_LUA})
  if k[1] then for i = 1, 7 do table.insert(all, k[i] or '') end end
end
return all
"#
    ))
});

/// Removes a key and records the revocation of its id, as `REVOKE_TOKEN` does; the key's
/// fields, or nothing.
static REVOKE_API_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"
local k = redis.call('HMGET', KEYS[1], {API_KEY_FIELDS_LUA})
if not k[1] then return {{}} end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], KEYS[1])
local exp = ARGV[1]
if k[6] ~= '' then exp = k[6] end
local seq = redis.call('INCR', 'authgate:revocation_seq')
local member = seq .. '|t|' .. exp .. '|' .. k[2]
redis.call('ZADD', 'authgate:revocations', seq, member)
redis.call('ZADD', 'authgate:revoked_tokens_by_exp', exp, member)
for i = 1, 7 do k[i] = k[i] or '' end
return k
"#
    ))
});

/// Sets `last_used_at` of existing keys, never backwards: pairs of key and time.
static TOUCH_API_KEYS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
for i, key in ipairs(KEYS) do
  local at = tonumber(ARGV[i])
  local current = tonumber(redis.call('HGET', key, 'last_used_at') or '')
  if redis.call('EXISTS', key) == 1 and (not current or current < at) then
    redis.call('HSET', key, 'last_used_at', at)
  end
end
"#,
    )
});

/// Keeps a family, and its id in the user's set, as long as its newest token (plus the
/// retention); the user's set drops the ids of families gone by `now`.
const KEEP_FAMILY_LUA: &str = r#"
local function keep_family(family, user, exp, now, retain)
  local fkey = 'authgate:family:' .. family
  if exp > tonumber(redis.call('HGET', fkey, 'max_exp') or 0) then
    redis.call('HSET', fkey, 'max_exp', exp)
    redis.call('EXPIREAT', fkey, exp + retain)
    local set = 'authgate:user_families:' .. user
    redis.call('ZADD', set, exp + retain, family)
    redis.call('ZREMRANGEBYSCORE', set, '-inf', '(' .. now)
    redis.call('EXPIREAT', set, exp + retain)
  end
end
"#;

static START_FAMILY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{KEEP_FAMILY_LUA}
local exp, now, retain = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('HSET', 'authgate:family:' .. ARGV[1], 'user', ARGV[2], 'created_at', now)
keep_family(ARGV[1], ARGV[2], exp, now, retain)
redis.call('HSET', KEYS[1], 'family', ARGV[1], 'exp', exp)
redis.call('EXPIREAT', KEYS[1], exp + retain)
"#
    ))
});

/// The same decisions, in the same order, as the SQLite backend's `rotate`.
static ROTATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{KEEP_FAMILY_LUA}
local now, retain = tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('HMGET', KEYS[1], 'family', 'exp', 'spent_at')
if not t[1] then return {{'unknown'}} end
local fkey = 'authgate:family:' .. t[1]
local f = redis.call('HMGET', fkey, 'user', 'revoked_at')
if not f[1] then return {{'unknown'}} end
if f[2] then return {{'revoked'}} end
if t[3] then
  redis.call('HSET', fkey, 'revoked_at', now)
  return {{'reused', t[1], f[1]}}
end
if tonumber(t[2]) <= now then return {{'unknown'}} end
redis.call('HSET', KEYS[1], 'spent_at', now)
redis.call('HSET', KEYS[2], 'family', t[1], 'exp', ARGV[1])
redis.call('EXPIREAT', KEYS[2], tonumber(ARGV[1]) + retain)
keep_family(t[1], f[1], tonumber(ARGV[1]), now, retain)
return {{'rotated', f[1]}}
"#
    ))
});

static REVOKE_FAMILY_OF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local family = redis.call('HGET', KEYS[1], 'family')
if not family then return nil end
local fkey = 'authgate:family:' .. family
local user = redis.call('HGET', fkey, 'user')
if not user then return nil end
redis.call('HSETNX', fkey, 'revoked_at', ARGV[1])
return user
"#,
    )
});

static REVOKE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local seq = redis.call('INCR', 'authgate:revocation_seq')
local member = seq .. '|t|' .. ARGV[2] .. '|' .. ARGV[1]
redis.call('ZADD', 'authgate:revocations', seq, member)
redis.call('ZADD', 'authgate:revoked_tokens_by_exp', ARGV[2], member)
"#,
    )
});

/// The counter and the data set's epoch, then the revocations after the cursor — or all
/// of them when the epoch is not the one the caller knew, or the counter is below the
/// cursor: Redis lost what the cursor had seen (a restart without persistence, a failover
/// to a replica that was behind), and a replica that kept its cursor would skip new
/// revocations until the counter caught up. Applying one twice is harmless.
static REVOCATIONS_SINCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local time = redis.call('TIME')
redis.call('SET', 'authgate:epoch', time[1] .. '.' .. time[2], 'NX')
local epoch = redis.call('GET', 'authgate:epoch')
local seq = redis.call('GET', 'authgate:revocation_seq') or '0'
local from = tonumber(ARGV[1])
if epoch ~= ARGV[2] or tonumber(seq) < from then from = 0 end
local found = redis.call('ZRANGEBYSCORE', 'authgate:revocations', '(' .. from, '+inf')
table.insert(found, 1, epoch)
table.insert(found, 1, seq)
return found
"#,
    )
});

static REVOKE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{REVOKE_USER_LUA}\nrevoke_user(ARGV[1], tonumber(ARGV[2]))"
    ))
});

/// Forgets token revocations past their `exp` and user revocations older than the
/// horizon, a bounded batch per call, found through indexes scored by time; one replica
/// at a time (the others skip while the lock is held). Refresh tokens and families expire
/// by themselves.
static PURGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if not redis.call('SET', 'authgate:purge_lock', '1', 'NX', 'EX', 30) then return 0 end
local now, horizon = tonumber(ARGV[1]), tonumber(ARGV[2])
local function drop(index, threshold)
  local gone = redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. threshold, 'LIMIT', 0, 10000)
  for _, m in ipairs(gone) do
    redis.call('ZREM', 'authgate:revocations', m)
    redis.call('ZREM', index, m)
    local kind, subject = string.match(m, '^%d+|(%a)|-?%d+|(.*)$')
    if kind == 'u' then
      local key = 'authgate:user_revoked:' .. subject
      local current = redis.call('GET', key)
      if current and tonumber(current) < threshold then redis.call('DEL', key) end
    end
  end
end
drop('authgate:revoked_tokens_by_exp', now)
drop('authgate:revoked_users_by_before', horizon)
redis.call('DEL', 'authgate:purge_lock')
return 1
"#,
    )
});

pub struct RedisStore {
    client: redis::Client,
    /// Connections waiting for the next call. A call takes one (or connects) and holds no
    /// lock while it waits on Redis, so a stalled server costs each call its own timeout
    /// instead of queueing every call behind the first.
    idle: Mutex<Vec<Connection>>,
    /// The data set's epoch when revocations were last read (see `REVOCATIONS_SINCE`).
    epoch: Mutex<String>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the client: its connection info may hold a password.
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

fn number(text: &str) -> i64 {
    text.parse().unwrap_or(0)
}

impl RedisStore {
    /// Connects, so a wrong address is reported at start.
    pub fn open(url: &str) -> Result<RedisStore, StoreError> {
        let store = RedisStore {
            client: redis::Client::open(url).map_err(unavailable)?,
            idle: Mutex::new(Vec::new()),
            epoch: Mutex::new(String::new()),
        };
        store.ping()?;
        Ok(store)
    }

    /// Runs `f` on an idle connection, or a new one. A connection whose call failed is
    /// dropped: it may be broken, and a reply may be pending on it. Nothing is retried,
    /// since a script may have run even though its reply was lost.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = self
                    .client
                    .get_connection_with_timeout(TIMEOUT)
                    .map_err(unavailable)?;
                conn.set_read_timeout(Some(TIMEOUT)).map_err(unavailable)?;
                conn.set_write_timeout(Some(TIMEOUT)).map_err(unavailable)?;
                conn
            }
        };
        let result = f(&mut conn).map_err(unavailable)?;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        Ok(result)
    }
}

/// A user from the seven strings `READ_USER_LUA` returns.
fn user_from(fields: &[String]) -> Option<User> {
    let [name, hash, roles, disabled, created_at, revoked, provider] = fields else {
        return None;
    };
    Some(User {
        name: name.clone(),
        password_hash: hash.clone(),
        roles: serde_json::from_str(roles).unwrap_or_default(),
        disabled: disabled == "1",
        created_at: number(created_at),
        revoked_before: (!revoked.is_empty()).then(|| number(revoked)),
        provider: (!provider.is_empty()).then(|| provider.clone()),
    })
}

/// A key from the seven strings `ALL_API_KEYS` returns (empty = absent).
fn api_key_from(fields: &[String]) -> Option<ApiKey> {
    let [name, id, hash, roles, created_at, expires_at, last_used_at] = fields else {
        return None;
    };
    let optional = |text: &String| (!text.is_empty()).then(|| number(text));
    Some(ApiKey {
        name: name.clone(),
        id: id.clone(),
        hash: hash.clone(),
        roles: serde_json::from_str(roles).unwrap_or_default(),
        created_at: number(created_at),
        expires_at: optional(expires_at),
        last_used_at: optional(last_used_at),
    })
}

impl Store for RedisStore {
    fn create_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let roles = serde_json::to_string(&key.roles).unwrap_or_else(|_| "[]".into());
        let created: i64 = self.with(|c| {
            CREATE_API_KEY
                .key(api_key_key(&key.name))
                .key(API_KEYS)
                .key(user_key(&key.name))
                .key(API_KEY_SEQ)
                .arg(&key.name)
                .arg(&key.id)
                .arg(&key.hash)
                .arg(roles)
                .arg(key.created_at)
                .arg(key.expires_at.map(|at| at.to_string()).unwrap_or_default())
                .invoke(c)
        })?;
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    fn api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let fields: Vec<String> = self.with(|c| ALL_API_KEYS.key(API_KEYS).invoke(c))?;
        let mut keys: Vec<ApiKey> = fields.chunks(7).filter_map(api_key_from).collect();
        keys.sort_by_key(|k| k.name.to_ascii_lowercase());
        Ok(keys)
    }

    fn api_keys_version(&self) -> Result<i64, StoreError> {
        let version: Option<i64> = self.with(|c| redis::cmd("GET").arg(API_KEY_SEQ).query(c))?;
        Ok(version.unwrap_or(0))
    }

    fn revoke_api_key(&self, name: &str) -> Result<Option<ApiKey>, StoreError> {
        let fields: Vec<String> = self.with(|c| {
            REVOKE_API_KEY
                .key(api_key_key(name))
                .key(API_KEYS)
                .arg(i64::MAX)
                .invoke(c)
        })?;
        Ok(api_key_from(&fields))
    }

    fn touch_api_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        let mut script = TOUCH_API_KEYS.prepare_invoke();
        for (name, at) in used {
            script.key(api_key_key(name)).arg(*at);
        }
        self.with(|c| script.invoke::<()>(c))
    }

    fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let roles = serde_json::to_string(&user.roles).unwrap_or_else(|_| "[]".into());
        let created: i64 = self.with(|c| {
            CREATE_USER
                .key(user_key(&user.name))
                .key(USERS)
                .key(api_key_key(&user.name))
                .arg(&user.name)
                .arg(&user.password_hash)
                .arg(roles)
                .arg(u8::from(user.disabled))
                .arg(user.created_at)
                .arg(user.provider.as_deref().unwrap_or_default())
                .invoke(c)
        })?;
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let fields: Option<Vec<String>> = self.with(|c| USER.key(user_key(name)).invoke(c))?;
        Ok(fields.as_deref().and_then(user_from))
    }

    fn users(&self) -> Result<Vec<User>, StoreError> {
        let fields: Vec<String> = self.with(|c| ALL_USERS.key(USERS).invoke(c))?;
        let mut users: Vec<User> = fields.chunks(7).filter_map(user_from).collect();
        users.sort_by_key(|u| u.name.to_ascii_lowercase());
        Ok(users)
    }

    fn upsert_provider_user(&self, user: &User) -> Result<User, StoreError> {
        let roles = serde_json::to_string(&user.roles).unwrap_or_else(|_| "[]".into());
        let fields: Option<Vec<String>> = self.with(|c| {
            UPSERT_PROVIDER_USER
                .key(user_key(&user.name))
                .key(USERS)
                .key(api_key_key(&user.name))
                .arg(&user.name)
                .arg(roles)
                .arg(user.created_at)
                .arg(user.provider.as_deref().unwrap_or_default())
                .invoke(c)
        })?;
        fields
            .as_deref()
            .and_then(user_from)
            .ok_or(StoreError::Conflict)
    }

    fn remove_user(&self, name: &str, before: i64) -> Result<bool, StoreError> {
        let removed: i64 = self.with(|c| {
            REMOVE_USER
                .key(user_key(name))
                .key(USERS)
                .arg(before)
                .invoke(c)
        })?;
        Ok(removed == 1)
    }

    fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, StoreError> {
        let set: i64 = self.with(|c| {
            SET_USER_FIELD
                .key(user_key(name))
                .arg("hash")
                .arg(password_hash)
                .invoke(c)
        })?;
        Ok(set == 1)
    }

    fn set_disabled(&self, name: &str, disabled: bool) -> Result<bool, StoreError> {
        let set: i64 = self.with(|c| {
            SET_USER_FIELD
                .key(user_key(name))
                .arg("disabled")
                .arg(u8::from(disabled))
                .invoke(c)
        })?;
        Ok(set == 1)
    }

    fn start_family(&self, first: &RefreshToken, now: i64) -> Result<(), StoreError> {
        self.with(|c| {
            START_FAMILY
                .key(token_key(&first.jti))
                .arg(&first.family)
                .arg(&first.user)
                .arg(first.exp)
                .arg(now)
                .arg(RETAIN_AFTER_EXP)
                .invoke::<()>(c)
        })
    }

    fn rotate(
        &self,
        presented: &str,
        next_jti: &str,
        next_exp: i64,
        now: i64,
    ) -> Result<Rotation, StoreError> {
        let outcome: Vec<String> = self.with(|c| {
            ROTATE
                .key(token_key(presented))
                .key(token_key(next_jti))
                .arg(next_exp)
                .arg(now)
                .arg(RETAIN_AFTER_EXP)
                .invoke(c)
        })?;
        Ok(match outcome.as_slice() {
            [kind, user] if kind == "rotated" => Rotation::Rotated { user: user.clone() },
            [kind, family, user] if kind == "reused" => Rotation::Reused {
                family: family.clone(),
                user: user.clone(),
            },
            [kind] if kind == "revoked" => Rotation::Revoked,
            _ => Rotation::Unknown,
        })
    }

    fn revoke_family_of(&self, jti: &str, now: i64) -> Result<Option<String>, StoreError> {
        self.with(|c| REVOKE_FAMILY_OF.key(token_key(jti)).arg(now).invoke(c))
    }

    fn revoke_token(&self, jti: &str, exp: i64) -> Result<(), StoreError> {
        self.with(|c| REVOKE_TOKEN.arg(jti).arg(exp).invoke::<()>(c))
    }

    fn revoke_user(&self, user: &str, before: i64) -> Result<(), StoreError> {
        self.with(|c| REVOKE_USER.arg(user).arg(before).invoke::<()>(c))
    }

    fn revocations_since(&self, cursor: i64) -> Result<(Vec<Revocation>, i64), StoreError> {
        let known = self.epoch.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let reply: Vec<String> =
            self.with(|c| REVOCATIONS_SINCE.arg(cursor).arg(&known).invoke(c))?;
        let [counter, epoch, members @ ..] = reply.as_slice() else {
            return Ok((Vec::new(), cursor));
        };
        epoch.clone_into(&mut self.epoch.lock().unwrap_or_else(|p| p.into_inner()));
        let mut found = Vec::with_capacity(members.len());
        for member in members {
            // `seq|kind|until|subject`; the subject last, as it may hold anything.
            let mut fields = member.splitn(4, '|');
            let (Some(_), Some(kind), Some(until), Some(subject)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let (until, subject) = (number(until), subject.to_owned());
            found.push(if kind == "u" {
                Revocation::User {
                    user: subject,
                    before: until,
                }
            } else {
                Revocation::Token {
                    jti: subject,
                    exp: until,
                }
            });
        }
        // The counter is the new cursor: every member up to it was written with it, in
        // one script.
        Ok((found, number(counter)))
    }

    fn purge(&self, now: i64, user_horizon: i64) -> Result<(), StoreError> {
        self.with(|c| PURGE.arg(now).arg(user_horizon).invoke::<i64>(c))
            .map(|_| ())
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| redis::cmd("PING").query::<String>(c))
            .map(|_| ())
    }
}
