//! The verified-token cache: a token already verified costs a lookup instead of a
//! signature check.
//!
//! It never weakens a check. The key is the whole token, compared in full (the hash only
//! picks a slot; a token differing in one byte is a miss and is verified from scratch).
//! What is cached is what cannot change for a given token: a valid signature from a
//! configured key, the right issuer, audience and type, and the identity headers those
//! claims make. What can change is checked on every hit by the [`Authenticator`](super::Authenticator): `exp` and `nbf`
//! against the clock, and the revocation map. The cache belongs to one config: a reload
//! (new keys, new identity headers) builds a new, empty one.
//!
//! Bounded: at most `tokens.verified_cache` entries (quick_cache's CLOCK-Pro eviction,
//! sharded, lock-free reads in the common case); 0 turns it off.

use std::sync::Arc;

use quick_cache::UnitWeighter;
use quick_cache::sync::{Cache, DefaultLifecycle};

use super::Caller;

type Inner = Cache<
    Box<str>,
    Arc<Caller>,
    UnitWeighter,
    foldhash::fast::RandomState,
    DefaultLifecycle<Box<str>, Arc<Caller>>,
>;

#[derive(Debug)]
pub struct TokenCache {
    inner: Option<Inner>,
}

impl TokenCache {
    /// A cache of up to `capacity` tokens; none with 0.
    pub fn new(capacity: usize) -> TokenCache {
        let inner = (capacity > 0).then(|| {
            Cache::with(
                capacity,
                capacity as u64,
                UnitWeighter,
                foldhash::fast::RandomState::default(),
                DefaultLifecycle::default(),
            )
        });
        TokenCache { inner }
    }

    pub fn get(&self, token: &str) -> Option<Arc<Caller>> {
        self.inner.as_ref()?.get(token)
    }

    pub fn insert(&self, token: &str, entry: Arc<Caller>) {
        if let Some(inner) = &self.inner {
            inner.insert(token.into(), entry);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, Inner::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::Claims;

    fn entry(sub: &str) -> Arc<Caller> {
        Arc::new(Caller {
            via: crate::auth::Via::Bearer,
            claims: Claims {
                sub: sub.into(),
                iat: None,
                nbf: None,
                exp: Some(1),
                jti: None,
                token_type: None,
                fresh: None,
                auth_time: None,
                iss: None,
                aud: None,
                roles: Default::default(),
                extra: Default::default(),
            },
            headers: Vec::new(),
            key: None,
        })
    }

    #[test]
    fn the_whole_token_is_the_key() {
        let cache = TokenCache::new(10);
        cache.insert("aaa.bbb.ccc", entry("alice"));
        assert_eq!(
            cache
                .get("aaa.bbb.ccc")
                .map(|e| e.claims.sub.clone())
                .as_deref(),
            Some("alice")
        );
        assert!(cache.get("aaa.bbb.ccd").is_none());
        assert!(cache.get("aaa.bbb.cc").is_none());
    }

    #[test]
    fn it_stays_within_its_bound_and_can_be_off() {
        let cache = TokenCache::new(100);
        for i in 0..1000 {
            cache.insert(&format!("token-{i}"), entry("x"));
        }
        assert!(cache.len() <= 100, "{}", cache.len());
        let off = TokenCache::new(0);
        off.insert("t", entry("x"));
        assert!(off.get("t").is_none());
        assert!(off.is_empty());
    }
}
