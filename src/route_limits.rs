//! The routes' `rate_limit`: a token bucket per route and per caller (or client address),
//! kept in memory per replica and bounded in size.

use std::net::IpAddr;
use std::time::Instant;

use crate::auth::Caller;
use crate::buckets::{Buckets, Nanos};
use crate::error::Error;
use crate::routes::{LimitKey, Route, RouteTable};

/// Callers (or addresses) counted per route at most: ~100 bytes each.
const MAX_KEYS_PER_ROUTE: usize = 100_000;

#[derive(Debug)]
pub(crate) struct RouteLimits {
    /// By route index; `None` for a route without `rate_limit`.
    by_route: Vec<Option<Buckets<String>>>,
    epoch: Instant,
}

impl RouteLimits {
    pub(crate) fn new(routes: &RouteTable) -> RouteLimits {
        let count = routes.iter().map(|r| r.index + 1).max().unwrap_or(0);
        let mut by_route: Vec<Option<Buckets<String>>> = (0..count).map(|_| None).collect();
        for route in routes.iter() {
            if let Some(limit) = route.rate_limit {
                by_route[route.index] = Some(Buckets::new(limit.rate, 1));
            }
        }
        RouteLimits {
            by_route,
            epoch: Instant::now(),
        }
    }

    /// Counts one request of `caller` (or of `ip`) on `route`: 429 with `Retry-After` past
    /// the route's rate.
    pub(crate) fn check(
        &self,
        route: &Route,
        caller: Option<&Caller>,
        ip: IpAddr,
    ) -> Result<(), Error> {
        let (Some(limit), Some(Some(buckets))) = (route.rate_limit, self.by_route.get(route.index))
        else {
            return Ok(());
        };
        let key = match (limit.key, caller) {
            (LimitKey::User, Some(caller)) => format!("user:{}", caller.name()),
            _ => format!("ip:{ip}"),
        };
        buckets
            .take_bounded(&key, self.now(), MAX_KEYS_PER_ROUTE)
            .map_err(Error::rate_limited)
    }

    /// Lets the buckets that are full again go.
    pub(crate) fn forget_idle(&self) {
        let now = self.now();
        for buckets in self.by_route.iter().flatten() {
            buckets.forget_full(now);
        }
    }

    fn now(&self) -> Nanos {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
