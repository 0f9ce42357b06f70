//! Sessions for people in a browser (`[browser]`): the login and logout pages, the
//! session cookies with their CSRF double submit, safe redirects after login, and the
//! renewal of an expired access cookie in passing.
//!
//! It renders and sets; it never verifies on its own: credentials go through the one
//! [`Authenticator`], logins and refreshes through [`Accounts`].
//!
//! | part | its one job |
//! | --- | --- |
//! | `cookies` | the session cookies: read, written, cleared, kept from the upstream |
//! | `redirect` | which `?rd=` targets a login may send the browser back to |
//! | `page` | the login and logout pages, and their Content-Security-Policy |
//! | `renewals` | one refresh per expired session at a time, shared with its burst |
//! | `oidc` | "Log in with ..." an OpenID provider: the code flow, start and callback |

pub(crate) mod cookies;
mod oidc;
mod page;
mod redirect;
mod renewals;

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::accounts::{Accounts, Credentials, Session};
use crate::auth::{Authenticator, Caller, Via, random_uuid};
use crate::body::Body;
use crate::config::{self, Config};
use crate::error::Error;
use crate::jwt::CSRF_CLAIM;

use cookies::CookieJar;
use oidc::Flows;
use page::Pages;
use renewals::Renewals;

/// The header a script sends its session's `csrf` in (Flask-JWT-Extended's name).
const X_CSRF_TOKEN: &str = "x-csrf-token";
/// How long the login form's own CSRF cookie lives.
const LOGIN_FORM_SECONDS: i64 = 600;
/// The generic message of a failed login: nothing about which part was wrong.
const LOGIN_FAILED: &str = "Wrong username or password.";

/// The browser side of one config.
#[derive(Debug)]
pub(crate) struct BrowserSessions {
    settings: config::Browser,
    jar: CookieJar,
    pages: Pages,
    login_path: String,
    logout_path: String,
    renewals: Renewals,
    /// `[[browser.provider]]`: logins through an OpenID provider.
    flows: Flows,
}

/// The login form's fields.
#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    rd: String,
    #[serde(default)]
    csrf_token: String,
}

/// The logout form's field.
#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf_token: String,
}

/// Which of the browser's own pages a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Page {
    Login,
    Logout,
    /// `GET /auth/oidc/start`: off to a provider's login.
    ProviderStart,
    /// `GET /auth/oidc/callback`: back from it.
    ProviderCallback,
}

impl Page {
    /// The account endpoint it stands beside, for metrics and the access log.
    pub(crate) fn endpoint(self) -> crate::accounts::Endpoint {
        match self {
            Page::Login | Page::ProviderStart | Page::ProviderCallback => {
                crate::accounts::Endpoint::Login
            }
            Page::Logout => crate::accounts::Endpoint::Logout,
        }
    }
}

impl BrowserSessions {
    pub(crate) fn new(config: &Config) -> Option<BrowserSessions> {
        let settings = config.browser.clone()?;
        let flows = Flows::new(&settings.providers);
        Some(BrowserSessions {
            jar: CookieJar::new(&settings),
            pages: Pages::new(
                &settings.title,
                &settings.allowed_redirect_hosts,
                flows.names(),
                oidc::START_PATH,
            ),
            login_path: config.accounts.paths.login.clone(),
            logout_path: config.accounts.paths.logout.clone(),
            renewals: Renewals::new(),
            flows,
            settings,
        })
    }

    /// The page a request is for: `GET` of the login or logout path, or a form `POST` to
    /// them (a JSON login or a Bearer logout stays with the account endpoints).
    pub(crate) fn page(&self, req: &Request<Incoming>, path: &str) -> Option<Page> {
        let get = matches!(*req.method(), Method::GET | Method::HEAD);
        if !self.settings.providers.is_empty() && get {
            match path {
                oidc::START_PATH => return Some(Page::ProviderStart),
                oidc::CALLBACK_PATH => return Some(Page::ProviderCallback),
                _ => {}
            }
        }
        let page = if path == self.login_path {
            Page::Login
        } else if path == self.logout_path {
            Page::Logout
        } else {
            return None;
        };
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let by_cookie = page == Page::Logout && cookies::has_session(req.headers());
        match *req.method() {
            _ if get => Some(page),
            Method::POST if is_form || by_cookie => Some(page),
            _ => None,
        }
    }

    /// `https`: the browser reached this gateway over https (here, or at a trusted proxy
    /// in front), which a provider's redirect URI must say.
    pub(crate) async fn handle(
        &self,
        page: Page,
        req: Request<Incoming>,
        accounts: &Accounts,
        auth: &Authenticator,
        ip: IpAddr,
        https: bool,
    ) -> Result<Response<Body>, Error> {
        let get = matches!(*req.method(), Method::GET | Method::HEAD);
        let mut response = match (page, get) {
            (Page::Login, true) => {
                let rd = query_param(req.uri().query(), "rd").unwrap_or_default();
                self.login_page(&rd, None, StatusCode::OK)
            }
            (Page::Login, false) => self.login(req, accounts, ip).await?,
            (Page::Logout, true) => self.logout_page(req.headers()),
            (Page::Logout, false) => self.logout(req, accounts, auth, ip).await?,
            (Page::ProviderStart, _) => self.provider_start(&req, accounts, auth, https)?,
            (Page::ProviderCallback, _) => self.provider_callback(&req, accounts, auth, ip).await,
        };
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
        headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
        Ok(response)
    }

    /// The login page, with a fresh login-CSRF value in a cookie and in the form.
    fn login_page(&self, rd: &str, error: Option<&str>, status: StatusCode) -> Response<Body> {
        let csrf = random_uuid();
        let html = self.pages.login(&self.login_path, rd, &csrf, error);
        let mut response = self.html(status, html);
        response.headers_mut().append(
            header::SET_COOKIE,
            self.jar
                .set(cookies::LOGIN_CSRF, &csrf, LOGIN_FORM_SECONDS, true),
        );
        response
    }

    fn logout_page(&self, headers: &HeaderMap) -> Response<Body> {
        let csrf = cookies::get(headers, cookies::CSRF_ACCESS).unwrap_or_default();
        self.html(StatusCode::OK, self.pages.logout(&self.logout_path, csrf))
    }

    fn html(&self, status: StatusCode, html: String) -> Response<Body> {
        let mut response = Response::new(crate::body::full(html));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        if let Ok(csp) = HeaderValue::from_str(self.pages.csp()) {
            headers.insert(header::CONTENT_SECURITY_POLICY, csp);
        }
        response
    }

    /// The form login: the login-CSRF pair must match and the origin be this site's; a
    /// wrong password shows the page again with one generic message (401).
    async fn login(
        &self,
        req: Request<Incoming>,
        accounts: &Accounts,
        ip: IpAddr,
    ) -> Result<Response<Body>, Error> {
        let expected = cookies::get(req.headers(), cookies::LOGIN_CSRF).map(str::to_owned);
        let same_origin = self.same_origin(&req);
        let form: LoginForm = crate::accounts::read_form(req).await?;
        if !same_origin || expected.is_none_or(|e| e != form.csrf_token) {
            return Err(Error::CsrfFailed);
        }
        let creds = Credentials {
            username: form.username,
            password: form.password,
        };
        let session = match accounts.sign_in(creds, ip, true).await {
            Ok(session) => session,
            Err(Error::InvalidCredentials) => {
                return Ok(self.login_page(&form.rd, Some(LOGIN_FAILED), StatusCode::UNAUTHORIZED));
            }
            Err(other) => return Err(other),
        };
        let target = redirect::target(&form.rd, &self.settings.allowed_redirect_hosts);
        let mut response = see_other(target);
        self.set_session(response.headers_mut(), &session, accounts.refresh_ttl());
        response.headers_mut().append(
            header::SET_COOKIE,
            self.jar.clear(cookies::LOGIN_CSRF, true),
        );
        Ok(response)
    }

    /// Off to the provider's login, with the flow's cookie.
    fn provider_start(
        &self,
        req: &Request<Incoming>,
        accounts: &Accounts,
        auth: &Authenticator,
        https: bool,
    ) -> Result<Response<Body>, Error> {
        let query = req.uri().query();
        let provider = query_param(query, "provider").unwrap_or_default();
        let rd = query_param(query, "rd").unwrap_or_default();
        let host = crate::head::host(req).ok_or(Error::BadRequest(
            "a login needs the Host this gateway is reached by",
        ))?;
        let origin = format!("{}://{host}", if https { "https" } else { "http" });
        let begun = self.flows.start(
            &provider,
            &rd,
            &origin,
            &self.settings.allowed_redirect_hosts,
            accounts,
            auth,
        )?;
        let mut response = Response::new(crate::body::empty());
        *response.status_mut() = StatusCode::FOUND;
        let location = HeaderValue::from_str(&begun.location)
            .map_err(|_| Error::Internal("the provider's login URL is not a header value"))?;
        response.headers_mut().insert(header::LOCATION, location);
        response.headers_mut().append(
            header::SET_COOKIE,
            self.jar
                .set(cookies::OIDC_FLOW, &begun.cookie, oidc::FLOW_SECONDS, true),
        );
        Ok(response)
    }

    /// Back from the provider: logged in and sent on to where the login began, or the
    /// login page again with why not (the flow's cookie is spent either way).
    async fn provider_callback(
        &self,
        req: &Request<Incoming>,
        accounts: &Accounts,
        auth: &Authenticator,
        ip: IpAddr,
    ) -> Response<Body> {
        let flow = cookies::get(req.headers(), cookies::OIDC_FLOW);
        let finished = self
            .flows
            .finish(req.uri().query(), flow, accounts, auth, ip)
            .await;
        let mut response = match finished {
            Ok((session, rd)) => {
                let mut response = see_other(&rd);
                self.set_session(response.headers_mut(), &session, accounts.refresh_ttl());
                response
            }
            Err(refused) => {
                tracing::info!(target: "authgate::audit", event = "provider_login_failed", reason = refused.code(), ip = %ip);
                let message = format!("{} ({})", refused.description(), refused.code());
                self.login_page("", Some(&message), refused.status())
            }
        };
        response
            .headers_mut()
            .append(header::SET_COOKIE, self.jar.clear(cookies::OIDC_FLOW, true));
        response
    }

    /// The form logout: the session's own `csrf` in the form (or `X-CSRF-TOKEN`), from
    /// this site; both tokens revoked, the cookies cleared, back to the login page.
    async fn logout(
        &self,
        req: Request<Incoming>,
        accounts: &Accounts,
        auth: &Authenticator,
        ip: IpAddr,
    ) -> Result<Response<Body>, Error> {
        let headers = req.headers();
        let tokens: Vec<String> = [cookies::ACCESS, cookies::REFRESH]
            .into_iter()
            .filter_map(|name| cookies::get(headers, name).map(str::to_owned))
            .collect();
        let expected = cookies::get(headers, cookies::CSRF_ACCESS).map(str::to_owned);
        let header_csrf = headers
            .get(X_CSRF_TOKEN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let same_origin = self.same_origin(&req);
        let form: LogoutForm = crate::accounts::read_form(req).await.unwrap_or(LogoutForm {
            csrf_token: String::new(),
        });
        let sent = header_csrf.unwrap_or(form.csrf_token);
        if !same_origin || expected.is_none_or(|e| e != sent) {
            return Err(Error::CsrfFailed);
        }
        // Tokens that no longer verify (expired) have nothing left to revoke.
        let live: Vec<String> = tokens
            .into_iter()
            .filter(|t| auth.verifier().verify(t, crate::auth::now_secs()).is_ok())
            .collect();
        if !live.is_empty() {
            accounts.sign_out(&live, ip, auth).await?;
        }
        let mut response = see_other(&self.login_path);
        for cookie in self.jar.end_session() {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        Ok(response)
    }

    /// Adds the session's four cookies to a response.
    pub(crate) fn set_session(&self, headers: &mut HeaderMap, session: &Session, max_age: i64) {
        let csrf = session.csrf.as_deref().unwrap_or_default();
        for cookie in self
            .jar
            .session(&session.access, &session.refresh, csrf, max_age)
        {
            headers.append(header::SET_COOKIE, cookie);
        }
    }

    /// A request authenticated by cookie: one that changes state must send the session's
    /// `csrf` as `X-CSRF-TOKEN` and come from this site (double submit, as
    /// Flask-JWT-Extended, and an Origin check besides); a WebSocket upgrade must come from
    /// this site or an allowed host (a browser always sends `Origin` on one).
    pub(crate) fn check_csrf<B>(&self, req: &Request<B>, caller: &Caller) -> Result<(), Error> {
        if caller.via != Via::Cookie {
            return Ok(());
        }
        if req.headers().contains_key(header::UPGRADE) {
            return match self.origin_allowed(req, false) {
                true => Ok(()),
                false => Err(Error::CsrfFailed),
            };
        }
        if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        let claim = caller.claims.extra.get(CSRF_CLAIM).and_then(|v| v.as_str());
        let sent = req
            .headers()
            .get(X_CSRF_TOKEN)
            .and_then(|v| v.to_str().ok());
        match (claim, sent) {
            (Some(claim), Some(sent)) if claim == sent && self.same_origin(req) => Ok(()),
            _ => Err(Error::CsrfFailed),
        }
    }

    /// `Origin` absent (not a cross-site browser request) or this very site.
    fn same_origin<B>(&self, req: &Request<B>) -> bool {
        self.origin_allowed(req, true)
    }

    /// Whether the request's `Origin` is this site (scheme and host as the request came),
    /// or an allowed host over https; with `absent_ok`, no `Origin` passes too.
    fn origin_allowed<B>(&self, req: &Request<B>, absent_ok: bool) -> bool {
        let Some(origin) = req.headers().get(header::ORIGIN) else {
            return absent_ok;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let own_host = crate::head::host(req);
        let (scheme, rest) = origin.split_once("://").unwrap_or(("", ""));
        if own_host.is_some_and(|host| rest.eq_ignore_ascii_case(host)) {
            return true;
        }
        scheme == "https"
            && redirect::target(origin, &self.settings.allowed_redirect_hosts) == origin
    }

    /// The renewed caller and its cookies for a request whose access cookie is expired or
    /// gone but whose refresh cookie is good. Parallel requests with one refresh cookie
    /// share one renewal (see `renewals`).
    pub(crate) async fn renew(
        &self,
        headers: &HeaderMap,
        accounts: &Accounts,
        auth: &Authenticator,
        ip: IpAddr,
    ) -> Option<(Arc<Caller>, HeaderMap)> {
        let refresh = cookies::get(headers, cookies::REFRESH)?;
        let session = self
            .renewals
            .renew(refresh, || async {
                accounts.renew(refresh, ip, auth).await.ok()
            })
            .await?;
        let caller = auth.session_caller(&session.access).ok()?;
        let mut set = HeaderMap::new();
        self.set_session(&mut set, &session, accounts.refresh_ttl());
        Some((caller, set))
    }

    /// Whether a refused request should be sent to the login page: a browser navigating
    /// (`GET` of an HTML page), not a script.
    pub(crate) fn is_navigation<B>(req: &Request<B>) -> bool {
        matches!(*req.method(), Method::GET | Method::HEAD)
            && req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|accept| accept.contains("text/html"))
    }

    /// 302 to the login page, to come back to `path_and_query` after.
    pub(crate) fn to_login(&self, path_and_query: &str) -> Response<Body> {
        let rd: String = form_urlencoded::byte_serialize(path_and_query.as_bytes()).collect();
        let mut response = Response::new(crate::body::empty());
        *response.status_mut() = StatusCode::FOUND;
        if let Ok(location) = HeaderValue::from_str(&format!("{}?rd={rd}", self.login_path)) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// `Strict-Transport-Security`, for responses over TLS.
    pub(crate) fn hsts(&self) -> Option<HeaderValue> {
        let secs = self.settings.hsts.as_secs();
        (secs > 0).then(|| {
            HeaderValue::from_str(&format!("max-age={secs}"))
                .unwrap_or_else(|_| HeaderValue::from_static("max-age=0"))
        })
    }
}

/// 303 See Other to `location`.
fn see_other(location: &str) -> Response<Body> {
    let mut response = Response::new(crate::body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The first value of `name` in a query string, decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query?)
        .ok()?
        .into_iter()
        .find_map(|(k, v)| (k == name).then_some(v))
}
