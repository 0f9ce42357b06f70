//! `[browser]`: sessions for people in a browser — the login page, cookies, CSRF, safe
//! redirects. Absent, the gateway is API-only.

use std::fmt;
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawBrowser, RawProvider};
use super::{Ctx, ExternalIssuer, JwksSource, values};

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
    /// `[[browser.provider]]`: a "Log in with" button each, in file order.
    pub providers: Vec<Provider>,
}

/// `[[browser.provider]]`, validated: an `[[issuer]]` found by discovery, and this
/// gateway's client registration there.
#[derive(Clone, PartialEq, Eq)]
pub struct Provider {
    /// The `[[issuer]]`'s name: the button's label, and what its users are marked with.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Always with `openid`.
    pub scopes: Vec<String>,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// What a provider is asked for when `scopes` is not given: the ID token's identity and
/// the profile claims usernames and roles are usually in.
const DEFAULT_SCOPES: &[&str] = &["openid", "profile", "email"];

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
        issuers: &[ExternalIssuer],
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
            providers: self.providers(&raw.provider, issuers),
        })
    }

    /// Each provider names an `[[issuer]]` with discovery (the authorization and token
    /// endpoints come from its discovery document), once.
    fn providers(&mut self, raw: &[RawProvider], issuers: &[ExternalIssuer]) -> Vec<Provider> {
        let mut providers: Vec<Provider> = Vec::new();
        for (i, entry) in raw.iter().enumerate() {
            let key = format!("browser.provider[{i}]");
            let name = entry.issuer.get_ref();
            match issuers.iter().find(|issuer| &issuer.name == name) {
                None => self.error(
                    &entry.issuer,
                    &format!("{key}.issuer"),
                    format!("\"{name}\" is not the name of an [[issuer]]"),
                ),
                Some(issuer) if !matches!(issuer.jwks, JwksSource::Discovery(_)) => self.error(
                    &entry.issuer,
                    &format!("{key}.issuer"),
                    format!("[[issuer]] \"{name}\" needs discovery = true: its login endpoints come from discovery"),
                ),
                Some(_) if providers.iter().any(|p| &p.issuer == name) => self.error(
                    &entry.issuer,
                    &format!("{key}.issuer"),
                    format!("\"{name}\" is the issuer of another [[browser.provider]] already"),
                ),
                Some(_) => {}
            }
            let client_id = entry.client_id.get_ref();
            if client_id.is_empty() || !crate::jwt::is_forwardable(client_id) {
                self.error(
                    &entry.client_id,
                    &format!("{key}.client_id"),
                    "a client id is visible ASCII, not empty",
                );
            }
            let client_secret =
                match values::read_source(entry.client_secret.get_ref(), &self.base, false) {
                    Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
                    Err(message) => {
                        self.error(
                            &entry.client_secret,
                            &format!("{key}.client_secret"),
                            message,
                        );
                        String::new()
                    }
                };
            let scopes = match &entry.scopes {
                None => DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
                Some(scopes) => {
                    let list = scopes.get_ref();
                    let well_formed = list.iter().all(|scope| {
                        !scope.is_empty()
                            && scope
                                .bytes()
                                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
                    });
                    if !list.iter().any(|s| s == "openid") || !well_formed {
                        self.error(
                            scopes,
                            &format!("{key}.scopes"),
                            "scopes are words without spaces, and \"openid\" is one of them",
                        );
                    }
                    list.clone()
                }
            };
            providers.push(Provider {
                issuer: name.clone(),
                client_id: client_id.clone(),
                client_secret,
                scopes,
            });
        }
        providers
    }
}
