//! The session cookies, named as Flask-JWT-Extended names them: reading them from a
//! request, writing and clearing them on a response, and removing them from what the
//! upstream gets.

use http::header::{self, HeaderMap, HeaderValue};

use crate::config::Browser;

pub(crate) use crate::auth::{ACCESS_COOKIE as ACCESS, cookie as get};
/// The refresh token (HttpOnly).
pub(crate) const REFRESH: &str = "refresh_token_cookie";
/// The access token's `csrf` claim, for scripts to send back as `X-CSRF-TOKEN`.
pub(crate) const CSRF_ACCESS: &str = "csrf_access_token";
/// The refresh token's `csrf` claim.
pub(crate) const CSRF_REFRESH: &str = "csrf_refresh_token";
/// The login form's own double-submit value (login CSRF), short-lived.
pub(crate) const LOGIN_CSRF: &str = "authgate_login_csrf";

/// An OpenID Connect login under way (see `oidc`), short-lived.
pub(crate) const OIDC_FLOW: &str = "authgate_oidc_flow";

/// Every cookie of the gateway: none of them reaches an upstream.
const OURS: [&str; 6] = [
    ACCESS,
    REFRESH,
    CSRF_ACCESS,
    CSRF_REFRESH,
    LOGIN_CSRF,
    OIDC_FLOW,
];

/// Whether the request carries any of the gateway's session cookies.
pub(crate) fn has_session(headers: &HeaderMap) -> bool {
    pairs(headers).any(|(key, _)| key == ACCESS || key == REFRESH)
}

use crate::auth::cookie_pairs as pairs;

/// The `Cookie` header the upstream gets, when the client's names one of the gateway's
/// cookies: `Some(None)` when nothing is left, `Some(Some(kept))` otherwise; `None` when
/// the header can go as it is. One pass, and nothing allocated in the common case.
pub(crate) fn forwarded(headers: &HeaderMap) -> Option<Option<HeaderValue>> {
    let pairs = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
    };
    if !pairs().any(is_ours) {
        return None;
    }
    let kept: Vec<&str> = pairs().filter(|pair| !is_ours(pair)).collect();
    if kept.is_empty() {
        return Some(None);
    }
    Some(HeaderValue::from_str(&kept.join("; ")).ok())
}

/// Whether a `name=value` pair is one of the gateway's cookies.
fn is_ours(pair: &str) -> bool {
    OURS.contains(&pair.split_once('=').map_or(pair, |(k, _)| k).trim())
}

/// Writes `Set-Cookie` headers for the browser's settings.
#[derive(Debug)]
pub(crate) struct CookieJar {
    /// `; Path=/; SameSite=..; Secure; Domain=..`: what every cookie of ours carries.
    common: String,
}

impl CookieJar {
    pub(crate) fn new(settings: &Browser) -> CookieJar {
        let mut common = format!("; Path=/; SameSite={}", settings.same_site.as_str());
        if settings.cookie_secure {
            common.push_str("; Secure");
        }
        if let Some(domain) = &settings.cookie_domain {
            common.push_str("; Domain=");
            common.push_str(domain);
        }
        CookieJar { common }
    }

    /// A cookie kept for `max_age` seconds; `http_only` hides it from scripts.
    pub(crate) fn set(
        &self,
        name: &str,
        value: &str,
        max_age: i64,
        http_only: bool,
    ) -> HeaderValue {
        let http_only = if http_only { "; HttpOnly" } else { "" };
        let text = format!(
            "{name}={value}; Max-Age={max_age}{}{http_only}",
            self.common
        );
        // Tokens, UUIDs and fixed names only: always a valid header value.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Expires the cookie now.
    pub(crate) fn clear(&self, name: &str, http_only: bool) -> HeaderValue {
        self.set(name, "", 0, http_only)
    }

    /// The four session cookies of `access`/`refresh` with their `csrf`; they live as long
    /// as the refresh token, so an expired access cookie still comes back to be renewed.
    pub(crate) fn session(
        &self,
        access: &str,
        refresh: &str,
        csrf: &str,
        max_age: i64,
    ) -> [HeaderValue; 4] {
        [
            self.set(ACCESS, access, max_age, true),
            self.set(REFRESH, refresh, max_age, true),
            self.set(CSRF_ACCESS, csrf, max_age, false),
            self.set(CSRF_REFRESH, csrf, max_age, false),
        ]
    }

    /// Expires the four session cookies.
    pub(crate) fn end_session(&self) -> [HeaderValue; 4] {
        [
            self.clear(ACCESS, true),
            self.clear(REFRESH, true),
            self.clear(CSRF_ACCESS, false),
            self.clear(CSRF_REFRESH, false),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SameSite;

    fn with_cookies(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn one_value_per_cookie_or_none() {
        let h = with_cookies(&["a=1; access_token_cookie=tok", "b=2"]);
        assert_eq!(get(&h, ACCESS), Some("tok"));
        assert_eq!(get(&h, "b"), Some("2"));
        assert_eq!(get(&h, "c"), None);
        let twice = with_cookies(&["access_token_cookie=x", "access_token_cookie=y"]);
        assert_eq!(
            get(&twice, ACCESS),
            None,
            "two different values are no value"
        );
        assert!(has_session(&twice));
    }

    #[test]
    fn the_gateways_cookies_never_go_upstream() {
        let h = with_cookies(&[
            "theme=dark; access_token_cookie=t; csrf_access_token=c",
            "refresh_token_cookie=r; lang=fr; authgate_login_csrf=l; csrf_refresh_token=x",
        ]);
        assert_eq!(
            forwarded(&h).flatten().expect("kept"),
            "theme=dark; lang=fr"
        );
        assert_eq!(
            forwarded(&with_cookies(&["access_token_cookie=t"])),
            Some(None)
        );
        assert_eq!(forwarded(&with_cookies(&["theme=dark"])), None);
    }

    #[test]
    fn attributes_follow_the_settings() {
        let jar = CookieJar::new(&Browser {
            cookie_secure: true,
            cookie_domain: Some(".example.com".into()),
            same_site: SameSite::Strict,
            allowed_redirect_hosts: Vec::new(),
            title: "t".into(),
            hsts: std::time::Duration::ZERO,
            providers: Vec::new(),
        });
        assert_eq!(
            jar.set(ACCESS, "tok", 60, true),
            "access_token_cookie=tok; Max-Age=60; Path=/; SameSite=Strict; Secure; Domain=.example.com; HttpOnly"
        );
        assert_eq!(
            jar.clear(CSRF_ACCESS, false),
            "csrf_access_token=; Max-Age=0; Path=/; SameSite=Strict; Secure; Domain=.example.com"
        );
    }
}
