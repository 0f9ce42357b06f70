//! Token buckets (GCRA) by key, in memory: the one rate limiter behind the login limits
//! and the routes' `rate_limit`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A rate such as `"5/m"`: `count` events per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: RatePer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatePer {
    Second,
    Minute,
    Hour,
}

/// Nanoseconds on the limiter's own monotonic clock.
pub(crate) type Nanos = u64;

/// Token buckets by key, as GCRA keeps them: one "theoretical arrival time" per key, the
/// instant the bucket is full again. A key that is absent, or whose time has passed, has
/// a full bucket. Behind a plain mutex: it is taken for a map lookup, never across an
/// `.await`, and only by account requests, which wait for an argon2 hash anyway.
#[derive(Debug)]
pub(crate) struct Buckets<K> {
    /// The time one token takes to come back.
    interval: Nanos,
    /// `interval` × burst: how far past now the arrival time may run.
    capacity: Nanos,
    full_at: Mutex<HashMap<K, Nanos>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// `rate.count × multiplier` tokens per period, all of them available at once.
    pub(crate) fn new(rate: Rate, multiplier: u32) -> Buckets<K> {
        let period: Nanos = match rate.per {
            RatePer::Second => 1_000_000_000,
            RatePer::Minute => 60_000_000_000,
            RatePer::Hour => 3_600_000_000_000,
        };
        let burst = u64::from(rate.count.max(1)) * u64::from(multiplier.max(1));
        let interval = (period / burst).max(1);
        Buckets {
            interval,
            capacity: interval.saturating_mul(burst),
            full_at: Mutex::new(HashMap::new()),
        }
    }

    /// How far ahead of now a full bucket's time may run: the rate's whole period.
    pub(crate) fn capacity(&self) -> Nanos {
        self.capacity
    }

    fn map(&self) -> MutexGuard<'_, HashMap<K, Nanos>> {
        // A panic while holding the lock leaves the map valid: every update is one insert.
        self.full_at.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keys with a bucket that is not full.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }

    /// Takes a token; when there is none, the time until there is one.
    pub(crate) fn take(&self, key: &K, now: Nanos) -> Result<(), Nanos> {
        let mut map = self.map();
        let full_at = map.get(key).copied().unwrap_or(0).max(now);
        let next = full_at.saturating_add(self.interval);
        let ahead = next - now;
        if ahead > self.capacity {
            return Err(ahead - self.capacity);
        }
        map.insert(key.clone(), next);
        Ok(())
    }

    /// [`Buckets::take`] with at most `max_keys` buckets kept: past that, the buckets that
    /// are full again go first, and a new key that still finds no room is let through
    /// uncounted (memory stays bounded; a flood of addresses is the connection cap's).
    pub(crate) fn take_bounded(&self, key: &K, now: Nanos, max_keys: usize) -> Result<(), Nanos> {
        {
            let mut map = self.map();
            if map.len() >= max_keys && !map.contains_key(key) {
                map.retain(|_, full_at| *full_at > now);
                if map.len() >= max_keys {
                    return Ok(());
                }
            }
        }
        self.take(key, now)
    }

    /// Takes a token even from an empty bucket (which stays empty, no emptier).
    pub(crate) fn charge(&self, key: &K, now: Nanos) {
        let mut map = self.map();
        let full_at = map.get(key).copied().unwrap_or(0).max(now);
        let next = full_at
            .saturating_add(self.interval)
            .min(now.saturating_add(self.capacity));
        map.insert(key.clone(), next);
    }

    /// Gives back a token taken earlier.
    pub(crate) fn give_back(&self, key: &K) {
        if let Some(full_at) = self.map().get_mut(key) {
            *full_at = full_at.saturating_sub(self.interval);
        }
    }

    /// Drops the buckets that are full again: they hold nothing an absent key does not.
    pub(crate) fn forget_full(&self, now: Nanos) {
        let mut map = self.map();
        map.retain(|_, full_at| *full_at > now);
        map.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_lets_new_keys_through_and_keeps_counting_known_ones() {
        let buckets = Buckets::new(
            Rate {
                count: 1,
                per: RatePer::Minute,
            },
            1,
        );
        assert!(buckets.take_bounded(&"a", 0, 2).is_ok());
        assert!(buckets.take_bounded(&"b", 0, 2).is_ok());
        assert!(
            buckets.take_bounded(&"a", 1, 2).is_err(),
            "a known key is still counted"
        );
        // Full of empty buckets: a new key passes uncounted, and is not kept.
        assert!(buckets.take_bounded(&"c", 1, 2).is_ok());
        assert!(buckets.take_bounded(&"c", 2, 2).is_ok());
        assert_eq!(buckets.len(), 2);
        // A minute on, the full buckets make room.
        let later = 61_000_000_000;
        assert!(buckets.take_bounded(&"c", later, 2).is_ok());
        assert!(buckets.take_bounded(&"c", later + 1, 2).is_err());
    }
}
