//! Property tests of path normalization and of the route decision, on the pure API (no
//! sockets): `authgate::routes::normalize` and `RouteTable::match_request`.
//!
//! The safety argument they check: every spelling of a path normalizes to one canonical
//! string, that string has no spelling left that an upstream could read differently, and
//! the route decision on it is the documented one (exact, then the longest whole-segment
//! prefix, then file order, among the routes whose methods allow the request).

use std::borrow::Cow;

use authgate::routes::{Auth, HostPattern, PathPattern, Require, Route, RouteTable, normalize};
use http::Method;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        // Counterexamples are reported in the failure message; no files are written.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Character classes (RFC 3986), written out here rather than taken from the crate.

const UNRESERVED: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~";
/// Sub-delimiters and `:` `@`, kept raw in a canonical path; `;` is left out (it starts
/// path parameters and is generated apart).
const SUB_DELIMS: &[u8] = b"!$&'()*+,=:@";
const PARAM_CHARS: &[u8] = b"abcxyz019=-._~";

fn is_unreserved(b: u8) -> bool {
    UNRESERVED.contains(&b)
}

/// A byte that may stand raw in a canonical path (besides `/` and `%`).
fn is_plain(b: u8) -> bool {
    is_unreserved(b) || SUB_DELIMS.contains(&b) || b == b';'
}

fn is_upper_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
}

// ---------------------------------------------------------------------------------------
// Canonical paths and their respellings.

/// One character of a canonical segment.
#[derive(Debug, Clone)]
enum Piece {
    /// Stands raw in the canonical form.
    Plain(u8),
    /// Stays percent-encoded in the canonical form (upper-case hex).
    Encoded(u8),
}

/// A canonical segment: a name that is not a dot segment, and optional `;parameters`.
#[derive(Debug, Clone)]
struct Seg {
    name: Vec<Piece>,
    params: Option<Vec<u8>>,
}

/// A byte that a canonical path keeps encoded: not unreserved, not a separator, not `%`
/// (whose encoding followed by hex digits is a double encoding), not `;` (an encoded `;`
/// is refused), not a control byte.
fn kept_encoded(b: u8) -> bool {
    b >= 0x20 && b != 0x7f && !is_unreserved(b) && !b"/\\%;".contains(&b)
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        8 => select(UNRESERVED).prop_map(Piece::Plain),
        1 => select(SUB_DELIMS).prop_map(Piece::Plain),
        1 => any::<u8>().prop_filter("kept encoded", |b| kept_encoded(*b)).prop_map(Piece::Encoded),
    ]
}

fn canonical_pieces(pieces: &[Piece]) -> String {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Plain(b) => out.push(char::from(*b)),
            Piece::Encoded(b) => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn seg() -> impl Strategy<Value = Seg> {
    let name = prop_oneof![
        2 => select(&["a", "b", "ab", "admin", "x", "public"][..])
            .prop_map(|s| s.bytes().map(Piece::Plain).collect::<Vec<_>>()),
        3 => vec(piece(), 1..6),
    ]
    .prop_filter("not a dot segment", |name| {
        let text = canonical_pieces(name);
        text != "." && text != ".."
    });
    let params = proptest::option::weighted(0.15, vec(select(PARAM_CHARS), 0..4));
    (name, params).prop_map(|(name, params)| Seg { name, params })
}

fn canonical_seg(seg: &Seg) -> String {
    let mut out = canonical_pieces(&seg.name);
    if let Some(params) = &seg.params {
        out.push(';');
        out.extend(params.iter().map(|b| char::from(*b)));
    }
    out
}

/// Segments and whether the path ends with `/`.
fn canonical() -> impl Strategy<Value = (Vec<Seg>, bool)> {
    (vec(seg(), 0..6), any::<bool>())
}

fn canonical_path(segs: &[Seg], trailing: bool) -> String {
    if segs.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::new();
    for seg in segs {
        out.push('/');
        out.push_str(&canonical_seg(seg));
    }
    if trailing {
        out.push('/');
    }
    out
}

/// Something inserted between segments that must not change the canonical path.
#[derive(Debug, Clone)]
enum Insert {
    /// A `.` segment (spelled `.`, `%2e` or `%2E`).
    Dot,
    /// An empty segment: `//`.
    Empty,
    /// A segment and a `..` that climbs out of it again.
    Climb(Seg),
}

fn insert() -> impl Strategy<Value = Insert> {
    prop_oneof![
        Just(Insert::Dot),
        Just(Insert::Empty),
        seg().prop_map(Insert::Climb)
    ]
}

/// How to respell a canonical path: insertions in each gap between segments, the
/// insertion that ends a path with a trailing slash, and random choices for the rest
/// (which characters to percent-encode, hex case).
#[derive(Debug, Clone)]
struct Respelling {
    gaps: Vec<Vec<Insert>>,
    end: Insert,
    choices: Vec<u8>,
}

fn respelling() -> impl Strategy<Value = Respelling> {
    (
        vec(vec(insert(), 0..3), 8),
        insert(),
        vec(any::<u8>(), 1..64),
    )
        .prop_map(|(gaps, end, choices)| Respelling { gaps, end, choices })
}

/// The random choices of a respelling, drawn in turn (cycling).
struct Choices<'a> {
    values: &'a [u8],
    at: usize,
}

impl Choices<'_> {
    fn next(&mut self) -> u8 {
        let value = self.values[self.at % self.values.len()];
        self.at += 1;
        // Mixed with the position so that a short cycle does not repeat itself exactly.
        value.wrapping_add((self.at as u8).wrapping_mul(97))
    }

    fn one_in(&mut self, n: u8) -> bool {
        self.next().is_multiple_of(n)
    }
}

fn encode(b: u8, choices: &mut Choices<'_>, out: &mut String) {
    out.push('%');
    for digit in [b >> 4, b & 0xf] {
        let c = char::from(b"0123456789ABCDEF"[usize::from(digit)]);
        out.push(if choices.one_in(2) {
            c
        } else {
            c.to_ascii_lowercase()
        });
    }
}

fn respell_seg(seg: &Seg, choices: &mut Choices<'_>) -> String {
    let mut out = String::new();
    for piece in &seg.name {
        match piece {
            Piece::Plain(b) if is_unreserved(*b) && choices.one_in(3) => {
                encode(*b, choices, &mut out)
            }
            Piece::Plain(b) => out.push(char::from(*b)),
            Piece::Encoded(b) => encode(*b, choices, &mut out),
        }
    }
    if let Some(params) = &seg.params {
        out.push(';');
        for b in params {
            if is_unreserved(*b) && choices.one_in(3) {
                encode(*b, choices, &mut out);
            } else {
                out.push(char::from(*b));
            }
        }
    }
    out
}

fn respell_dot(choices: &mut Choices<'_>, out: &mut String) {
    if choices.one_in(2) {
        out.push('.');
    } else {
        encode(b'.', choices, out);
    }
}

fn push_insert(insert: &Insert, choices: &mut Choices<'_>, tokens: &mut Vec<String>) {
    match insert {
        Insert::Dot => {
            let mut dot = String::new();
            respell_dot(choices, &mut dot);
            tokens.push(dot);
        }
        Insert::Empty => tokens.push(String::new()),
        Insert::Climb(seg) => {
            tokens.push(respell_seg(seg, choices));
            let mut dots = String::new();
            respell_dot(choices, &mut dots);
            respell_dot(choices, &mut dots);
            tokens.push(dots);
        }
    }
}

fn respell(segs: &[Seg], trailing: bool, respelling: &Respelling) -> String {
    let mut choices = Choices {
        values: &respelling.choices,
        at: 0,
    };
    let mut tokens = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        for insert in &respelling.gaps[i] {
            push_insert(insert, &mut choices, &mut tokens);
        }
        tokens.push(respell_seg(seg, &mut choices));
    }
    // Only a path that ends with `/` may end with an empty, `.` or `..` segment.
    if trailing || segs.is_empty() {
        for insert in &respelling.gaps[segs.len()] {
            push_insert(insert, &mut choices, &mut tokens);
        }
        push_insert(&respelling.end, &mut choices, &mut tokens);
    }
    format!("/{}", tokens.join("/"))
}

// ---------------------------------------------------------------------------------------
// Arbitrary path-like input: a soup of tokens, mostly harmless, some refused.

const GOOD_TOKENS: &[&str] = &[
    "a", "b", "ab", "admin", "A", "~", "-", "_", ".", "..", "/", "//", "/.", "/..", "/./", "/../",
    "%2e", "%2E", "%41", "%61", "%7e", "%7E", "%5F", "%2D", "%20", ";", ";x", "=", "%c3%a9", "é",
    "?", "#", "\"", "%25", "x", ":", "@", "!", "'", "*", "+", "%3f", "%23", "%ff", "<", " ", "%21",
    "%3d", "{", "|",
];
const BAD_TOKENS: &[&str] = &[
    "%2f", "%2F", "%5c", "%5C", "\\", "%00", "%0a", "%7f", "\t", "\u{7f}", "%", "%g", "%2",
    "%252e", "%2541", "..;", ".;", "%2e%2e;x", "\n", "\u{0}", "%3b", "%3B",
];

fn soup_token() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        12 => select(GOOD_TOKENS),
        1 => select(BAD_TOKENS),
    ]
}

/// A path-like string starting with `/`.
fn pathish() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => vec(soup_token(), 0..12).prop_map(|tokens| format!("/{}", tokens.concat())),
        1 => any::<String>().prop_map(|s| format!("/{s}")),
    ]
}

/// Why `out` is not in canonical form, if it is not.
fn shape_violation(out: &str) -> Option<String> {
    if !out.starts_with('/') {
        return Some("does not start with /".into());
    }
    for needle in ["//", "/./", "/../", "%2F", "%2f", "%5C", "%5c", "\\"] {
        if out.contains(needle) {
            return Some(format!("contains {needle:?}"));
        }
    }
    if out.ends_with("/.") || out.ends_with("/..") {
        return Some("ends with a dot segment".into());
    }
    let bytes = out.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(&hi), Some(&lo)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                return Some(format!("a truncated %-encoding at {i}"));
            };
            if !is_upper_hex(hi) || !is_upper_hex(lo) {
                return Some(format!("%-encoding at {i} is not upper-case hex"));
            }
            let value = u8::from_str_radix(&out[i + 1..i + 3], 16).expect("hex");
            if is_unreserved(value) {
                return Some(format!("an encoded unreserved character at {i}"));
            }
            if value == b'/' || value == b'\\' {
                return Some(format!("an encoded separator at {i}"));
            }
            if value == b';' {
                return Some(format!("an encoded ; at {i}"));
            }
            if value < 0x20 || value == 0x7f {
                return Some(format!("an encoded control byte at {i}"));
            }
            if value == b'%'
                && bytes.get(i + 3).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 4).is_some_and(u8::is_ascii_hexdigit)
            {
                return Some(format!("a double encoding at {i}"));
            }
            i += 3;
        } else {
            if b != b'/' && !is_plain(b) {
                return Some(format!("the raw byte {b:#04x} at {i}"));
            }
            i += 1;
        }
    }
    let segments: Vec<&str> = out[1..].split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            if i + 1 != segments.len() {
                return Some("an empty segment".into());
            }
            continue;
        }
        let name = segment.split(';').next().unwrap_or_default();
        if name == "." || name == ".." {
            return Some(format!("the dot segment {segment:?}"));
        }
        if name.is_empty() {
            return Some(format!("parameters without a name: {segment:?}"));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Routes.

fn route(index: usize, path: &str, methods: Option<&[Method]>) -> Route {
    let pattern = match path.strip_prefix('=') {
        Some(exact) => PathPattern::Exact(exact.to_owned()),
        None => PathPattern::Prefix(path.to_owned()),
    };
    Route {
        index,
        host: None,
        pattern,
        methods: methods.map(<[Method]>::to_vec),
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

/// A table with exact, prefix and catch-all routes, with and without methods.
fn fixed_table() -> RouteTable {
    RouteTable::new(vec![
        route(0, "/", Some(&[Method::GET])),
        route(1, "=/a", None),
        route(2, "/a", None),
        route(3, "/a/b", Some(&[Method::POST])),
        route(4, "/a/b", None),
        route(5, "/admin", Some(&[Method::GET, Method::DELETE])),
        route(6, "=/", None),
        route(7, "/x", None),
        route(8, "/ab/a", Some(&[Method::PUT])),
        route(9, "=/public/", None),
        route(10, "/public", Some(&[Method::GET])),
    ])
}

fn methods_to_try() -> [Method; 5] {
    [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::DELETE,
        Method::PUT,
    ]
}

fn decide(table: &RouteTable, method: &Method, path: &str) -> Option<usize> {
    table.match_request(method, None, path).map(|r| r.index)
}

/// The brute-force route decision, from the contract: among the routes whose methods
/// allow the request (`GET` allowing `HEAD`) and whose path covers it (`;parameters`
/// ignored per segment; a prefix on whole segments), an exact path wins, then the longest
/// prefix, then the first in the file.
fn reference(routes: &[Route], method: &Method, path: &str) -> Option<usize> {
    let key = path
        .split('/')
        .map(|segment| segment.split(';').next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("/");
    let allows = |r: &Route| {
        r.methods.as_ref().is_none_or(|methods| {
            methods
                .iter()
                .any(|m| m == method || (*method == Method::HEAD && *m == Method::GET))
        })
    };
    let covers = |pattern: &PathPattern| match pattern {
        PathPattern::Exact(exact) => key == *exact,
        PathPattern::Prefix(prefix) => {
            prefix == "/" || key == *prefix || key.starts_with(&format!("{prefix}/"))
        }
    };
    routes
        .iter()
        .filter(|r| allows(r) && covers(&r.pattern))
        .min_by_key(|r| match &r.pattern {
            PathPattern::Exact(_) => (0, 0, r.index),
            PathPattern::Prefix(prefix) => (1, usize::MAX - prefix.len(), r.index),
        })
        .map(|r| r.index)
}

fn any_method() -> impl Strategy<Value = Method> {
    select(methods_to_try().to_vec())
}

fn random_routes() -> impl Strategy<Value = Vec<Route>> {
    let pattern = prop_oneof![
        3 => select(&["/", "/a", "/a/b", "/ab", "/a/b/c", "/b", "/a/ab", "/bc"][..])
            .prop_map(|p| PathPattern::Prefix(p.to_owned())),
        1 => select(&["/", "/a", "/a/", "/a/b", "/ab/", "/b"][..])
            .prop_map(|p| PathPattern::Exact(p.to_owned())),
    ];
    let methods = prop_oneof![
        3 => Just(None),
        1 => Just(Some(vec![Method::GET])),
        1 => Just(Some(vec![Method::POST])),
        1 => Just(Some(vec![Method::GET, Method::POST])),
        1 => Just(Some(vec![Method::DELETE, Method::PUT])),
    ];
    vec((pattern, methods), 0..8).prop_map(|routes| {
        routes
            .into_iter()
            .enumerate()
            .map(|(index, (pattern, methods))| Route {
                index,
                host: None,
                pattern,
                methods,
                auth: Auth::Required,
                require: Require::default(),
                upstream: 0,
                max_body_bytes: 1 << 20,
                websocket: true,
                rewrite: None,
                cors: None,
                rate_limit: None,
            })
            .collect()
    })
}

/// A canonical request path over a small alphabet, so that routes and paths meet often.
fn request_path() -> impl Strategy<Value = String> {
    (
        vec(
            select(&["a", "b", "ab", "bc", "c", "a;p", "b;q=1", "ab;"][..]),
            0..5,
        ),
        any::<bool>(),
    )
        .prop_map(|(segments, trailing)| {
            if segments.is_empty() {
                return "/".to_owned();
            }
            let mut path = format!("/{}", segments.join("/"));
            if trailing {
                path.push('/');
            }
            path
        })
}

/// A host from a small set, spelled as a client may: any letter case, a trailing dot, a
/// port. With the host as routes compare it.
fn host_spelling() -> impl Strategy<Value = (String, &'static str)> {
    (
        select(
            &[
                "admin.example.com",
                "www.example.com",
                "example.com",
                "other.org",
            ][..],
        ),
        vec(any::<bool>(), 20),
        any::<bool>(),
        proptest::option::of(1u16..),
    )
        .prop_map(|(host, upper, dot, port)| {
            let mut spelled: String = host
                .chars()
                .zip(upper.iter().cycle())
                .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
                .collect();
            if dot {
                spelled.push('.');
            }
            if let Some(port) = port {
                spelled.push_str(&format!(":{port}"));
            }
            (spelled, host)
        })
}

/// A route for `admin.example.com` (index 0), one below `example.com` (1), and a
/// catch-all without a host (2), all on `/`.
fn host_table() -> RouteTable {
    let with_host = |index, host: &str| Route {
        host: HostPattern::parse(host),
        ..route(index, "/", None)
    };
    RouteTable::new(vec![
        route(2, "/", None),
        with_host(1, "*.example.com"),
        with_host(0, "admin.example.com"),
    ])
}

// ---------------------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(config())]

    /// (a) Normalizing a normalized path changes nothing.
    #[test]
    fn normalize_is_idempotent(path in pathish()) {
        if let Ok(once) = normalize(&path) {
            let twice = normalize(&once);
            prop_assert_eq!(
                twice.as_deref(),
                Ok(once.as_ref()),
                "normalize({:?}) = {:?}",
                path,
                once
            );
        }
    }

    /// (b) What `normalize` returns is in canonical form.
    #[test]
    fn normalized_output_is_canonical(path in pathish()) {
        if let Ok(out) = normalize(&path) {
            let violation = shape_violation(&out);
            prop_assert!(
                violation.is_none(),
                "normalize({:?}) = {:?}: {}",
                path,
                out,
                violation.unwrap_or_default()
            );
        }
    }

    /// (c) Every respelling of a canonical path normalizes to it, so every respelling gets
    /// the route decision of the canonical path.
    #[test]
    fn respellings_normalize_to_the_canonical_path(
        (segs, trailing) in canonical(),
        respelling in respelling(),
    ) {
        let canonical = canonical_path(&segs, trailing);
        let respelled = respell(&segs, trailing, &respelling);

        // The canonical path is a fixed point, taken as it is when it has nothing to
        // decode or re-encode.
        let fixed = normalize(&canonical);
        prop_assert_eq!(fixed.as_deref(), Ok(canonical.as_str()));
        if !canonical.contains('%') {
            prop_assert!(
                matches!(normalize(&canonical), Ok(Cow::Borrowed(_))),
                "{:?} was not taken as already canonical",
                canonical
            );
        }

        let normalized = normalize(&respelled);
        prop_assert_eq!(
            normalized.as_deref(),
            Ok(canonical.as_str()),
            "respelled as {:?}",
            respelled
        );

        let table = fixed_table();
        let normalized = normalized.expect("checked");
        for method in methods_to_try() {
            prop_assert_eq!(
                decide(&table, &method, &normalized),
                decide(&table, &method, &canonical),
                "{} {:?} (respelled {:?})",
                method,
                canonical,
                respelled
            );
        }
    }

    /// (d) The route decision on a normalized path is the decision on its re-normalization.
    #[test]
    fn decision_is_stable_under_renormalization(path in pathish(), method in any_method()) {
        if let Ok(once) = normalize(&path) {
            let twice = normalize(&once).expect("a normalized path normalizes");
            let table = fixed_table();
            prop_assert_eq!(
                decide(&table, &method, &once),
                decide(&table, &method, &twice),
                "{} {:?}",
                method,
                path
            );
        }
    }

    /// (e) A prefix route covers exactly its own path and the paths below it, on segment
    /// boundaries (with `;parameters` ignored).
    #[test]
    fn a_prefix_matches_on_segment_boundaries(path in request_path(), method in any_method()) {
        let table = RouteTable::new(vec![route(0, "/a/b", None)]);
        let key = path
            .split('/')
            .map(|segment| segment.split(';').next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("/");
        let expected = key == "/a/b" || key.starts_with("/a/b/");
        prop_assert_eq!(decide(&table, &method, &path).is_some(), expected, "{:?}", path);
    }

    /// (e) The decision is the brute-force one: exact before prefix, the longest prefix,
    /// file order, among the routes whose methods allow the request.
    #[test]
    fn decision_matches_the_reference(
        routes in random_routes(),
        path in request_path(),
        method in any_method(),
    ) {
        let table = RouteTable::new(routes.clone());
        let expected = reference(&routes, &method, &path);
        prop_assert_eq!(
            decide(&table, &method, &path),
            expected,
            "{} {:?} with routes {:?}",
            method,
            path,
            routes
                .iter()
                .map(|r| format!("{}:{}{:?}", r.index, r.pattern, r.methods))
                .collect::<Vec<_>>()
        );
    }

    /// (g) No spelling of a host reaches another route than the host itself does: a route
    /// for `admin.example.com` cannot be passed by for a route without a host.
    #[test]
    fn every_spelling_of_a_host_gets_that_hosts_route(
        (spelled, host) in host_spelling(),
        path in request_path(),
        method in any_method(),
    ) {
        let table = host_table();
        let decide = |host: &str| table.match_request(&method, Some(host), &path).map(|r| r.index);
        let expected = match host {
            "admin.example.com" => Some(0),
            "www.example.com" => Some(1),
            _ => Some(2),
        };
        prop_assert_eq!(decide(&spelled), expected, "{:?} {}", spelled, path);
        prop_assert_eq!(decide(host), expected);
    }

    /// (h) A rewrite changes only the matched prefix: the rest of the normalized path goes
    /// as it is, and the result is itself canonical (nothing for the upstream to read
    /// otherwise).
    #[test]
    fn a_rewrite_replaces_the_matched_prefix_and_stays_canonical(
        path in request_path(),
        to in select(&["/", "/x", "/x/y"][..]),
    ) {
        let mut stripping = route(0, "/a", None);
        stripping.rewrite = Some(to.to_owned());
        let table = RouteTable::new(vec![stripping]);
        let Some(matched) = table.match_request(&Method::GET, None, &path) else {
            return Ok(());
        };
        let rewritten = matched.rewritten(&path).expect("a rewrite");
        // The first segment (`a`, maybe with `;parameters`) is what the route matched.
        let rest = path[1..].find('/').map_or("", |at| &path[1 + at..]);
        let expected = match (to, rest) {
            ("/", "") => "/".to_owned(),
            ("/", rest) => rest.to_owned(),
            (to, rest) => format!("{to}{rest}"),
        };
        prop_assert_eq!(&rewritten, &expected, "{}", path);
        let renormalized = normalize(&rewritten).map(|p| p.into_owned());
        prop_assert_eq!(renormalized.ok(), Some(rewritten));
    }

    /// (f) `normalize` returns, Ok or Err, on any string; what it accepts is canonical.
    #[test]
    fn normalize_never_panics(text in any::<String>()) {
        for input in [text.clone(), format!("/{text}")] {
            if let Ok(out) = normalize(&input) {
                let violation = shape_violation(&out);
                prop_assert!(
                    violation.is_none(),
                    "normalize({:?}) = {:?}: {}",
                    input,
                    out,
                    violation.unwrap_or_default()
                );
            }
        }
    }

    /// Refused spellings are refused wherever they stand in a path.
    #[test]
    fn ambiguous_spellings_are_refused_anywhere(
        before in vec(soup_token(), 0..6),
        bad in select(&[
            "%2f", "%2F", "%5c", "%5C", "\\", "%00", "%1f", "%7F", "\t", "\n", "\r", "\u{7f}",
            "\u{0}", "%2541", "%25%34%31", "%252e", "%zz", "%g0", "/..;/", "/.%2e;x/",
            "/%2E;/", "/;/",
        ][..]),
        after in vec(soup_token(), 0..6),
    ) {
        let path = format!("/{}{bad}{}", before.concat(), after.concat());
        let result = normalize(&path);
        prop_assert!(result.is_err(), "{:?} normalized to {:?}", path, result);
    }
}

/// Spot checks that the generators produce what the properties rely on.
#[test]
fn respelling_generator_sanity() {
    let segs = vec![
        Seg {
            name: b"ad".iter().copied().map(Piece::Plain).collect(),
            params: Some(b"x=1".to_vec()),
        },
        Seg {
            name: vec![Piece::Plain(b'b'), Piece::Encoded(0xC3)],
            params: None,
        },
    ];
    assert_eq!(canonical_path(&segs, true), "/ad;x=1/b%C3/");
    let respelling = Respelling {
        gaps: vec![
            vec![Insert::Dot, Insert::Empty],
            vec![Insert::Climb(segs[1].clone())],
            vec![Insert::Empty],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
        ],
        end: Insert::Dot,
        choices: vec![0, 1, 2, 3, 4, 5, 6, 7],
    };
    let respelled = respell(&segs, true, &respelling);
    assert_eq!(respelled.matches('/').count(), 8, "{respelled}");
    assert_eq!(normalize(&respelled).as_deref(), Ok("/ad;x=1/b%C3/"));
    assert_eq!(shape_violation("/a/b%C3%A9;x/"), None);
    assert!(shape_violation("/a/%41").is_some());
    assert!(shape_violation("/a//b").is_some());
    assert!(shape_violation("/a/..").is_some());
    assert!(shape_violation("/a/%2e").is_some());
    assert!(shape_violation("/a/%3f").is_some());
    assert!(shape_violation("/a/%252F").is_some());
}
