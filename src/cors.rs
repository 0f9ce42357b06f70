//! A route's CORS policy (the Fetch standard's CORS protocol): the gateway answers a
//! preflight itself, without authentication (browsers send none with it), and puts the
//! CORS headers on a response only for an allowed origin. A disallowed origin gets no CORS
//! headers at all, so the browser keeps the response from the page.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::{self, Body};

/// `cors = { ... }` of one route, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Exact origins (`https://app.example.com`); `*` for any.
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<Method>,
    /// Lower case.
    pub allow_headers: Vec<HeaderName>,
    pub allow_credentials: bool,
    pub max_age: Option<Duration>,
}

impl Cors {
    /// The request's `Origin`, when this policy allows it.
    pub(crate) fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        self.allow_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(text))
            .then(|| origin.clone())
    }

    /// The answer to a preflight: 204, with the CORS headers only when the origin, the
    /// method and every requested header are allowed.
    pub(crate) fn preflight<B>(&self, req: &Request<B>, method: &Method) -> Response<Body> {
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = self.allowed_origin(req.headers()) else {
            return response;
        };
        let requested_headers: Vec<String> = req
            .headers()
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let headers_allowed = requested_headers
            .iter()
            .all(|h| self.allow_headers.iter().any(|a| a.as_str() == h));
        if !self.allow_methods.contains(method) || !headers_allowed {
            return response;
        }
        self.allow(headers, origin);
        let methods: Vec<&str> = self.allow_methods.iter().map(Method::as_str).collect();
        if let Ok(value) = HeaderValue::from_str(&methods.join(", ")) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, value);
        }
        if !self.allow_headers.is_empty() {
            let names: Vec<&str> = self.allow_headers.iter().map(HeaderName::as_str).collect();
            if let Ok(value) = HeaderValue::from_str(&names.join(", ")) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, value);
            }
        }
        if let Some(max_age) = self.max_age {
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from(max_age.as_secs()),
            );
        }
        response
    }

    /// Puts the CORS headers for an allowed `origin` on an actual response (whatever the
    /// upstream said about CORS is replaced: the route's policy is the one in force).
    pub(crate) fn decorate(&self, headers: &mut HeaderMap, origin: Option<HeaderValue>) {
        for name in [
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        ] {
            headers.remove(name);
        }
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = origin {
            self.allow(headers, origin);
        }
    }

    fn allow(&self, headers: &mut HeaderMap, origin: HeaderValue) {
        // The origin itself, never `*`: `*` cannot go with credentials, and echoing keeps
        // one answer for both.
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.allow_credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// The method a preflight asks about, when `req` is one (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`).
pub(crate) fn preflight_method<B>(req: &Request<B>) -> Option<Method> {
    if req.method() != Method::OPTIONS || !req.headers().contains_key(header::ORIGIN) {
        return None;
    }
    let requested = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(requested.as_bytes()).ok()
}
