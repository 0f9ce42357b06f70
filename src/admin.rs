//! The admin listener's endpoints: `/healthz` (the process is alive), `/readyz` (config
//! and keys are loaded, the store answers, and the gateway accepts traffic; 503 once a
//! drain has begun) and `/metrics` (Prometheus text). None is ever served on the public
//! listener.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::{self, Body};
use crate::error::{Error, json_response};
use crate::metrics::Metrics;
use crate::revocation::Revocations;
use crate::store::Store;

/// Readiness as the server sets it: true once serving, false from the start of a drain.
#[derive(Debug, Default)]
pub(crate) struct Readiness(AtomicBool);

impl Readiness {
    pub(crate) fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What the admin endpoints report on.
#[derive(Debug)]
pub(crate) struct Admin {
    pub readiness: Arc<Readiness>,
    pub store: Option<Arc<dyn Store>>,
    pub metrics: Arc<Metrics>,
    pub revocations: Arc<Revocations>,
}

pub(crate) async fn handle<B>(req: &Request<B>, admin: &Admin) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Error::NotFound.to_response();
    }
    match req.uri().path() {
        "/healthz" => json_response(StatusCode::OK, serde_json::json!({ "status": "ok" })),
        "/readyz" => {
            let store_ok = match admin.store.clone() {
                None => true,
                Some(store) => matches!(
                    tokio::task::spawn_blocking(move || store.ping()).await,
                    Ok(Ok(()))
                ),
            };
            match (admin.readiness.get(), store_ok) {
                // Stale issuer keys still verify (for up to a day), so traffic is still
                // served: ready, with the issuers named for whoever looks.
                (true, true) => match admin.metrics.stale_issuers() {
                    stale if stale.is_empty() => {
                        json_response(StatusCode::OK, serde_json::json!({ "status": "ready" }))
                    }
                    stale => json_response(
                        StatusCode::OK,
                        serde_json::json!({ "status": "ready", "stale_issuers": stale }),
                    ),
                },
                (false, _) => json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({ "status": "draining" }),
                ),
                (true, false) => json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({ "status": "store unreachable" }),
                ),
            }
        }
        "/metrics" => {
            let text = admin.metrics.encode(admin.revocations.len());
            let mut response = Response::new(body::full(text));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        _ => Error::NotFound.to_response(),
    }
}
