//! Where a login may send the browser back to (`?rd=`): a path on the same host, or an
//! https URL of an allowed host. Everything else — `//evil`, `/\evil`, `https:evil`,
//! encoded slashes, `javascript:`, an allowed host over http — becomes `/`.
//!
//! Browsers read URLs loosely (a backslash as a slash, tabs and newlines dropped, a
//! scheme-relative `//host`), so a target passes only in a strict shape, judged on the
//! text and again on its percent-decoded form.

/// `rd` if it is a safe target, else `/`.
pub(crate) fn target<'a>(rd: &'a str, allowed_hosts: &[String]) -> &'a str {
    if is_local_path(rd) || is_allowed_url(rd, allowed_hosts) {
        rd
    } else {
        "/"
    }
}

/// A path on this host: `/` then not `/` or `\`, only visible ASCII; and its decoded
/// form the same shape, without a backslash or a control character (`%2F%2F`, `%5C`,
/// `%09` refused; an encoded space is fine).
fn is_local_path(rd: &str) -> bool {
    let shaped = |text: &str| {
        let bytes = text.as_bytes();
        bytes.first() == Some(&b'/') && !matches!(bytes.get(1), Some(b'/' | b'\\'))
    };
    let decoded = percent_decoded(rd);
    shaped(rd)
        && rd.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'\\')
        && shaped(&decoded)
        && !decoded.chars().any(|c| c == '\\' || c.is_ascii_control())
}

/// `https://HOST[/path]` with HOST one of `allowed` (`a.example.com`, or `.example.com`
/// for the names below it), no user info, no port other than the default.
fn is_allowed_url(rd: &str, allowed: &[String]) -> bool {
    let Some(rest) = rd.strip_prefix("https://") else {
        return false;
    };
    if !rd.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'\\') {
        return false;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = rest[..end].to_ascii_lowercase();
    let path = &rest[end..];
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return false;
    }
    if !path.is_empty() && !path.starts_with('/') {
        // `?` or `#` right after the host: fine as a URL, but keep the shape simple.
        return false;
    }
    if !path.is_empty() && !is_local_path(path) {
        return false;
    }
    allowed.iter().any(|a| match a.strip_prefix('.') {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|below| below.ends_with('.') && below.len() > 1),
        None => host == *a,
    })
}

/// `%XX` decoded (bytes kept as Latin-1 chars; invalid escapes left as they are).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(char::from(byte));
            i += 3;
        } else {
            out.push(char::from(bytes[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_and_allowed_hosts_pass() {
        let allowed = vec!["app.example.com".to_owned(), ".corp.example".to_owned()];
        for ok in [
            "/",
            "/reports?year=2026&q=a%20b",
            "/caf%C3%A9",
            "/a/b#frag",
            "https://app.example.com",
            "https://app.example.com/x?y=1",
            "https://wiki.corp.example/page",
        ] {
            assert_eq!(target(ok, &allowed), ok, "{ok}");
        }
    }

    #[test]
    fn every_off_host_trick_goes_to_the_root() {
        let allowed = vec!["app.example.com".to_owned(), ".corp.example".to_owned()];
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "https:evil.example",
            "https:/evil.example",
            "/%2F%2Fevil.example",
            "/%2f/evil.example",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%09/evil.example",
            "/x%0D%0ALocation:%20//evil.example",
            "/\t/evil.example",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,x",
            "http://app.example.com/x",
            "https://evil.example",
            "https://app.example.com.evil.example/",
            "https://app.example.com@evil.example/",
            "https://app.example.com:8443/",
            "https://corp.example/",
            "https://evilcorp.example/",
            "https://app.example.com//evil.example",
            "https://app.example.com/\\evil",
            "evil.example",
            "",
            " /x",
        ] {
            assert_eq!(target(bad, &allowed), "/", "{bad:?}");
        }
    }
}
