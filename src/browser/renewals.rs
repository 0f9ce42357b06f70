//! Renewal in passing, once per refresh token: a page that loads twenty resources with
//! one expired access cookie sends twenty requests with one refresh cookie. The first
//! spends the refresh token; the others, arriving while it runs or within the grace
//! after, get the same new session instead of presenting a spent token (which the store
//! would take for theft and answer by revoking the family). After the grace, a replayed
//! refresh token goes to the store as any other, and its family dies.
//!
//! Per replica and in memory, bounded: past the bound no new renewal is shared (the
//! request is refused as expired and a browser navigation goes to the login page).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::accounts::Session;

/// How long a renewal is shared with requests that bring the same refresh token.
const GRACE: Duration = Duration::from_secs(10);
/// Renewals remembered at once.
const MAX_RENEWALS: usize = 10_000;

type Shared = Arc<OnceCell<Option<Arc<Session>>>>;

#[derive(Debug, Default)]
pub(crate) struct Renewals {
    by_token: Mutex<HashMap<String, (Instant, Shared)>>,
}

impl Renewals {
    pub(crate) fn new() -> Renewals {
        Renewals::default()
    }

    /// The session `refresh` renews to: `spend` runs once per refresh token within the
    /// grace, and every caller gets its result.
    pub(crate) async fn renew<F, Fut>(&self, refresh: &str, spend: F) -> Option<Arc<Session>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<Session>>,
    {
        let shared = {
            let mut map = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            map.retain(|_, (at, _)| now.duration_since(*at) < GRACE);
            match map.get(refresh) {
                Some((_, shared)) => shared.clone(),
                None if map.len() >= MAX_RENEWALS => return None,
                None => {
                    let shared = Shared::default();
                    map.insert(refresh.to_owned(), (now, shared.clone()));
                    shared
                }
            }
        };
        shared
            .get_or_init(|| async { spend().await.map(Arc::new) })
            .await
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn session(n: usize) -> Session {
        Session {
            access: format!("access-{n}"),
            refresh: format!("refresh-{n}"),
            csrf: None,
        }
    }

    #[tokio::test]
    async fn parallel_renewals_of_one_token_spend_it_once() {
        let renewals = Arc::new(Renewals::new());
        let spent = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (renewals, spent) = (renewals.clone(), spent.clone());
            tasks.push(tokio::spawn(async move {
                renewals
                    .renew("r1", || async {
                        let n = spent.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Some(session(n))
                    })
                    .await
                    .map(|s| s.access.clone())
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("task").as_deref(), Some("access-0"));
        }
        assert_eq!(spent.load(Ordering::SeqCst), 1);
        let other = renewals.renew("r2", || async { Some(session(7)) }).await;
        assert_eq!(other.map(|s| s.access.clone()).as_deref(), Some("access-7"));
    }
}
