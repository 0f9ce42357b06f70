//! `[browser]`: sessions for people in a browser — the login page, cookies, CSRF, safe
//! redirects. Absent, the gateway is API-only.

use std::time::Duration;

use toml::Spanned;

use super::Ctx;
use super::raw::RawBrowser;

/// `[browser]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Browser {
    /// The cookies' `Secure` attribute; false only for plain-HTTP development.
    pub cookie_secure: bool,
    /// The cookies' `Domain`; `None`: host-only cookies.
    pub cookie_domain: Option<String>,
    pub same_site: SameSite,
    /// Hosts a `?rd=` may name over https besides the request's own: `"a.example.com"`
    /// exactly, or `".example.com"` for every name below it.
    pub allowed_redirect_hosts: Vec<String>,
    /// Shown on the login page.
    pub title: String,
    /// `Strict-Transport-Security` on responses over TLS; zero: none.
    pub hsts: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
        }
    }
}

/// Visible ASCII and spaces, at most this long: the title goes into HTML (escaped) and
/// should fit a heading.
const MAX_TITLE: usize = 80;

impl Ctx<'_> {
    pub(super) fn browser(
        &mut self,
        table: Option<&Spanned<RawBrowser>>,
        has_store: bool,
    ) -> Option<Browser> {
        let table = table?;
        if !has_store {
            self.error(
                table,
                "browser",
                "[browser] needs [store]: the login page logs users in from it",
            );
        }
        let raw = table.get_ref();
        let same_site = match raw.same_site.as_ref() {
            None => SameSite::Lax,
            Some(value) => match value.get_ref().as_str() {
                "Lax" | "lax" => SameSite::Lax,
                "Strict" | "strict" => SameSite::Strict,
                other => {
                    self.error(
                        value,
                        "browser.same_site",
                        format!(
                            "\"{other}\" is neither \"Lax\" nor \"Strict\" (None would send the session cookies cross-site)"
                        ),
                    );
                    SameSite::Lax
                }
            },
        };
        let mut allowed_redirect_hosts = Vec::new();
        for host in &raw.allowed_redirect_hosts {
            let text = host.get_ref().to_ascii_lowercase();
            let bare = text.strip_prefix('.').unwrap_or(&text);
            let valid = !bare.is_empty()
                && bare
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                && !bare.starts_with('.')
                && !bare.ends_with('.');
            if valid {
                allowed_redirect_hosts.push(text);
            } else {
                self.error(
                    host,
                    "browser.allowed_redirect_hosts",
                    "a host name (\"app.example.com\") or a domain (\".example.com\"), without scheme, port or path",
                );
            }
        }
        let title = match &raw.title {
            None => "authgate".to_owned(),
            Some(title) => {
                let text = title.get_ref();
                if text.is_empty()
                    || text.len() > MAX_TITLE
                    || !text.bytes().all(|b| (b' '..=b'~').contains(&b))
                {
                    self.error(
                        title,
                        "browser.title",
                        format!("1 to {MAX_TITLE} printable ASCII characters"),
                    );
                }
                text.clone()
            }
        };
        let cookie_domain = raw.cookie_domain.as_ref().map(|domain| {
            let text = domain.get_ref();
            if text.is_empty()
                || !text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                self.error(
                    domain,
                    "browser.cookie_domain",
                    "a domain such as \".example.com\"",
                );
            }
            text.to_ascii_lowercase()
        });
        Some(Browser {
            cookie_secure: raw.cookie_secure.unwrap_or(true),
            cookie_domain,
            same_site,
            allowed_redirect_hosts,
            title,
            hsts: self.duration(&raw.hsts, "browser.hsts", Duration::from_secs(180 * 86_400)),
        })
    }
}
