//! One fetch of an issuer's keys: the discovery document when configured, then the JWK
//! Set, over the issuer's own TLS trust, with its bearer token. No retries here: the
//! caller decides when to try again.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::config::{Bearer, ExternalIssuer, JwksSource};
use crate::jwt::Key;

/// A discovery document or a JWK Set is a few KiB; a megabyte is a broken or hostile
/// endpoint.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Why a fetch failed. The URL is the endpoint's, never one with a secret in it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JwksError {
    #[error("cannot reach {url}")]
    Unreachable {
        url: String,
        #[source]
        source: Box<hyper_util::client::legacy::Error>,
    },
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("cannot read the answer of {url}")]
    Body {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{url} is not a JSON document of the expected shape")]
    NotJson {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the discovery document names issuer {found:?}, not the configured one")]
    WrongIssuer { found: String },
    #[error("the discovered endpoint {0:?} is not an https URL")]
    InsecureUri(String),
    #[error("cannot read the bearer token file {path}")]
    Bearer {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// The keys of one fetch, and how long the endpoint says they may be kept.
#[derive(Debug)]
pub(super) struct Fetched {
    pub(super) keys: Vec<Key>,
    pub(super) skipped: usize,
    pub(super) max_age: Option<Duration>,
    /// From the discovery document, when there is one that names both.
    pub(super) login: Option<LoginEndpoints>,
}

/// Where a browser is sent to log in, and where its code is redeemed (OpenID Connect
/// Discovery §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoginEndpoints {
    pub(crate) authorization: Uri,
    pub(crate) token: Uri,
}

/// The HTTP client of one issuer: its TLS trust, HTTP/1.1 and HTTP/2 by ALPN.
#[derive(Debug)]
pub(super) struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Fetcher {
    pub(super) fn new(issuer: &ExternalIssuer) -> Fetcher {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(issuer.timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(rustls::ClientConfig::clone(&issuer.tls))
            // http only reaches here for a loopback URL (config refuses any other).
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Fetcher {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Discovery (if configured) and the JWK Set, within the issuer's timeout.
    pub(super) async fn fetch(&self, issuer: &ExternalIssuer) -> Result<Fetched, JwksError> {
        tokio::time::timeout(issuer.timeout, self.fetch_unbounded(issuer))
            .await
            .map_err(|_| JwksError::Timeout(issuer.timeout))?
    }

    async fn fetch_unbounded(&self, issuer: &ExternalIssuer) -> Result<Fetched, JwksError> {
        let (jwks_uri, bearer, login) = match &issuer.jwks {
            JwksSource::Uri(uri) => (uri.clone(), true, None),
            JwksSource::Discovery(url) => {
                let (body, _) = self.get(url, bearer_token(issuer)?.as_deref()).await?;
                let discovered = discover(issuer, url, &body)?;
                // The bearer goes where the configured URL pointed, never to another host a
                // document named.
                let same_host = discovered.jwks_uri.authority() == url.authority();
                (discovered.jwks_uri, same_host, discovered.login)
            }
        };
        let token = if bearer { bearer_token(issuer)? } else { None };
        let (body, max_age) = self.get(&jwks_uri, token.as_deref()).await?;
        let (keys, skipped) =
            super::jwks::keys(&body, &issuer.algorithms).map_err(|source| JwksError::NotJson {
                url: jwks_uri.to_string(),
                source,
            })?;
        Ok(Fetched {
            keys,
            skipped,
            max_age,
            login,
        })
    }

    /// A form POST with HTTP Basic client authentication (a token request, RFC 6749
    /// §4.1.3), within `timeout`: the status and the (bounded) body, whatever the status.
    pub(super) async fn post_form(
        &self,
        url: &Uri,
        basic: &str,
        form: String,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), JwksError> {
        let request = Request::post(url.clone())
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .body(Full::new(Bytes::from(form)));
        let send = self.send(url, request);
        tokio::time::timeout(timeout, send)
            .await
            .map_err(|_| JwksError::Timeout(timeout))?
            .map(|(status, _, body)| (status, body))
    }

    /// A GET answered 200, its body (bounded) and its `Cache-Control: max-age`.
    async fn get(
        &self,
        url: &Uri,
        bearer: Option<&str>,
    ) -> Result<(Bytes, Option<Duration>), JwksError> {
        let mut request = Request::get(url.clone()).header(header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let (status, max_age, body) = self.send(url, request.body(Full::default())).await?;
        if status != StatusCode::OK {
            return Err(JwksError::Status {
                url: url.to_string(),
                status,
            });
        }
        Ok((body, max_age))
    }

    /// One request: its status, `Cache-Control: max-age` and body (bounded).
    async fn send(
        &self,
        url: &Uri,
        request: http::Result<Request<Full<Bytes>>>,
    ) -> Result<(StatusCode, Option<Duration>, Bytes), JwksError> {
        let request = request.map_err(|e| JwksError::Body {
            url: url.to_string(),
            source: e.into(),
        })?;
        let response =
            self.client
                .request(request)
                .await
                .map_err(|source| JwksError::Unreachable {
                    url: url.to_string(),
                    source: Box::new(source),
                })?;
        let status = response.status();
        let max_age = response
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|source| JwksError::Body {
                url: url.to_string(),
                source,
            })?
            .to_bytes();
        Ok((status, max_age, body))
    }
}

/// The bearer token for this fetch: a file is read again each time (Kubernetes rotates
/// projected tokens on disk).
fn bearer_token(issuer: &ExternalIssuer) -> Result<Option<String>, JwksError> {
    match &issuer.bearer {
        None => Ok(None),
        Some(Bearer::Fixed(token)) => Ok(Some(token.clone())),
        Some(Bearer::File(path)) => std::fs::read_to_string(path)
            .map(|text| Some(text.trim().to_owned()))
            .map_err(|source| JwksError::Bearer {
                path: path.display().to_string(),
                source,
            }),
    }
}

/// What a discovery document tells.
struct Discovered {
    jwks_uri: Uri,
    login: Option<LoginEndpoints>,
}

/// The endpoints of a discovery document whose `issuer` is the configured one (OpenID
/// Connect Discovery §4.3), each https (or http on the loopback host the document came
/// from).
fn discover(issuer: &ExternalIssuer, url: &Uri, body: &[u8]) -> Result<Discovered, JwksError> {
    #[derive(Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
        authorization_endpoint: Option<String>,
        token_endpoint: Option<String>,
    }
    let document: Discovery =
        serde_json::from_slice(body).map_err(|source| JwksError::NotJson {
            url: url.to_string(),
            source,
        })?;
    if document.issuer != issuer.issuer {
        return Err(JwksError::WrongIssuer {
            found: document.issuer,
        });
    }
    let secure = |text: &str| -> Result<Uri, JwksError> {
        let uri: Uri = text
            .parse()
            .map_err(|_| JwksError::InsecureUri(text.to_owned()))?;
        let plain_ok = url.scheme_str() == Some("http") && uri.host() == url.host();
        match uri.scheme_str() {
            Some("https") if uri.authority().is_some() => Ok(uri),
            Some("http") if plain_ok => Ok(uri),
            _ => Err(JwksError::InsecureUri(text.to_owned())),
        }
    };
    let login = match (&document.authorization_endpoint, &document.token_endpoint) {
        (Some(authorization), Some(token)) => Some(LoginEndpoints {
            authorization: secure(authorization)?,
            token: secure(token)?,
        }),
        _ => None,
    };
    Ok(Discovered {
        jwks_uri: secure(&document.jwks_uri)?,
        login,
    })
}

/// `max-age` of a `Cache-Control` value (`no-store` and `no-cache` count as zero).
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').map(str::trim).find_map(|directive| {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        let seconds = lower.strip_prefix("max-age=")?;
        seconds
            .trim_matches('"')
            .parse()
            .ok()
            .map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=3600"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            max_age("Max-Age=60, must-revalidate"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }
}
