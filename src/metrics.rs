//! Prometheus metrics, served as text on the admin listener (`/metrics`), never on the
//! public one.
//!
//! Every counter is created once and shared by every config the process loads, so a reload
//! never resets them. Label values are bounded: routes are the configured patterns (plus
//! `own:<endpoint>`, `none` and `invalid`), methods a fixed set, reasons and kinds fixed
//! strings — nothing a client sends becomes a label.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A label value shared by many requests without copying (a route pattern, an upstream).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct Label(Arc<str>);

impl Label {
    pub(crate) fn new(text: &str) -> Label {
        Label(Arc::from(text))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// Methods as a bounded label: the common ones by name, the rest as `OTHER`.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub(crate) enum MethodClass {
    GET,
    HEAD,
    POST,
    PUT,
    PATCH,
    DELETE,
    OPTIONS,
    OTHER,
}

impl MethodClass {
    pub(crate) fn of(method: &http::Method) -> MethodClass {
        match *method {
            http::Method::GET => MethodClass::GET,
            http::Method::HEAD => MethodClass::HEAD,
            http::Method::POST => MethodClass::POST,
            http::Method::PUT => MethodClass::PUT,
            http::Method::PATCH => MethodClass::PATCH,
            http::Method::DELETE => MethodClass::DELETE,
            http::Method::OPTIONS => MethodClass::OPTIONS,
            _ => MethodClass::OTHER,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Label,
    method: MethodClass,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: Label,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabels {
    issuer: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerResultLabels {
    issuer: Label,
    result: &'static str,
}

/// Every metric of the process.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    auth_failures: Family<ReasonLabels, Counter>,
    upstream_errors: Family<UpstreamLabels, Counter>,
    logins: Family<ResultLabels, Counter>,
    refresh_reuse: Counter,
    /// Resolved once: looked up on every authenticated request.
    token_cache_hits: Counter,
    token_cache_misses: Counter,
    reloads: Family<ResultLabels, Counter>,
    open_connections: Gauge<i64, AtomicI64>,
    revocations: Gauge<i64, AtomicI64>,
    jwks_fetches: Family<IssuerResultLabels, Counter>,
    issuer_keys_stale: Family<IssuerLabels, Gauge<i64, AtomicI64>>,
    /// The `[[issuer]]` names whose last fetch failed, for `/readyz` (a gauge family
    /// cannot be listed back). Written once per fetch, never on the request path.
    stale_issuers: Mutex<BTreeSet<String>>,
}

/// Request latency buckets, 250 µs to 30 s: a gateway answers in well under a millisecond
/// unless the upstream is slow, and upstream timeouts default to 30 s.
const DURATION_BUCKETS: [f64; 15] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("authgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route, method and status",
            requests.clone(),
        );
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(DURATION_BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, by route",
            duration.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused for authentication or authorization, by reason",
            auth_failures.clone(),
        );
        let upstream_errors = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures, by upstream and kind (refused, reset, timeout)",
            upstream_errors.clone(),
        );
        let logins = Family::<ResultLabels, Counter>::default();
        registry.register("logins", "Login attempts, by result", logins.clone());
        let refresh_reuse = Counter::default();
        registry.register(
            "refresh_reuse_detected",
            "Spent refresh tokens presented again (their family was revoked)",
            refresh_reuse.clone(),
        );
        let token_cache = Family::<ResultLabels, Counter>::default();
        registry.register(
            "token_cache_lookups",
            "Verified-token cache lookups, by result (hit, miss)",
            token_cache.clone(),
        );
        let token_cache_hits = token_cache
            .get_or_create(&ResultLabels { result: "hit" })
            .clone();
        let token_cache_misses = token_cache
            .get_or_create(&ResultLabels { result: "miss" })
            .clone();
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads, by result",
            reloads.clone(),
        );
        let open_connections = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "open_connections",
            "Client connections open on the public listener",
            open_connections.clone(),
        );
        let revocations = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "revocations",
            "Entries in the in-memory revocation map",
            revocations.clone(),
        );
        let jwks_fetches = Family::<IssuerResultLabels, Counter>::default();
        registry.register(
            "jwks_fetches",
            "Fetches of an [[issuer]]'s keys, by issuer and result",
            jwks_fetches.clone(),
        );
        let issuer_keys_stale = Family::<IssuerLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "issuer_keys_stale",
            "1 while an [[issuer]]'s last key fetch failed (its last good keys are in use)",
            issuer_keys_stale.clone(),
        );
        Metrics {
            registry,
            jwks_fetches,
            issuer_keys_stale,
            stale_issuers: Mutex::new(BTreeSet::new()),
            requests,
            duration,
            auth_failures,
            upstream_errors,
            logins,
            refresh_reuse,
            token_cache_hits,
            token_cache_misses,
            reloads,
            open_connections,
            revocations,
        }
    }

    pub(crate) fn request(
        &self,
        route: &Label,
        method: MethodClass,
        status: u16,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                method,
                status,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub(crate) fn upstream_error(&self, upstream: &Label, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamLabels {
                upstream: upstream.clone(),
                kind,
            })
            .inc();
    }

    pub(crate) fn login(&self, result: &'static str) {
        self.logins.get_or_create(&ResultLabels { result }).inc();
    }

    pub(crate) fn refresh_reuse(&self) {
        self.refresh_reuse.inc();
    }

    pub(crate) fn token_cache(&self, hit: bool) {
        if hit {
            self.token_cache_hits.inc();
        } else {
            self.token_cache_misses.inc();
        }
    }

    pub(crate) fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// A fetch of `issuer`'s keys: counted, and the issuer stale until one succeeds.
    pub(crate) fn jwks_fetch(&self, issuer: &Label, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.jwks_fetches
            .get_or_create(&IssuerResultLabels {
                issuer: issuer.clone(),
                result,
            })
            .inc();
        self.issuer_keys_stale
            .get_or_create(&IssuerLabels {
                issuer: issuer.clone(),
            })
            .set(i64::from(!ok));
        let mut stale = self
            .stale_issuers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ok {
            stale.remove(issuer.as_str());
        } else {
            stale.insert(issuer.as_str().to_owned());
        }
    }

    /// Forgets the staleness of issuers a new config no longer has (its gauge stays at
    /// its last value: a series does not vanish from a family).
    pub(crate) fn keep_issuers(&self, names: &[&str]) {
        self.stale_issuers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|name| names.contains(&name.as_str()));
    }

    /// The issuers whose last key fetch failed, by name.
    pub(crate) fn stale_issuers(&self) -> Vec<String> {
        self.stale_issuers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Counts a connection while the guard lives.
    pub(crate) fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.open_connections.inc();
        ConnectionGuard(self.clone())
    }

    /// The text exposition, with the revocation map's size read now.
    pub(crate) fn encode(&self, revocations: usize) -> String {
        self.revocations
            .set(i64::try_from(revocations).unwrap_or(i64::MAX));
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            let _ = writeln!(text, "# encoding failed");
        }
        text
    }
}

/// Decrements the open-connection gauge when the connection ends.
#[derive(Debug)]
pub(crate) struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open_connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_with_their_labels() {
        let metrics = Metrics::new();
        let route = Label::new("/admin");
        metrics.request(&route, MethodClass::GET, 200, Duration::from_millis(3));
        metrics.request(&route, MethodClass::GET, 200, Duration::from_millis(3));
        metrics.auth_failure("expired");
        metrics.upstream_error(&Label::new("app"), "timeout");
        metrics.login("ok");
        metrics.reload(false);
        metrics.jwks_fetch(&Label::new("corp"), false);
        assert_eq!(metrics.stale_issuers(), ["corp"]);
        metrics.keep_issuers(&["corp", "other"]);
        assert_eq!(metrics.stale_issuers(), ["corp"]);
        let text = metrics.encode(7);
        for line in [
            r#"authgate_requests_total{route="/admin",method="GET",status="200"} 2"#,
            r#"authgate_auth_failures_total{reason="expired"} 1"#,
            r#"authgate_upstream_errors_total{upstream="app",kind="timeout"} 1"#,
            r#"authgate_logins_total{result="ok"} 1"#,
            r#"authgate_config_reloads_total{result="error"} 1"#,
            r#"authgate_revocations 7"#,
            r#"authgate_jwks_fetches_total{issuer="corp",result="error"} 1"#,
            r#"authgate_issuer_keys_stale{issuer="corp"} 1"#,
            r#"authgate_request_duration_seconds_count{route="/admin"} 2"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
