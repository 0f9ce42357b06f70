//! Revocations as the hot path sees them: an in-memory concurrent map, consulted on every
//! authenticated request.
//!
//! Two kinds of entries: a revoked token id (`jti`), kept until the token would have
//! expired anyway; and a per-user instant before which every token of that user is
//! refused (`user revoke`, a disabled account). The maps are `DashMap`s: lookups take a
//! shard read lock for a few nanoseconds and never across an `.await`; values are `Copy`,
//! so nothing borrowed leaves this module.
//!
//! This module only holds the state; making a revocation durable (store first, then this
//! map, then the answer) is the job of its callers. Revocations made elsewhere (the
//! command line, another replica) reach the map through [`Revocations::apply`], fed by the
//! server's store follower.

use crate::jwt::Claims;
use dashmap::DashMap;

use crate::store::Revocation;

/// Shared by every request through an `Arc`; it outlives config reloads.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    /// Revoked `jti` → the token's `exp`, after which the entry can go.
    tokens: DashMap<String, i64>,
    /// User → instant (seconds): tokens issued before it are refused.
    users: DashMap<String, i64>,
}

impl Revocations {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Whether a token with these claims has been revoked.
    pub(crate) fn is_revoked(&self, jti: Option<&str>, sub: &str, iat: Option<i64>) -> bool {
        if let Some(jti) = jti
            && self.tokens.contains_key(jti)
        {
            return true;
        }
        if self.users.is_empty() {
            return false;
        }
        match self.users.get(sub).map(|before| *before) {
            // A token without `iat` cannot prove it came after the revocation.
            Some(before) => iat.is_none_or(|iat| iat < before),
            None => false,
        }
    }

    /// The instant before which `user`'s tokens are refused, if any.
    pub(crate) fn user_revoked_before(&self, user: &str) -> Option<i64> {
        self.users.get(user).map(|before| *before)
    }

    pub(crate) fn revoke_token(&self, jti: &str, exp: i64) {
        self.tokens.insert(jti.to_owned(), exp);
    }

    /// Refuses every token of `user` issued before `instant`. A later instant replaces an
    /// earlier one; an earlier one never loosens a later one.
    pub(crate) fn revoke_user_before(&self, user: &str, instant: i64) {
        self.users
            .entry(user.to_owned())
            .and_modify(|before| *before = (*before).max(instant))
            .or_insert(instant);
    }

    /// Applies a revocation read from the store (idempotent).
    pub(crate) fn apply(&self, revocation: &Revocation) {
        match revocation {
            Revocation::Token { jti, exp } => self.revoke_token(jti, *exp),
            Revocation::User { user, before } => self.revoke_user_before(user, *before),
        }
    }

    /// Drops token entries whose `exp` (plus `leeway`) has passed: those tokens are refused
    /// as expired anyway. User entries go once every token they could refuse has expired
    /// (`before` older than `user_horizon`).
    pub(crate) fn purge_expired(&self, now: i64, leeway_secs: i64, user_horizon: i64) {
        self.tokens
            .retain(|_, exp| exp.saturating_add(leeway_secs) > now);
        self.users.retain(|_, before| *before >= user_horizon);
    }

    /// Whether the token with these claims is refused: its `jti`, or its user before its
    /// `iat`.
    pub(crate) fn refuses(&self, claims: &Claims) -> bool {
        self.is_revoked(claims.jti.as_deref(), &claims.sub, claims.iat)
    }

    pub(crate) fn len(&self) -> usize {
        self.tokens.len() + self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_jti_is_refused_until_purged() {
        let r = Revocations::new();
        assert!(!r.is_revoked(Some("a"), "alice", Some(10)));
        r.revoke_token("a", 100);
        assert!(r.is_revoked(Some("a"), "alice", Some(10)));
        assert!(!r.is_revoked(Some("b"), "alice", Some(10)));
        r.purge_expired(100, 30, 0);
        assert!(
            r.is_revoked(Some("a"), "alice", Some(10)),
            "still inside leeway"
        );
        r.purge_expired(131, 30, 0);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn user_revocation_refuses_older_tokens_only() {
        let r = Revocations::new();
        r.revoke_user_before("alice", 50);
        assert!(r.is_revoked(None, "alice", Some(49)));
        assert!(!r.is_revoked(None, "alice", Some(50)));
        assert!(r.is_revoked(None, "alice", None));
        assert!(!r.is_revoked(None, "bob", Some(1)));
        r.revoke_user_before("alice", 10);
        assert!(
            r.is_revoked(None, "alice", Some(49)),
            "an earlier instant never loosens"
        );
        r.purge_expired(1000, 30, 50);
        assert!(
            r.is_revoked(None, "alice", Some(49)),
            "kept until its horizon"
        );
        r.purge_expired(1000, 30, 51);
        assert_eq!(r.len(), 0);
    }
}
