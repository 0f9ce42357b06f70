//! The one error type of the request path and its one mapping to a response.
//!
//! Every refusal the gateway makes is an [`Error`]; [`Error::status`] is exhaustive (no
//! catch-all arm) so a new variant cannot ship without a deliberate status, and
//! [`Error::to_response`] is the only place an error becomes bytes on the wire: JSON
//! `{"error", "error_description"}` and, for 401, the RFC 6750 `WWW-Authenticate` header.
//! Descriptions are fixed strings: nothing a client sent (a token, a password) is echoed.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};

use crate::body::{self, Body};
use crate::jwt::TokenError;
use crate::routes::PathError;

/// Why a request was refused or failed, grouped by whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- the client's request is malformed ---
    #[error("ambiguous or invalid request path: {0}")]
    Path(#[from] PathError),
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("no route matches the request")]
    NotFound,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("request body too slow")]
    RequestTimeout,
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),

    // --- authentication and authorization ---
    #[error("no bearer token in the request")]
    MissingToken,
    #[error("more than one credential in the request")]
    ConflictingCredentials,
    #[error("invalid token: {0}")]
    InvalidToken(#[from] TokenError),
    #[error("the token lacks a role the route requires")]
    InsufficientScope,
    #[error("no client certificate on the connection")]
    MissingClientCertificate,
    #[error("no client identity names the client certificate")]
    UnknownClientCertificate,
    #[error("a cookie-authenticated request failed the CSRF check")]
    CsrfFailed,
    #[error("wrong username or password")]
    InvalidCredentials,
    /// An OpenID Connect callback whose `state` is missing, not this browser's, or used.
    #[error("the login's state is wrong or used")]
    LoginState,
    /// An OpenID Connect login the provider's answer does not prove.
    #[error("the identity provider's login is refused: {0}")]
    ProviderLogin(&'static str),
    #[error("the username is taken")]
    UsernameTaken,
    #[error("registration is closed")]
    RegistrationClosed,
    #[error("too many attempts")]
    RateLimited { retry_after: u64 },
    /// An identity provider that cannot be asked now (its discovery not fetched yet, its
    /// token endpoint down).
    #[error("the identity provider is unavailable")]
    ProviderUnavailable,

    // --- the upstream ---
    #[error("upstream {upstream} could not be reached")]
    UpstreamUnreachable {
        upstream: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("upstream {upstream} failed before answering")]
    UpstreamFailed {
        upstream: String,
        #[source]
        source: hyper::Error,
    },
    #[error("upstream {upstream} did not answer in time")]
    UpstreamTimeout { upstream: String },
    #[error("upstream {upstream} answered what cannot be forwarded: {why}")]
    UpstreamInvalid { upstream: String, why: &'static str },

    // --- ours ---
    #[error("a store call failed")]
    StoreUnavailable(#[source] crate::store::StoreError),
    #[error("a blocking task failed")]
    TaskFailed(#[source] tokio::task::JoinError),
    #[error("token signing failed")]
    Signing(#[source] crate::jwt::SignError),
    #[error("too busy")]
    Busy,
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// The shape of an error body: RFC 6750's `{"error", "error_description"}`, or
/// Flask-JWT-Extended's `{"msg"}` for clients written against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorBody {
    #[default]
    Rfc6750,
    FlaskJwtExtended,
}

/// Who is at fault: decides the log level (client faults are not errors of ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Auth,
    Upstream,
    Internal,
}

impl Error {
    /// 429 for a limit whose next token comes in `wait_nanos`: `Retry-After` in whole
    /// seconds, rounded up.
    pub(crate) fn rate_limited(wait_nanos: u64) -> Error {
        Error::RateLimited {
            retry_after: wait_nanos.div_ceil(1_000_000_000),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Path(_)
            | Error::BadRequest(_)
            | Error::InvalidInput(_)
            | Error::ConflictingCredentials
            | Error::LoginState => StatusCode::BAD_REQUEST,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::MissingToken
            | Error::InvalidToken(_)
            | Error::InvalidCredentials
            | Error::ProviderLogin(_)
            | Error::MissingClientCertificate => StatusCode::UNAUTHORIZED,
            Error::InsufficientScope
            | Error::RegistrationClosed
            | Error::UnknownClientCertificate
            | Error::CsrfFailed => StatusCode::FORBIDDEN,
            Error::UsernameTaken => StatusCode::CONFLICT,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::StoreUnavailable(_) | Error::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Error::UpstreamUnreachable { .. }
            | Error::UpstreamFailed { .. }
            | Error::UpstreamInvalid { .. }
            | Error::ProviderUnavailable => StatusCode::BAD_GATEWAY,
            Error::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Internal(_) | Error::TaskFailed(_) | Error::Signing(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            Error::Path(_)
            | Error::BadRequest(_)
            | Error::InvalidInput(_)
            | Error::NotFound
            | Error::MethodNotAllowed(_)
            | Error::PayloadTooLarge
            | Error::RequestTimeout
            | Error::UsernameTaken
            | Error::RegistrationClosed => Fault::Client,
            Error::MissingToken
            | Error::ConflictingCredentials
            | Error::InvalidToken(_)
            | Error::InsufficientScope
            | Error::InvalidCredentials
            | Error::MissingClientCertificate
            | Error::UnknownClientCertificate
            | Error::CsrfFailed
            | Error::LoginState
            | Error::ProviderLogin(_)
            | Error::RateLimited { .. } => Fault::Auth,
            Error::UpstreamUnreachable { .. }
            | Error::UpstreamFailed { .. }
            | Error::UpstreamInvalid { .. }
            | Error::UpstreamTimeout { .. }
            | Error::ProviderUnavailable => Fault::Upstream,
            Error::StoreUnavailable(_)
            | Error::Busy
            | Error::Internal(_)
            | Error::TaskFailed(_)
            | Error::Signing(_) => Fault::Internal,
        }
    }

    /// The `reason` label of `authgate_auth_failures_total`, for refusals of credentials.
    pub fn auth_reason(&self) -> Option<&'static str> {
        match self {
            Error::MissingToken => Some("missing"),
            Error::ConflictingCredentials => Some("conflicting_credentials"),
            Error::InvalidToken(e) => Some(e.reason()),
            Error::InsufficientScope => Some("insufficient_scope"),
            Error::InvalidCredentials => Some("invalid_credentials"),
            Error::MissingClientCertificate => Some("missing_client_certificate"),
            Error::UnknownClientCertificate => Some("unknown_client_certificate"),
            Error::CsrfFailed => Some("csrf_failed"),
            Error::LoginState => Some("login_state"),
            Error::ProviderLogin(_) => Some("provider_login"),
            Error::RateLimited { .. } => Some("rate_limited"),
            _ => None,
        }
    }

    /// The upstream and the `kind` label of `authgate_upstream_errors_total`.
    pub fn upstream_failure(&self) -> Option<(&str, &'static str)> {
        match self {
            Error::UpstreamUnreachable { upstream, .. } => Some((upstream, "refused")),
            Error::UpstreamFailed { upstream, .. } => Some((upstream, "reset")),
            Error::UpstreamTimeout { upstream } => Some((upstream, "timeout")),
            Error::UpstreamInvalid { upstream, .. } => Some((upstream, "invalid")),
            _ => None,
        }
    }

    /// The machine-readable code of the JSON body (RFC 6750 codes for auth failures).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Path(_) => "invalid_path",
            Error::BadRequest(_) | Error::InvalidInput(_) | Error::ConflictingCredentials => {
                "invalid_request"
            }
            Error::NotFound => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::PayloadTooLarge => "payload_too_large",
            Error::RequestTimeout => "request_timeout",
            Error::InvalidCredentials => "invalid_credentials",
            Error::UsernameTaken => "username_taken",
            Error::RegistrationClosed => "registration_closed",
            Error::RateLimited { .. } => "rate_limited",
            Error::StoreUnavailable(_) => "store_unavailable",
            Error::Busy => "busy",
            Error::MissingToken => "missing_token",
            Error::InvalidToken(_) => "invalid_token",
            Error::InsufficientScope => "insufficient_scope",
            Error::MissingClientCertificate => "client_certificate_required",
            Error::UnknownClientCertificate => "unknown_client_certificate",
            Error::CsrfFailed => "csrf_failed",
            Error::LoginState => "invalid_state",
            Error::ProviderLogin(_) => "login_failed",
            Error::ProviderUnavailable => "provider_unavailable",
            Error::UpstreamUnreachable { .. }
            | Error::UpstreamFailed { .. }
            | Error::UpstreamInvalid { .. } => "bad_gateway",
            Error::UpstreamTimeout { .. } => "gateway_timeout",
            Error::Internal(_) | Error::TaskFailed(_) | Error::Signing(_) => "internal_error",
        }
    }

    /// A fixed human-readable text; safe to show since it never contains client input.
    pub fn description(&self) -> &'static str {
        match self {
            Error::Path(e) => e.description(),
            Error::BadRequest(what)
            | Error::InvalidInput(what)
            | Error::Internal(what)
            | Error::ProviderLogin(what) => what,
            Error::TaskFailed(_) => "a task of the gateway failed",
            Error::Signing(_) => "token signing failed",
            Error::MethodNotAllowed(_) => "this endpoint does not take this method",
            Error::InvalidCredentials => "the username or password is wrong",
            Error::UsernameTaken => "this username is taken",
            Error::RegistrationClosed => "registration is closed",
            Error::RateLimited { .. } => "too many attempts; retry later",
            Error::StoreUnavailable(_) => {
                "the gateway cannot save state right now; nothing was changed"
            }
            Error::Busy => "the gateway is busy; retry later",
            Error::NotFound => "no route matches this request",
            Error::PayloadTooLarge => "the request body is larger than this route allows",
            Error::RequestTimeout => "the request body stalled; send it without long pauses",
            Error::MissingToken => "this route requires a bearer token",
            Error::ConflictingCredentials => "the request carries more than one credential",
            Error::InvalidToken(e) => e.description(),
            Error::InsufficientScope => "the token lacks a role this route requires",
            Error::MissingClientCertificate => "this route requires a client certificate",
            Error::UnknownClientCertificate => {
                "no client identity of this gateway names the client certificate"
            }
            Error::CsrfFailed => {
                "a request with session cookies must come from this site and send X-CSRF-TOKEN"
            }
            Error::LoginState => {
                "this login was not started in this browser, or was finished already; start again"
            }
            Error::ProviderUnavailable => "the identity provider cannot be reached; retry later",
            Error::UpstreamUnreachable { .. } => "the upstream could not be reached",
            Error::UpstreamFailed { .. } => "the upstream closed the connection without answering",
            Error::UpstreamTimeout { .. } => "the upstream did not answer in time",
            Error::UpstreamInvalid { .. } => "the upstream's answer cannot be forwarded",
        }
    }

    /// The `WWW-Authenticate` challenge, for the statuses that carry one (RFC 6750 §3).
    fn challenge(&self) -> Option<String> {
        match self {
            // No credentials: the bare challenge, no error code. A missing certificate too:
            // no scheme names TLS client authentication, and a 401 must carry a challenge.
            Error::MissingToken | Error::InvalidCredentials | Error::MissingClientCertificate => {
                Some(r#"Bearer realm="authgate""#.to_owned())
            }
            Error::InvalidToken(_) | Error::InsufficientScope | Error::ConflictingCredentials => {
                Some(format!(
                    r#"Bearer realm="authgate", error="{}", error_description="{}""#,
                    self.code(),
                    self.description()
                ))
            }
            _ => None,
        }
    }

    /// Seconds a client should wait before retrying, where that applies.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Error::RateLimited { retry_after } => Some((*retry_after).max(1)),
            _ => None,
        }
    }

    pub fn to_response(&self) -> Response<Body> {
        self.to_response_as(ErrorBody::Rfc6750)
    }

    /// The response, with its body in the shape `body` names; status and headers alike.
    pub fn to_response_as(&self, body: ErrorBody) -> Response<Body> {
        let json = match body {
            ErrorBody::Rfc6750 => {
                serde_json::json!({ "error": self.code(), "error_description": self.description() })
            }
            ErrorBody::FlaskJwtExtended => serde_json::json!({ "msg": self.description() }),
        };
        let mut response = json_response(self.status(), json);
        let headers = response.headers_mut();
        if let Some(challenge) = self.challenge() {
            // Fixed ASCII strings only, so this cannot fail; skip the header rather than panic.
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                headers.insert(WWW_AUTHENTICATE, value);
            }
        }
        if let Some(secs) = self.retry_after() {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Error::MethodNotAllowed(allow) = self {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

/// An error with its causes, for log lines.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A JSON response; the one constructor for every body the gateway writes itself.
pub(crate) fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
    bytes.push(b'\n');
    let mut response = Response::new(body::full(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
