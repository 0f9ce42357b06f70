//! The admin listener's endpoints: `/healthz` (the process is alive) and `/readyz` (config
//! and keys are loaded, the store answers, and the gateway accepts traffic; 503 once a
//! drain has begun). They are never served on the public listener.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, Request, Response, StatusCode};

use crate::body::Body;
use crate::error::{Error, json_response};
use crate::store::Store;

/// Readiness as the server sets it: true once serving, false from the start of a drain.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

pub async fn handle<B>(
    req: &Request<B>,
    readiness: &Readiness,
    store: Option<Arc<dyn Store>>,
) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Error::NotFound.to_response();
    }
    match req.uri().path() {
        "/healthz" => json_response(StatusCode::OK, serde_json::json!({ "status": "ok" })),
        "/readyz" => {
            let store_ok = match store {
                None => true,
                Some(store) => matches!(
                    tokio::task::spawn_blocking(move || store.ping()).await,
                    Ok(Ok(()))
                ),
            };
            match (readiness.get(), store_ok) {
                (true, true) => {
                    json_response(StatusCode::OK, serde_json::json!({ "status": "ready" }))
                }
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
        _ => Error::NotFound.to_response(),
    }
}
