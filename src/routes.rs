//! The compiled route table and the pure route decision.
//!
//! Routes are kept sorted by precedence once, at config load: exact paths (`=/x`) first,
//! then prefixes from the longest to the shortest, file order breaking ties. The decision
//! for a request is then the first route, in that order, whose path and methods match.
//! Prefixes match whole segments: `/api` matches `/api` and `/api/x`, not `/apix`.

mod normalize;

use http::Method;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Required,
    Public,
}

/// One `[[route]]`, validated.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the file, 0-based, as config errors and `explain` name it (`route[2]`).
    pub index: usize,
    pub pattern: PathPattern,
    /// `None`: every method. `GET` implies `HEAD`, as in nginx's `limit_except`.
    pub methods: Option<Vec<Method>>,
    pub auth: Auth,
    /// Every listed role must be in the token's `roles` claim.
    pub required_roles: Vec<String>,
    /// Index into the config's upstream list.
    pub upstream: usize,
    /// Largest request body this route forwards (413 above).
    pub max_body_bytes: u64,
    /// Whether a WebSocket upgrade may open a tunnel here (400 when not).
    pub websocket: bool,
}

impl Route {
    /// Whether a caller with these roles may pass: every role the route requires is among
    /// them (no token, no roles).
    pub fn permits(&self, roles: &[String]) -> bool {
        self.required_roles
            .iter()
            .all(|needed| roles.iter().any(|r| r == needed))
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
}

impl RouteTable {
    pub fn new(mut routes: Vec<Route>) -> Self {
        // A stable sort keeps file order among routes of equal precedence.
        routes.sort_by_key(|r| r.pattern.precedence());
        RouteTable { routes }
    }

    /// The route for a request whose path is already normalized.
    pub fn match_request(&self, method: &Method, normalized_path: &str) -> Option<&Route> {
        let key = match_key(normalized_path);
        self.routes
            .iter()
            .find(|r| r.pattern.matches(&key) && r.allows(method))
    }

    /// Routes that no request can reach: an earlier route in precedence order has the same
    /// path and takes every method this one takes.
    pub fn unreachable(&self) -> Vec<(&Route, &Route)> {
        let mut found = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            let shadow = self.routes[..i].iter().find(|earlier| {
                earlier.pattern == route.pattern
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
            pattern,
            methods: methods.map(|ms| ms.iter().map(|m| m.parse().expect("method")).collect()),
            auth: Auth::Required,
            required_roles: Vec::new(),
            upstream: 0,
            max_body_bytes: 1 << 20,
            websocket: true,
        }
    }

    fn decide(table: &RouteTable, method: &str, path: &str) -> Option<usize> {
        table
            .match_request(&method.parse().expect("method"), path)
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
