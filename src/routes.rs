//! The compiled route table and the pure route decision.
//!
//! Routes are kept sorted by precedence once, at config load: exact paths (`=/x`) first,
//! then prefixes from the longest to the shortest, file order breaking ties. The decision
//! for a request is then the first route, in that order, whose path and methods match.
//! Prefixes match whole segments: `/api` matches `/api` and `/api/x`, not `/apix`.

mod normalize;

use std::borrow::Cow;
use std::time::Duration;

use http::Method;

use crate::buckets::Rate;
use crate::cors::Cors;
use crate::jwt::Claims;

pub use normalize::{PathError, match_key, normalize};

/// How a route's path is compared with the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// `=/x`: this path only.
    Exact(String),
    /// `/x`: this path and everything below it, on segment boundaries. Stored without a
    /// trailing slash; `/` matches every path.
    Prefix(String),
}

impl PathPattern {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(exact) => path == exact,
            PathPattern::Prefix(prefix) if prefix == "/" => true,
            PathPattern::Prefix(prefix) => {
                path.starts_with(prefix.as_str())
                    && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
            }
        }
    }

    /// Sort key: exact before prefix, then longer prefix first.
    fn precedence(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            PathPattern::Exact(p) => (0, std::cmp::Reverse(p.len())),
            PathPattern::Prefix(p) => (1, std::cmp::Reverse(p.len())),
        }
    }
}

impl std::fmt::Display for PathPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathPattern::Exact(p) => write!(f, "={p}"),
            PathPattern::Prefix(p) => f.write_str(p),
        }
    }
}

/// A route's `host`: one name, or `*.example.com` for every name below `example.com` (one
/// or more labels). Stored in lower case; compared with [`canonical_host`]'s form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// The suffix with its leading dot: `.example.com`.
    Below(String),
}

impl HostPattern {
    /// `example.com` or `*.example.com`: letters, digits, `-` and `.`, no port; `None`
    /// for anything else.
    pub fn parse(text: &str) -> Option<HostPattern> {
        let (below, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return None;
        }
        let name = name.to_ascii_lowercase();
        Some(if below {
            HostPattern::Below(format!(".{name}"))
        } else {
            HostPattern::Exact(name)
        })
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Below(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }

    /// Sort key: a named host before a wildcard.
    fn precedence(&self) -> u8 {
        match self {
            HostPattern::Exact(_) => 0,
            HostPattern::Below(_) => 1,
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Below(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// The host a request names (`Host`, `:authority`, or an absolute target's), as routes
/// compare it: lower case, without its port and without a trailing dot, so `ADMIN.example.com.:443`
/// cannot slip past a route for `admin.example.com` to a route without a host.
pub fn canonical_host(authority: &str) -> Cow<'_, str> {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Required,
    Public,
    /// A valid token adds the identity; no token passes without one; a token that is
    /// there but invalid is still refused (no silent downgrade).
    Optional,
    /// The connection's verified client certificate, named by a `[[client_identity]]`, is
    /// the caller; a token is not looked at.
    ClientCert,
}

/// What kind of credential a caller proved itself with (`require.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// A person: an access token from a login.
    User,
    ApiKey,
    /// A service, by its client certificate (only on `auth = "client_cert"` routes).
    ClientCert,
}

impl CallerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallerKind::User => "user",
            CallerKind::ApiKey => "api_key",
            CallerKind::ClientCert => "client_cert",
        }
    }
}

/// What a route asks of the caller's token beyond being valid (403 when it falls short).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Require {
    /// Every one of these roles.
    pub roles: Vec<String>,
    /// At least one of these roles (none listed: no condition).
    pub any_roles: Vec<String>,
    /// Each claim equal to its value, or containing it (an array item, a word of a
    /// space-separated string such as `scope`).
    pub claims: Vec<(String, String)>,
    /// The token came from a password login, not a refresh.
    pub fresh: bool,
    /// The password was entered at most this long ago (the token's `auth_time`).
    pub max_auth_age: Option<Duration>,
    /// Only callers of this kind (`None`: any).
    pub kind: Option<CallerKind>,
}

impl Require {
    pub fn is_empty(&self) -> bool {
        *self == Require::default()
    }

    /// Whether a caller of this kind with these claims (`None`: no caller) meets every
    /// condition; `now` (seconds since the epoch) is read only for `max_auth_age`.
    pub fn is_met_by(
        &self,
        caller: Option<(&Claims, CallerKind)>,
        now: impl FnOnce() -> i64,
    ) -> bool {
        let Some((claims, kind)) = caller else {
            return self.is_empty();
        };
        self.kind.is_none_or(|wanted| wanted == kind)
            && self.roles.iter().all(|r| claims.roles.contains(r))
            && (self.any_roles.is_empty()
                || self.any_roles.iter().any(|r| claims.roles.contains(r)))
            && self
                .claims
                .iter()
                .all(|(name, value)| claims.claim_holds(name, value))
            && (!self.fresh || claims.fresh == Some(true))
            && self.max_auth_age.is_none_or(|max| {
                let max = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
                claims
                    .auth_time
                    .is_some_and(|at| now().saturating_sub(at) <= max)
            })
    }
}

/// One `[[route]]`, validated.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the file, 0-based, as config errors and `explain` name it (`route[2]`).
    pub index: usize,
    /// `None`: any host.
    pub host: Option<HostPattern>,
    pub pattern: PathPattern,
    /// `None`: every method. `GET` implies `HEAD`, as in nginx's `limit_except`.
    pub methods: Option<Vec<Method>>,
    pub auth: Auth,
    /// What the token must carry beyond being valid.
    pub require: Require,
    /// Index into the config's upstream list.
    pub upstream: usize,
    /// Largest request body this route forwards (413 above).
    pub max_body_bytes: u64,
    /// Whether a WebSocket upgrade may open a tunnel here (400 when not).
    pub websocket: bool,
    /// What replaces the matched prefix in the forwarded path (`"/"` for `strip_prefix`);
    /// `None` forwards the path as it is.
    pub rewrite: Option<String>,
    /// The CORS policy: preflights answered by the gateway, headers for allowed origins.
    pub cors: Option<Cors>,
    pub rate_limit: Option<RateLimit>,
}

/// `rate_limit`: requests per period, counted per caller or per client address (429 with
/// `Retry-After` past it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub rate: Rate,
    pub key: LimitKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKey {
    /// The caller's name; a request without one is counted by its address.
    User,
    Ip,
}

impl Route {
    /// Whether a caller of this kind with these claims (`None`: no caller) may pass;
    /// `now` is read only when a requirement depends on the time.
    pub fn permits(
        &self,
        caller: Option<(&Claims, CallerKind)>,
        now: impl FnOnce() -> i64,
    ) -> bool {
        self.require.is_met_by(caller, now)
    }

    /// The path the upstream gets for `path` (normalized, and matched by this route): the
    /// segments the route's pattern matched replaced by its `rewrite`, the rest kept as it
    /// is. `None` when the route forwards the path unchanged.
    pub fn rewritten(&self, path: &str) -> Option<String> {
        let to = self.rewrite.as_deref()?;
        let matched = match &self.pattern {
            PathPattern::Exact(p) | PathPattern::Prefix(p) => p,
        };
        // Segment by segment: `;parameters` (ignored by matching) stay with their segment.
        let mut end = 0;
        for _ in matched.split('/').filter(|s| !s.is_empty()) {
            end = path[end + 1..]
                .find('/')
                .map_or(path.len(), |at| end + 1 + at);
        }
        let rest = &path[end..];
        Some(match (to, rest) {
            ("/", "") => "/".to_owned(),
            ("/", rest) => rest.to_owned(),
            (to, rest) => format!("{to}{rest}"),
        })
    }

    fn allows(&self, method: &Method) -> bool {
        match &self.methods {
            None => true,
            Some(methods) => methods
                .iter()
                .any(|m| m == method || (*method == Method::HEAD && *m == Method::GET)),
        }
    }
}

/// The routes in precedence order.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Whether any route names a host (else the request's host is not even looked at).
    has_hosts: bool,
}

impl RouteTable {
    pub fn new(mut routes: Vec<Route>) -> Self {
        // A stable sort keeps file order among routes of equal precedence: routes for the
        // request's host first (a named host before a wildcard), then path precedence.
        routes.sort_by_key(|r| {
            (
                r.host.as_ref().map_or(2, HostPattern::precedence),
                r.pattern.precedence(),
            )
        });
        let has_hosts = routes.iter().any(|r| r.host.is_some());
        RouteTable { routes, has_hosts }
    }

    /// The route for a request to `host` (its authority as sent; `None` when it named
    /// none) whose path is already normalized.
    pub fn match_request(
        &self,
        method: &Method,
        host: Option<&str>,
        normalized_path: &str,
    ) -> Option<&Route> {
        let key = match_key(normalized_path);
        let host = if self.has_hosts {
            host.map(canonical_host)
        } else {
            None
        };
        self.routes.iter().find(|r| {
            r.host
                .as_ref()
                .is_none_or(|pattern| host.as_deref().is_some_and(|h| pattern.matches(h)))
                && r.pattern.matches(&key)
                && r.allows(method)
        })
    }

    /// Routes that no request can reach: an earlier route in precedence order has the same
    /// path and takes every method this one takes.
    pub fn unreachable(&self) -> Vec<(&Route, &Route)> {
        let mut found = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            let shadow = self.routes[..i].iter().find(|earlier| {
                earlier.pattern == route.pattern
                    && earlier.host == route.host
                    && match (&earlier.methods, &route.methods) {
                        (None, _) => true,
                        (Some(_), None) => false,
                        (Some(e), Some(r)) => r.iter().all(|m| e.contains(m)),
                    }
            });
            if let Some(shadow) = shadow {
                found.push((route, shadow));
            }
        }
        found
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(index: usize, path: &str, methods: Option<&[&str]>) -> Route {
        let pattern = match path.strip_prefix('=') {
            Some(exact) => PathPattern::Exact(exact.to_owned()),
            None => PathPattern::Prefix(path.to_owned()),
        };
        Route {
            index,
            host: None,
            pattern,
            methods: methods.map(|ms| ms.iter().map(|m| m.parse().expect("method")).collect()),
            auth: Auth::Required,
            require: Require::default(),
            upstream: 0,
            max_body_bytes: 1 << 20,
            websocket: true,
            rewrite: None,
            cors: None,
            rate_limit: None,
        }
    }

    #[test]
    fn rewrites_replace_the_matched_segments_only() {
        let with = |pattern: &str, to: &str| Route {
            rewrite: Some(to.to_owned()),
            ..route(0, pattern, None)
        };
        let strip = with("/files", "/");
        for (path, expected) in [
            ("/files", "/"),
            ("/files/", "/"),
            ("/files/x", "/x"),
            ("/files/x/y/", "/x/y/"),
            ("/files;v=1/x", "/x"),
        ] {
            assert_eq!(strip.rewritten(path).as_deref(), Some(expected), "{path}");
        }
        let to_static = with("/files", "/static");
        for (path, expected) in [
            ("/files", "/static"),
            ("/files/", "/static/"),
            ("/files/a%2Fb", "/static/a%2Fb"),
        ] {
            assert_eq!(
                to_static.rewritten(path).as_deref(),
                Some(expected),
                "{path}"
            );
        }
        assert_eq!(
            with("/a/b", "/c").rewritten("/a/b/d").as_deref(),
            Some("/c/d")
        );
        assert_eq!(
            with("=/old", "/new").rewritten("/old").as_deref(),
            Some("/new")
        );
        assert_eq!(with("/", "/v1").rewritten("/x").as_deref(), Some("/v1/x"));
        assert_eq!(route(0, "/files", None).rewritten("/files/x"), None);
    }

    #[test]
    fn hosts_match_without_case_port_or_trailing_dot() {
        for (authority, canonical) in [
            ("Admin.Example.COM", "admin.example.com"),
            ("admin.example.com.:8443", "admin.example.com"),
            ("[::1]:80", "::1"),
            ("127.0.0.1", "127.0.0.1"),
        ] {
            assert_eq!(canonical_host(authority), canonical, "{authority}");
        }
        let exact = HostPattern::parse("Files.Example.com").expect("valid");
        assert!(exact.matches("files.example.com"));
        assert!(!exact.matches("x.files.example.com"));
        let below = HostPattern::parse("*.example.com").expect("valid");
        assert!(below.matches("a.example.com") && below.matches("a.b.example.com"));
        assert!(!below.matches("example.com") && !below.matches("badexample.com"));
        for bad in [
            "", "*.", "a..b", "a.b:80", "http://a", "*", "a_b.c", "*.*.a",
        ] {
            assert_eq!(HostPattern::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_route_for_the_host_beats_one_without() {
        let with_host = |index, host: &str, path| Route {
            host: HostPattern::parse(host),
            ..route(index, path, None)
        };
        let table = RouteTable::new(vec![
            route(0, "/api/v1", None),
            with_host(1, "*.example.com", "/"),
            with_host(2, "api.example.com", "/"),
        ]);
        let decide = |host, path| {
            table
                .match_request(&Method::GET, host, path)
                .map(|r| r.index)
        };
        assert_eq!(decide(Some("api.example.com"), "/api/v1/x"), Some(2));
        assert_eq!(decide(Some("web.example.com"), "/api/v1/x"), Some(1));
        assert_eq!(decide(Some("other.org"), "/api/v1/x"), Some(0));
        assert_eq!(decide(None, "/api/v1/x"), Some(0));
        assert_eq!(decide(Some("other.org"), "/x"), None);
    }

    fn decide(table: &RouteTable, method: &str, path: &str) -> Option<usize> {
        table
            .match_request(&method.parse().expect("method"), None, path)
            .map(|r| r.index)
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let table = RouteTable::new(vec![route(0, "/public", None), route(1, "/", None)]);
        assert_eq!(decide(&table, "GET", "/public"), Some(0));
        assert_eq!(decide(&table, "GET", "/public/"), Some(0));
        assert_eq!(decide(&table, "GET", "/public/x"), Some(0));
        assert_eq!(decide(&table, "GET", "/publicity"), Some(1));
    }

    #[test]
    fn exact_beats_prefix_and_longer_beats_shorter() {
        let table = RouteTable::new(vec![
            route(0, "/", None),
            route(1, "/api", None),
            route(2, "/api/v1", None),
            route(3, "=/api", None),
        ]);
        assert_eq!(decide(&table, "GET", "/api"), Some(3));
        assert_eq!(decide(&table, "GET", "/api/"), Some(1));
        assert_eq!(decide(&table, "GET", "/api/v1/x"), Some(2));
        assert_eq!(decide(&table, "GET", "/other"), Some(0));
    }

    #[test]
    fn file_order_among_same_path_whose_methods_match() {
        let table = RouteTable::new(vec![
            route(0, "/x", Some(&["POST"])),
            route(1, "/x", Some(&["GET", "POST"])),
            route(2, "/x", None),
        ]);
        assert_eq!(decide(&table, "POST", "/x"), Some(0));
        assert_eq!(decide(&table, "GET", "/x"), Some(1));
        assert_eq!(decide(&table, "HEAD", "/x"), Some(1));
        assert_eq!(decide(&table, "DELETE", "/x"), Some(2));
    }

    #[test]
    fn no_match_is_none() {
        let table = RouteTable::new(vec![route(0, "/a", Some(&["GET"]))]);
        assert_eq!(decide(&table, "GET", "/b"), None);
        assert_eq!(decide(&table, "POST", "/a"), None);
    }

    #[test]
    fn path_parameters_do_not_escape_a_prefix() {
        let table = RouteTable::new(vec![route(0, "/admin", None), route(1, "/", None)]);
        assert_eq!(decide(&table, "GET", "/admin;x=1"), Some(0));
        assert_eq!(decide(&table, "GET", "/admin;x=1/users"), Some(0));
    }

    #[test]
    fn shadowed_routes_are_reported() {
        let table = RouteTable::new(vec![
            route(0, "/x", None),
            route(1, "/x", Some(&["GET"])),
            route(2, "/y", Some(&["GET", "POST"])),
            route(3, "/y", Some(&["POST"])),
            route(4, "/y", None),
        ]);
        let shadowed: Vec<(usize, usize)> = table
            .unreachable()
            .iter()
            .map(|(r, by)| (r.index, by.index))
            .collect();
        assert_eq!(shadowed, vec![(1, 0), (3, 2)]);
    }
}
