//! Which connections are doing something. A connection is busy while a request is being
//! handled or its response body is being written, idle otherwise. Idle connections are
//! closed after a while (HTTP/2 here: hyper has no idle timeout for it; HTTP/1 by hyper's
//! own header timer), and they are the first to go when the connection cap is reached,
//! so a new client is served rather than queued behind silent ones.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Every open connection's activity, for the accept loop to find an idle one at the cap.
#[derive(Debug)]
pub(crate) struct Connections {
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
    epoch: Instant,
}

impl Connections {
    pub(crate) fn new() -> Arc<Connections> {
        Arc::new(Connections {
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Registers a new connection, idle from now; it leaves the registry when the returned
    /// handle is dropped.
    pub(crate) fn track(self: &Arc<Self>) -> Tracked {
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last_change_ms: AtomicU64::new(self.now_ms()),
            evicted: CancellationToken::new(),
            connections: self.clone(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, activity.clone());
        Tracked { id, activity }
    }

    /// Asks the connection idle the longest to close. False when none is idle.
    pub(crate) fn evict_idle(&self) -> bool {
        let open = self.lock();
        let oldest = open
            .values()
            .filter(|a| a.in_flight.load(Ordering::Acquire) == 0 && !a.evicted.is_cancelled())
            .min_by_key(|a| a.last_change_ms.load(Ordering::Relaxed));
        match oldest {
            Some(activity) => {
                activity.evicted.cancel();
                true
            }
            None => false,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One connection's place in the registry.
#[derive(Debug)]
pub(crate) struct Tracked {
    id: u64,
    activity: Arc<Activity>,
}

impl Tracked {
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.activity.connections.lock().remove(&self.id);
    }
}

#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// When the connection last became idle (or opened), in ms since the registry's epoch.
    last_change_ms: AtomicU64,
    /// Cancelled when the accept loop needs this connection's slot.
    evicted: CancellationToken,
    connections: Arc<Connections>,
}

impl Activity {
    /// Marks a request in flight until the guard (or the response body holding it) drops.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        // No clock read here: while busy, the time of the last change counts for nothing;
        // it matters from the moment the connection is idle again (`Busy::drop`).
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Resolves once the connection has had nothing in flight for `limit`, or when it is
    /// evicted at the connection cap.
    pub(crate) async fn idle_for(&self, limit: Duration) {
        let wait = async {
            loop {
                let now = self.connections.now_ms();
                let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
                let wait_ms = if self.in_flight.load(Ordering::Acquire) == 0 {
                    let idle = now.saturating_sub(self.last_change_ms.load(Ordering::Relaxed));
                    if idle >= limit_ms {
                        return;
                    }
                    limit_ms - idle
                } else {
                    // Busy: look again a whole limit later (a request usually ends first).
                    limit_ms
                };
                tokio::time::sleep(Duration::from_millis(wait_ms.max(1))).await;
            }
        };
        tokio::select! {
            () = wait => {}
            () = self.evicted.cancelled() => {}
        }
    }

    /// Resolves when the accept loop asks this connection to make room.
    pub(crate) async fn evicted(&self) {
        self.evicted.cancelled().await;
    }

    fn touch(&self) {
        self.last_change_ms
            .store(self.connections.now_ms(), Ordering::Relaxed);
    }
}

/// A request in flight on its connection.
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection busy until it is written (or dropped).
#[derive(Debug)]
pub(crate) struct BusyBody<B> {
    inner: B,
    _busy: Busy,
}

impl<B> BusyBody<B> {
    pub(crate) fn new(inner: B, busy: Busy) -> BusyBody<B> {
        BusyBody { inner, _busy: busy }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for BusyBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_for_waits_out_requests_in_flight() {
        let connections = Connections::new();
        let tracked = connections.track();
        let activity = tracked.activity().clone();
        let busy = activity.busy();
        let idle = tokio::spawn({
            let activity = activity.clone();
            async move { activity.idle_for(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!idle.is_finished(), "busy for 30 s: not idle");
        drop(busy);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!idle.is_finished(), "idle for 5 s of 10");
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(idle.is_finished(), "idle for 11 s of 10");
    }

    #[tokio::test]
    async fn the_idle_connection_is_evicted_never_a_busy_one() {
        let connections = Connections::new();
        let busy_one = connections.track();
        let _busy = busy_one.activity().busy();
        assert!(!connections.evict_idle(), "nothing idle");
        let idle_one = connections.track();
        assert!(connections.evict_idle());
        assert!(idle_one.activity().evicted.is_cancelled());
        assert!(!busy_one.activity().evicted.is_cancelled());
        assert!(!connections.evict_idle(), "the idle one was already asked");
        drop(idle_one);
        assert_eq!(connections.lock().len(), 1, "a dropped connection leaves");
    }
}
