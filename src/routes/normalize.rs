//! The canonical form of a request path: the one spelling that routes are matched on
//! and that is forwarded upstream.
//!
//! Two spellings of one resource must normalize to the same string, or a route rule could
//! be bypassed by the other spelling. So: percent-encoded unreserved characters are decoded
//! (`%61` → `a`, `%2E` → `.`), other encodings are kept with upper-case hex, `.` and `..`
//! segments are resolved, empty segments (`//`) are merged. What different upstreams would
//! read differently is refused rather than guessed: an encoded `/` or `\`, a raw `\`,
//! control bytes, a double encoding (`%25` + two hex digits), a `..` above the root, a
//! dot segment with path parameters (`..;`), which Java servlet containers resolve, and an
//! encoded `;` (`%3B`), which an upstream that decodes before it strips parameters would
//! read as one (Spring's `StrictHttpFirewall` refuses it for the same reason).

use std::borrow::Cow;

/// Why a path was refused; each one is answered with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with /")]
    NotAbsolute,
    #[error("invalid percent-encoding")]
    InvalidPercentEncoding,
    #[error("an encoded / or \\")]
    EncodedSeparator,
    #[error("an encoded ;")]
    EncodedSemicolon,
    #[error("a raw backslash")]
    Backslash,
    #[error("a control byte")]
    ControlByte,
    #[error("a double percent-encoding")]
    DoubleEncoded,
    #[error("a .. segment above the root")]
    EscapesRoot,
    #[error("a dot segment with path parameters")]
    DotSegmentWithParameters,
}

impl PathError {
    pub fn description(&self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the request path must start with /",
            PathError::InvalidPercentEncoding => "the request path has an invalid percent-encoding",
            PathError::EncodedSeparator => "the request path has an encoded / or \\",
            PathError::EncodedSemicolon => "the request path has an encoded ;",
            PathError::Backslash => "the request path has a backslash",
            PathError::ControlByte => "the request path has a control character",
            PathError::DoubleEncoded => "the request path is percent-encoded twice",
            PathError::EscapesRoot => "the request path climbs above the root",
            PathError::DotSegmentWithParameters => {
                "the request path has a dot segment with parameters"
            }
        }
    }
}

/// Bytes that may stand in a canonical path segment as they are: RFC 3986 `pchar` without
/// `%` (handled apart). `.` is allowed here; dot segments are checked per segment.
const fn is_plain(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'-' | b'.' | b'_' | b'~'                                           // unreserved
        | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' // sub-delims
        | b':' | b'@')
}

const fn is_unreserved(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~')
}

/// Normalizes the path part of a request target (no query). Borrows when the path is
/// already canonical, which is the common case.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    normalize_slow(raw).map(Cow::Owned)
}

/// True when every segment is plain bytes and none is empty (but the last), `.`, `..`,
/// or a dot name with parameters: then normalizing would change nothing.
fn is_canonical(raw: &str) -> bool {
    let mut segments = raw[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment.is_empty() {
            if last {
                return true;
            }
            return false;
        }
        if !segment.bytes().all(is_plain) || !is_regular_name(segment) {
            return false;
        }
    }
    true
}

/// A segment that is neither a dot segment nor a parameter list on an empty or dot name.
fn is_regular_name(segment: &str) -> bool {
    let name = segment.split(';').next().unwrap_or_default();
    !(name.is_empty() || name == "." || name == "..")
}

fn normalize_slow(raw: &str) -> Result<String, PathError> {
    let mut kept: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    for raw_segment in raw[1..].split('/') {
        let segment = decode_segment(raw_segment)?;
        trailing_slash = matches!(segment.as_str(), "" | "." | "..");
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                if kept.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
            }
            _ if !is_regular_name(&segment) => return Err(PathError::DotSegmentWithParameters),
            _ => kept.push(segment),
        }
    }
    let mut out = String::with_capacity(raw.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Decodes one segment to its canonical spelling.
fn decode_segment(raw: &str) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let decoded = if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| hex_value(*c));
            let lo = bytes.get(i + 2).and_then(|c| hex_value(*c));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::InvalidPercentEncoding);
            };
            i += 3;
            let value = hi << 4 | lo;
            match value {
                b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                b';' => return Err(PathError::EncodedSemicolon),
                _ if is_unreserved(value) => {
                    out.push(char::from(value));
                    continue;
                }
                _ => value,
            }
        } else {
            i += 1;
            if b == b'\\' {
                return Err(PathError::Backslash);
            }
            if is_plain(b) {
                out.push(char::from(b));
                continue;
            }
            b
        };
        if decoded < 0x20 || decoded == 0x7f {
            return Err(PathError::ControlByte);
        }
        out.push('%');
        out.push(char::from(HEX[usize::from(decoded >> 4)]));
        out.push(char::from(HEX[usize::from(decoded & 0xf)]));
    }
    // Checked on the output, so an encoded `%` followed by decoded hex digits is caught too.
    if out
        .as_bytes()
        .windows(5)
        .any(|w| w.starts_with(b"%25") && w[3].is_ascii_hexdigit() && w[4].is_ascii_hexdigit())
    {
        return Err(PathError::DoubleEncoded);
    }
    Ok(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The path that route patterns are compared with: each segment without its `;parameters`,
/// since servlet containers serve `/admin;x` as `/admin`.
pub fn match_key(normalized: &str) -> Cow<'_, str> {
    if !normalized.contains(';') {
        return Cow::Borrowed(normalized);
    }
    let mut out = String::with_capacity(normalized.len());
    for (i, segment) in normalized.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(segment.split(';').next().unwrap_or_default());
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        normalize(raw)
            .unwrap_or_else(|e| panic!("{raw}: {e}"))
            .into_owned()
    }

    fn err(raw: &str) -> PathError {
        match normalize(raw) {
            Ok(p) => panic!("{raw} normalized to {p}, expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/",
            "/a/b.c/d",
            "/a;b=c/d",
            "/~user/x-y_z",
            "/a.b/..c/.d",
        ] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn decodes_unreserved_and_keeps_the_rest_upper_case() {
        assert_eq!(ok("/%61dmin"), "/admin");
        assert_eq!(ok("/a%2ec"), "/a.c");
        assert_eq!(ok("/a%3fb"), "/a%3Fb");
        assert_eq!(ok("/a%20b"), "/a%20b");
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(ok("/a\"b"), "/a%22b");
    }

    #[test]
    fn resolves_dot_segments_and_merges_slashes() {
        assert_eq!(ok("/a/./b"), "/a/b");
        assert_eq!(ok("/a/../b"), "/b");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/b/."), "/a/b/");
        assert_eq!(ok("//a///b//"), "/a/b/");
        assert_eq!(ok("/a/%2e%2E/b"), "/b");
        assert_eq!(ok("/a/.%2e/b"), "/b");
        assert_eq!(ok("/."), "/");
        assert_eq!(ok("/a/.."), "/");
    }

    #[test]
    fn refuses_ambiguous_spellings() {
        assert_eq!(err("a"), PathError::NotAbsolute);
        assert_eq!(err("/a%2fb"), PathError::EncodedSeparator);
        assert_eq!(err("/a%5Cb"), PathError::EncodedSeparator);
        assert_eq!(err("/admin%3Bx"), PathError::EncodedSemicolon);
        assert_eq!(err("/public/..%3b/admin"), PathError::EncodedSemicolon);
        assert_eq!(err("/a\\b"), PathError::Backslash);
        assert_eq!(err("/a%00"), PathError::ControlByte);
        assert_eq!(err("/a%0a"), PathError::ControlByte);
        assert_eq!(err("/a%7f"), PathError::ControlByte);
        assert_eq!(err("/a\tb"), PathError::ControlByte);
        assert_eq!(err("/a%2"), PathError::InvalidPercentEncoding);
        assert_eq!(err("/a%zz"), PathError::InvalidPercentEncoding);
        assert_eq!(err("/%252e%252e/admin"), PathError::DoubleEncoded);
        assert_eq!(err("/%25%34%31"), PathError::DoubleEncoded);
        assert_eq!(err("/.."), PathError::EscapesRoot);
        assert_eq!(err("/a/../../b"), PathError::EscapesRoot);
        assert_eq!(err("/..;/admin"), PathError::DotSegmentWithParameters);
        assert_eq!(err("/.;x/admin"), PathError::DotSegmentWithParameters);
        assert_eq!(err("/;x/admin"), PathError::DotSegmentWithParameters);
    }

    #[test]
    fn a_lone_encoded_percent_is_kept() {
        assert_eq!(ok("/100%25"), "/100%25");
        assert_eq!(ok("/100%25x"), "/100%25x");
    }

    #[test]
    fn match_key_drops_path_parameters() {
        assert_eq!(match_key("/admin;jsessionid=1/x"), "/admin/x");
        assert_eq!(match_key("/admin"), "/admin");
    }
}
