//! Login and registration abuse limits: token buckets (GCRA) kept in memory per replica.
//!
//! The limits count *failures*, so that nobody can lock a user, or an office behind one
//! NAT address, out of their account by failing on their behalf:
//!
//! - per (username, client IP), `login_rate_per_user`: a guesser at one address is slowed
//!   down, and its failures never touch the budget of the user's own address;
//! - per username from all IPs, `login_rate_per_user_all_ips`: every failure spends it,
//!   but once it is spent it refuses only the addresses that have failed for that user
//!   within the rate's period. A distributed guesser gets that budget plus one try per
//!   fresh address; the user, from an address that has not failed, still logs in;
//! - per client IP, `login_rate_per_ip`: failures for any user (password spraying).
//!
//! An attempt takes its tokens *before* the password is hashed and gives them back when
//! the password was right, so a burst of concurrent attempts can never start more hashes
//! than the budget has room for, and only failures stay spent. A right password still
//! costs a hash, so a client IP also has a budget of password checks, right or wrong:
//! [`CHECKS_PER_FAILURE`] times its failure budget, never given back. While any bucket an
//! attempt needs is empty the attempt is refused with 429 and `Retry-After`, the right
//! password included, and no hash is made.
//!
//! Registration has its own per-IP budget (`register_rate_per_ip`), spent by every
//! registration that gets as far as hashing its password, and apart from the login ones.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::buckets::{Buckets, Nanos};
use crate::config::AccountsConfig;
use crate::error::Error;

/// Password checks (right or wrong) a client IP may start per failed login its budget
/// allows: with the default 20 failures a minute, an office behind one address logs in
/// 200 times a minute, and no address makes us compute more hashes than that.
pub(crate) const CHECKS_PER_FAILURE: u32 = 10;

/// A username as a bucket key: bounded before it becomes one, so a flood of long names
/// costs little, and folded as the store folds names, so "Alice" and "alice" share one.
fn user_key(user: &str) -> String {
    user.chars().take(64).collect::<String>().to_lowercase()
}

#[derive(Debug)]
pub(crate) struct LoginLimits {
    /// The zero of every [`Nanos`] here.
    epoch: Instant,
    /// Failed logins per client IP.
    failures_per_ip: Buckets<IpAddr>,
    /// Password checks per client IP, right or wrong.
    checks_per_ip: Buckets<IpAddr>,
    /// Failed logins per (username, client IP).
    failures_per_user_ip: Buckets<(String, IpAddr)>,
    /// Failed logins per username, from every IP.
    failures_per_user: Buckets<String>,
    /// When each (username, client IP) last failed, for "has this address failed for
    /// this user lately": kept for `failure_memory`.
    last_failure: Mutex<HashMap<(String, IpAddr), Nanos>>,
    /// The period of `login_rate_per_user_all_ips`: the time its bucket takes to refill.
    failure_memory: Nanos,
    /// Registrations per client IP.
    registrations_per_ip: Buckets<IpAddr>,
}

/// A login attempt admitted by the limits, holding its tokens while the password is
/// checked. [`LoginAttempt::succeeded`] gives them back and [`LoginAttempt::failed`]
/// keeps them; an attempt dropped otherwise (the store failed, the client left) keeps
/// them too, without counting as a failure of the user's.
#[derive(Debug)]
#[must_use = "an attempt is settled by succeeded() or failed()"]
pub(crate) struct LoginAttempt<'a> {
    limits: &'a LoginLimits,
    /// (folded username, client IP).
    key: (String, IpAddr),
    /// Whether a token of the username's all-IPs bucket was taken (the IP had failed).
    took_user_token: bool,
}

impl LoginLimits {
    pub(crate) fn new(accounts: &AccountsConfig) -> LoginLimits {
        let all_ips = Buckets::new(accounts.login_rate_per_user_all_ips, 1);
        LoginLimits {
            epoch: Instant::now(),
            failures_per_ip: Buckets::new(accounts.login_rate_per_ip, 1),
            checks_per_ip: Buckets::new(accounts.login_rate_per_ip, CHECKS_PER_FAILURE),
            failures_per_user_ip: Buckets::new(accounts.login_rate_per_user, 1),
            failure_memory: all_ips.capacity(),
            failures_per_user: all_ips,
            last_failure: Mutex::new(HashMap::new()),
            registrations_per_ip: Buckets::new(accounts.register_rate_per_ip, 1),
        }
    }

    fn now(&self) -> Nanos {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn last_failures(&self) -> MutexGuard<'_, HashMap<(String, IpAddr), Nanos>> {
        self.last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// One registration from `ip`, about to hash its password.
    pub(crate) fn register(&self, ip: IpAddr) -> Result<(), Error> {
        self.registrations_per_ip
            .take(&ip, self.now())
            .map_err(Error::rate_limited)
    }

    /// One login attempt from `ip` for `user`, admitted when every bucket it needs has
    /// room; a refused attempt holds no token.
    pub(crate) fn login(&self, ip: IpAddr, user: &str) -> Result<LoginAttempt<'_>, Error> {
        self.login_at(ip, user, self.now())
    }

    fn login_at(&self, ip: IpAddr, user: &str, now: Nanos) -> Result<LoginAttempt<'_>, Error> {
        let key = (user_key(user), ip);
        // A refused attempt makes no hash: it gives back the tokens it took so far.
        let refused = |wait, taken| {
            self.give_back_first(taken, &key);
            Error::rate_limited(wait)
        };
        self.checks_per_ip
            .take(&ip, now)
            .map_err(|w| refused(w, 0))?;
        self.failures_per_ip
            .take(&ip, now)
            .map_err(|w| refused(w, 1))?;
        self.failures_per_user_ip
            .take(&key, now)
            .map_err(|w| refused(w, 2))?;
        let failed_lately = self
            .last_failures()
            .get(&key)
            .is_some_and(|at| now < at.saturating_add(self.failure_memory));
        if failed_lately {
            self.failures_per_user
                .take(&key.0, now)
                .map_err(|w| refused(w, 3))?;
        }
        Ok(LoginAttempt {
            limits: self,
            key,
            took_user_token: failed_lately,
        })
    }

    /// Gives back the first `taken` of the tokens an attempt takes, in the order it takes
    /// them.
    fn give_back_first(&self, taken: usize, key: &(String, IpAddr)) {
        if taken > 0 {
            self.checks_per_ip.give_back(&key.1);
        }
        if taken > 1 {
            self.failures_per_ip.give_back(&key.1);
        }
        if taken > 2 {
            self.failures_per_user_ip.give_back(key);
        }
    }

    /// Forgets buckets that have refilled and failures past memory, bounding memory under
    /// a flood of keys.
    pub(crate) fn forget_idle(&self) {
        self.forget_idle_at(self.now());
    }

    fn forget_idle_at(&self, now: Nanos) {
        self.failures_per_ip.forget_full(now);
        self.checks_per_ip.forget_full(now);
        self.failures_per_user_ip.forget_full(now);
        self.failures_per_user.forget_full(now);
        self.registrations_per_ip.forget_full(now);
        let mut last = self.last_failures();
        last.retain(|_, at| now < at.saturating_add(self.failure_memory));
        last.shrink_to_fit();
    }
}

impl LoginAttempt<'_> {
    /// The password was right: the failure budgets get their tokens back (the password
    /// check stays counted), and the address is no longer one that failed for the user.
    pub(crate) fn succeeded(self) {
        let limits = self.limits;
        limits.failures_per_ip.give_back(&self.key.1);
        limits.failures_per_user_ip.give_back(&self.key);
        if self.took_user_token {
            limits.failures_per_user.give_back(&self.key.0);
        }
        limits.last_failures().remove(&self.key);
    }

    /// The password was wrong (or the user unknown or disabled): the tokens stay spent,
    /// the username's all-IPs budget is spent too, and the address is remembered as one
    /// that failed for the user.
    pub(crate) fn failed(self) {
        let now = self.limits.now();
        self.failed_at(now);
    }

    fn failed_at(self, now: Nanos) {
        let limits = self.limits;
        if !self.took_user_token {
            limits.failures_per_user.charge(&self.key.0, now);
        }
        limits.last_failures().insert(self.key, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buckets::{Rate, RatePer};

    const SECOND: Nanos = 1_000_000_000;
    const MINUTE: Nanos = 60 * SECOND;

    fn rate(count: u32, per: RatePer) -> Rate {
        Rate { count, per }
    }

    fn limits(per_ip: Rate, per_user: Rate, all_ips: Rate) -> LoginLimits {
        LoginLimits::new(&AccountsConfig {
            prefix: "/auth".into(),
            paths: crate::config::AccountPaths::under("/auth"),
            registration: true,
            min_password_length: 10,
            login_rate_per_ip: per_ip,
            login_rate_per_user: per_user,
            login_rate_per_user_all_ips: all_ips,
            register_rate_per_ip: rate(2, RatePer::Hour),
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn is_limited(result: &Result<LoginAttempt<'_>, Error>) -> bool {
        matches!(result, Err(Error::RateLimited { .. }))
    }

    #[test]
    fn buckets_refill_and_give_back() {
        let buckets: Buckets<u8> = Buckets::new(rate(2, RatePer::Minute), 1);
        assert_eq!(buckets.take(&1, 0), Ok(()));
        assert_eq!(buckets.take(&1, 0), Ok(()));
        // Empty: the next token comes back half a minute after the first was taken.
        assert_eq!(buckets.take(&1, 0), Err(30 * SECOND));
        assert_eq!(buckets.take(&1, 10 * SECOND), Err(20 * SECOND));
        assert_eq!(buckets.take(&1, 30 * SECOND), Ok(()));
        buckets.give_back(&1);
        assert_eq!(buckets.take(&1, 30 * SECOND), Ok(()));
        // Charging an empty bucket keeps it empty for at most its capacity.
        buckets.charge(&1, 30 * SECOND);
        buckets.charge(&1, 30 * SECOND);
        assert_eq!(buckets.take(&1, 30 * SECOND), Err(30 * SECOND));
        buckets.forget_full(90 * SECOND);
        assert!(buckets.len() == 0);
    }

    /// Regression (issue 9 item 9): anyone could lock a user out by failing logins on
    /// their name; only the failing address is refused now.
    #[test]
    fn failures_from_one_address_do_not_lock_out_another() {
        let limits = limits(
            rate(1000, RatePer::Minute),
            rate(3, RatePer::Minute),
            rate(30, RatePer::Hour),
        );
        let (attacker, victim) = (ip(1), ip(2));
        for _ in 0..3 {
            limits
                .login_at(attacker, "alice", 0)
                .expect("admitted")
                .failed_at(0);
        }
        assert!(is_limited(&limits.login_at(attacker, "Alice", 0)));
        limits
            .login_at(victim, "alice", 0)
            .expect("the victim's address is not limited")
            .succeeded();
    }

    /// Regression (issue 9 item 9): successful logins spent the per-user budget.
    #[test]
    fn only_failures_spend_the_user_budgets() {
        let limits = limits(
            rate(1000, RatePer::Minute),
            rate(2, RatePer::Minute),
            rate(2, RatePer::Hour),
        );
        for _ in 0..10 {
            limits
                .login_at(ip(1), "alice", 0)
                .expect("admitted")
                .succeeded();
        }
        limits
            .login_at(ip(1), "alice", 0)
            .expect("admitted")
            .failed_at(0);
        limits
            .login_at(ip(1), "alice", 0)
            .expect("admitted")
            .failed_at(0);
        assert!(is_limited(&limits.login_at(ip(1), "alice", 0)));
    }

    #[test]
    fn the_all_ips_budget_refuses_only_addresses_that_failed() {
        let limits = limits(
            rate(1000, RatePer::Minute),
            rate(1000, RatePer::Minute),
            rate(3, RatePer::Hour),
        );
        // Three addresses fail once each: the user's all-IPs budget is spent.
        for n in 1..=3 {
            limits
                .login_at(ip(n), "alice", 0)
                .expect("admitted")
                .failed_at(0);
        }
        for n in 1..=3 {
            assert!(is_limited(&limits.login_at(ip(n), "alice", MINUTE)), "{n}");
        }
        // An address with no failure gets its try; once it fails it is refused too.
        limits
            .login_at(ip(4), "alice", MINUTE)
            .expect("fresh")
            .failed_at(MINUTE);
        assert!(is_limited(&limits.login_at(ip(4), "alice", MINUTE)));
        // The user from an address that has not failed logs in.
        limits
            .login_at(ip(5), "alice", MINUTE)
            .expect("fresh")
            .succeeded();
        // Another user is untouched.
        limits
            .login_at(ip(1), "bob", MINUTE)
            .expect("bob")
            .succeeded();
        // After the period, the failed addresses are forgotten.
        let later = 62 * MINUTE;
        limits.forget_idle_at(later);
        assert!(limits.last_failures().is_empty());
        limits
            .login_at(ip(1), "alice", later)
            .expect("forgotten")
            .succeeded();
    }

    /// Regression (issue 9 item 12): successful logins spent the per-IP budget.
    #[test]
    fn the_ip_budget_counts_failures_and_bounds_password_checks() {
        let failures = limits(
            rate(3, RatePer::Minute),
            rate(1000, RatePer::Minute),
            rate(1000, RatePer::Hour),
        );
        // Successes are free of the failure budget...
        for n in 0..10 {
            failures
                .login_at(ip(1), &format!("user{n}"), 0)
                .expect("admitted")
                .succeeded();
        }
        // ...which still holds three failures...
        for n in 0..3 {
            failures
                .login_at(ip(1), &format!("guess{n}"), 0)
                .expect("admitted")
                .failed_at(0);
        }
        assert!(is_limited(&failures.login_at(ip(1), "user0", 0)));
        // ...while another address is untouched.
        failures
            .login_at(ip(2), "user0", 0)
            .expect("admitted")
            .succeeded();
        // But every check counts against CHECKS_PER_FAILURE × the budget: 30 a minute.
        let checks = limits(
            rate(3, RatePer::Minute),
            rate(1000, RatePer::Minute),
            rate(1000, RatePer::Hour),
        );
        for _ in 0..3 * CHECKS_PER_FAILURE {
            checks
                .login_at(ip(1), "alice", 0)
                .expect("admitted")
                .succeeded();
        }
        assert!(is_limited(&checks.login_at(ip(1), "alice", 0)));
    }

    #[test]
    fn attempts_in_flight_hold_their_tokens() {
        let limits = limits(
            rate(2, RatePer::Minute),
            rate(1000, RatePer::Minute),
            rate(1000, RatePer::Hour),
        );
        // Two concurrent attempts take the whole failure budget before either is checked.
        let first = limits.login_at(ip(1), "alice", 0).expect("first");
        let second = limits.login_at(ip(1), "bob", 0).expect("second");
        assert!(is_limited(&limits.login_at(ip(1), "carol", 0)));
        first.succeeded();
        // A refused attempt gives back what it took: the one free token is still there.
        limits
            .login_at(ip(1), "carol", 0)
            .expect("third")
            .failed_at(0);
        drop(second);
        assert!(is_limited(&limits.login_at(ip(1), "dave", 0)));
    }

    /// Regression (issue 9 item 12): registrations spent the login budget.
    #[test]
    fn registrations_have_their_own_budget() {
        let limits = limits(
            rate(1, RatePer::Minute),
            rate(1000, RatePer::Minute),
            rate(1000, RatePer::Hour),
        );
        assert!(limits.register(ip(1)).is_ok());
        assert!(limits.register(ip(1)).is_ok());
        assert!(matches!(
            limits.register(ip(1)),
            Err(Error::RateLimited { retry_after: 1800 })
        ));
        limits
            .login(ip(1), "alice")
            .expect("login budget untouched")
            .failed();
        assert!(is_limited(&limits.login(ip(1), "alice")));
        assert!(limits.register(ip(2)).is_ok());
    }
}
