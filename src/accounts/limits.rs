//! Login abuse limits: token buckets per client IP and per username (`governor`). While a
//! bucket is empty every attempt is refused with 429 and `Retry-After`, the right password
//! included, so guessing costs the attacker time and never the victim's password hash
//! work.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Rate;
use crate::error::Error;

#[derive(Debug)]
pub(crate) struct LoginLimits {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_user: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

fn quota(rate: Rate) -> Quota {
    let n = NonZeroU32::new(rate.count.max(1)).expect("max(1) is non-zero");
    let quota = match rate.per {
        crate::config::RatePer::Second => Quota::per_second(n),
        crate::config::RatePer::Minute => Quota::per_minute(n),
        crate::config::RatePer::Hour => Quota::per_hour(n),
    };
    quota.allow_burst(n)
}

impl LoginLimits {
    pub(crate) fn new(per_ip: Rate, per_user: Rate) -> LoginLimits {
        LoginLimits {
            per_ip: RateLimiter::keyed(quota(per_ip)),
            per_user: RateLimiter::keyed(quota(per_user)),
            clock: DefaultClock::default(),
        }
    }

    fn retry_after(
        &self,
        not_until: governor::NotUntil<<DefaultClock as governor::clock::Clock>::Instant>,
    ) -> Error {
        let wait = not_until.wait_time_from(self.clock.now());
        Error::RateLimited {
            retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        }
    }

    /// One attempt from `ip`: refused when its bucket is empty.
    pub(crate) fn check_ip(&self, ip: IpAddr) -> Result<(), Error> {
        self.per_ip.check_key(&ip).map_err(|n| self.retry_after(n))
    }

    /// One login attempt from `ip` for `user`: both buckets must have room.
    pub(crate) fn check(&self, ip: IpAddr, user: &str) -> Result<(), Error> {
        self.check_ip(ip)?;
        // Names are bounded before they become keys, so a flood of long names costs little,
        // and folded as the store folds them, so "Alice" and "alice" share one bucket.
        let key: String = user.chars().take(64).collect::<String>().to_lowercase();
        self.per_user
            .check_key(&key)
            .map_err(|n| self.retry_after(n))
    }

    /// Forgets buckets that have refilled, bounding memory under a flood of keys.
    pub(crate) fn forget_idle(&self) {
        self.per_ip.retain_recent();
        self.per_user.retain_recent();
        self.per_ip.shrink_to_fit();
        self.per_user.shrink_to_fit();
    }
}
