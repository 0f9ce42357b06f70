//! API keys for callers that are not people: the key format, and the live keys the hot
//! path looks up.
//!
//! A key is `agk_`, 32 random base62 characters (190 bits), and 6 base62 characters of
//! the CRC-32 of those 32: a key with any one character changed fails the checksum, so a
//! typo (or a guess) is refused by arithmetic, before any lookup. The store keeps only
//! the key's SHA-256: a key is high-entropy, so a fast hash is as good as a slow one, and
//! the lookup costs one hash on a cache miss.
//!
//! The live keys are held in memory ([`ApiKeys`]), loaded at start and reloaded by the
//! store follower when the store's key version moves; a request never waits on the
//! store for a key. A revoked key is refused through the revocation map (its id as a
//! `jti`), which the follower keeps in step on every replica; when a key was last used is
//! noted in memory and written to the store in batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arc_swap::ArcSwap;

use crate::store::ApiKey;

pub const PREFIX: &str = "agk_";
const BODY_LEN: usize = 32;
const CHECK_LEN: usize = 6;
/// The length of every key.
pub const KEY_LEN: usize = PREFIX.len() + BODY_LEN + CHECK_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new random key.
pub fn mint() -> String {
    let mut body = String::with_capacity(BODY_LEN);
    while body.len() < BODY_LEN {
        let mut bytes = [0u8; 64];
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        // 248 = 4 × 62: rejecting the bytes above keeps every character equally likely.
        for b in bytes.into_iter().filter(|b| *b < 248) {
            if body.len() < BODY_LEN {
                body.push(char::from(BASE62[usize::from(b % 62)]));
            }
        }
    }
    let check = checksum(body.as_bytes());
    format!("{PREFIX}{body}{check}")
}

/// The checksum of a key's body: its CRC-32 in 6 base62 characters (62⁶ > 2³², so the
/// encoding is one-to-one).
fn checksum(body: &[u8]) -> String {
    let mut n = u64::from(crc32fast::hash(body));
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|b| char::from(*b)).collect()
}

/// Whether `text` is an API key rather than some other credential (a JWT never starts so).
pub fn looks_like_key(text: &str) -> bool {
    text.starts_with(PREFIX)
}

/// Whether `key` has the shape and checksum of a key: false for a typo, before any lookup.
pub fn well_formed(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(PREFIX) else {
        return false;
    };
    if rest.len() != BODY_LEN + CHECK_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (body, check) = rest.split_at(BODY_LEN);
    checksum(body.as_bytes()) == check
}

/// The key's SHA-256 in hex: what the store keeps.
pub fn digest(key: &str) -> String {
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    hash.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A key that is live in the store, as the hot path holds it.
#[derive(Debug)]
pub(crate) struct LiveKey {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) roles: Vec<String>,
    pub(crate) created_at: i64,
    pub(crate) expires_at: Option<i64>,
    /// Seconds; 0 = not used since start. Written at most once a second per key.
    last_used: AtomicI64,
    /// What the store was last told.
    recorded: AtomicI64,
}

impl LiveKey {
    fn new(key: &ApiKey) -> LiveKey {
        let recorded = key.last_used_at.unwrap_or(0);
        LiveKey {
            name: key.name.clone(),
            id: key.id.clone(),
            roles: key.roles.clone(),
            created_at: key.created_at,
            expires_at: key.expires_at,
            last_used: AtomicI64::new(recorded),
            recorded: AtomicI64::new(recorded),
        }
    }

    /// Notes a use at `now`. A read first, so a key used by every core does not bounce
    /// its cache line on every request, only once a second.
    pub(crate) fn used(&self, now: i64) {
        if self.last_used.load(Ordering::Relaxed) < now {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }

    pub(crate) fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// The live keys by hash. Shared by every config (it follows the store, not the config).
#[derive(Debug, Default)]
pub(crate) struct ApiKeys {
    by_hash: ArcSwap<HashMap<String, Arc<LiveKey>>>,
    /// The store's key version these were loaded at.
    version: AtomicI64,
}

impl ApiKeys {
    pub(crate) fn new() -> ApiKeys {
        ApiKeys::default()
    }

    /// The live key `key` is, if any. The caller has checked [`well_formed`].
    pub(crate) fn find(&self, key: &str) -> Option<Arc<LiveKey>> {
        self.by_hash.load().get(&digest(key)).cloned()
    }

    pub(crate) fn version(&self) -> i64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Replaces the set with the store's, at `version`. A key already held keeps its
    /// entry, so what the verified-key cache points at stays the one being counted.
    pub(crate) fn load(&self, keys: &[ApiKey], version: i64) {
        let old = self.by_hash.load();
        let fresh = keys
            .iter()
            .map(|key| {
                let live = old
                    .get(&key.hash)
                    .filter(|live| live.id == key.id)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(LiveKey::new(key)));
                (key.hash.clone(), live)
            })
            .collect();
        self.by_hash.store(Arc::new(fresh));
        self.version.store(version, Ordering::Relaxed);
    }

    pub(crate) fn len(&self) -> usize {
        self.by_hash.load().len()
    }

    /// The uses not yet written to the store: (name, last used), marked as written.
    pub(crate) fn unrecorded_uses(&self) -> Vec<(String, i64)> {
        let mut uses = Vec::new();
        for live in self.by_hash.load().values() {
            let at = live.last_used.load(Ordering::Relaxed);
            if live.recorded.swap(at, Ordering::Relaxed) < at {
                uses.push((live.name.clone(), at));
            }
        }
        uses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_are_well_formed_and_distinct() {
        let a = mint();
        let b = mint();
        assert_ne!(a, b);
        for key in [&a, &b] {
            assert_eq!(key.len(), KEY_LEN);
            assert!(key.starts_with("agk_"));
            assert!(well_formed(key), "{key}");
        }
    }

    /// Every one-character change of a key — in the body, the checksum or the prefix —
    /// fails the checksum or the shape.
    #[test]
    fn any_one_character_changed_is_refused() {
        let key = mint();
        for i in 0..key.len() {
            for replacement in BASE62.iter().chain(b"_-.") {
                let mut changed = key.clone().into_bytes();
                if changed[i] == *replacement {
                    continue;
                }
                changed[i] = *replacement;
                let changed = String::from_utf8(changed).expect("ascii");
                assert!(!well_formed(&changed), "{changed}");
            }
        }
        assert!(!well_formed(&key[..key.len() - 1]));
        assert!(!well_formed(&format!("{key}0")));
        assert!(!well_formed(""));
    }

    #[test]
    fn the_digest_is_sha256_hex() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn stored(name: &str, key: &str) -> ApiKey {
        ApiKey {
            name: name.into(),
            id: format!("id-{name}"),
            hash: digest(key),
            roles: vec!["ci".into()],
            created_at: 1,
            expires_at: None,
            last_used_at: None,
        }
    }

    #[test]
    fn uses_are_recorded_once_and_survive_a_reload() {
        let keys = ApiKeys::new();
        let (one, two) = (mint(), mint());
        keys.load(&[stored("one", &one)], 1);
        assert!(keys.find(&two).is_none());
        let live = keys.find(&one).expect("live");
        live.used(100);
        live.used(99);
        assert_eq!(keys.unrecorded_uses(), [("one".to_owned(), 100)]);
        assert!(keys.unrecorded_uses().is_empty());
        keys.load(&[stored("one", &one), stored("two", &two)], 2);
        assert_eq!(keys.version(), 2);
        assert!(Arc::ptr_eq(&live, &keys.find(&one).expect("kept")));
        keys.find(&two).expect("new").used(5);
        assert_eq!(keys.unrecorded_uses(), [("two".to_owned(), 5)]);
    }
}
