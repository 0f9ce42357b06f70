//! The `match` of a `[[client_identity]]`: one kind of name (`uri`, `dns` or `cn`) and a
//! text in which `*` stands for one or more characters within one part of the name.
//!
//! - `uri`: within one path segment (or the authority): `*` never matches `/`, so
//!   `spiffe://cluster/ns/*/sa/billing` takes the billing account of every namespace, but
//!   not `spiffe://cluster/ns/a/b/sa/billing`. Compared byte for byte, case included.
//! - `dns`: within one label: `*` never matches `.`, so `*.prod.svc` takes
//!   `billing.prod.svc` but neither `prod.svc` nor `a.billing.prod.svc`. Compared without
//!   ASCII case, as DNS names are.
//! - `cn`: a common name has no parts, so `*` matches any characters there. Compared byte
//!   for byte.
//!
//! `*` never matches nothing (`ns/*/sa` does not take `ns//sa`), and `**` is refused: it
//! would read as "across segments" to anyone used to globs, which it is not.

use super::{ClientCert, NameKind};

/// A validated `match` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPattern {
    kind: NameKind,
    /// As written; lower case for `dns`.
    text: String,
}

impl CertPattern {
    /// A pattern of `kind`, or why `text` cannot be one.
    pub fn parse(kind: NameKind, text: &str) -> Result<CertPattern, String> {
        if text.is_empty() {
            return Err("a pattern cannot be empty".to_owned());
        }
        if text.contains("**") {
            return Err(format!(
                "\"{text}\": \"**\" is not a pattern; one \"*\" matches within one part"
            ));
        }
        let valid = match kind {
            NameKind::Uri => is_uri_pattern(text),
            NameKind::Dns => is_dns_pattern(text),
            NameKind::Cn => !text.chars().any(char::is_control),
        };
        if !valid {
            return Err(match kind {
                NameKind::Uri => format!(
                    "\"{text}\" is not a URI like \"spiffe://cluster/ns/*/sa/name\" (visible ASCII, a scheme without \"*\")"
                ),
                NameKind::Dns => format!(
                    "\"{text}\" is not a DNS name like \"*.prod.example.com\" (labels of letters, digits, '-' and '*')"
                ),
                NameKind::Cn => format!("\"{text}\" holds a control character"),
            });
        }
        let text = match kind {
            NameKind::Dns => text.to_ascii_lowercase(),
            NameKind::Uri | NameKind::Cn => text.to_owned(),
        };
        Ok(CertPattern { kind, text })
    }

    pub fn kind(&self) -> NameKind {
        self.kind
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the certificate is known by this pattern's kind of name and one of those
    /// names matches.
    pub fn matches(&self, cert: &ClientCert) -> bool {
        cert.kind() == self.kind && cert.names().iter().any(|name| self.matches_name(name))
    }

    fn matches_name(&self, name: &str) -> bool {
        match self.kind {
            NameKind::Uri => glob(self.text.as_bytes(), name.as_bytes(), Some(b'/')),
            NameKind::Dns => glob(
                self.text.as_bytes(),
                name.to_ascii_lowercase().as_bytes(),
                Some(b'.'),
            ),
            NameKind::Cn => glob(self.text.as_bytes(), name.as_bytes(), None),
        }
    }
}

impl std::fmt::Display for CertPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = match self.kind {
            NameKind::Uri => "uri",
            NameKind::Dns => "dns",
            NameKind::Cn => "cn",
        };
        write!(f, "{key} = \"{}\"", self.text)
    }
}

/// `scheme:rest`, visible ASCII, the scheme (RFC 3986: a letter, then letters, digits,
/// `+`, `-`, `.`) without `*`, so a pattern cannot stand for any scheme.
fn is_uri_pattern(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        && !rest.is_empty()
        && text.bytes().all(|b| b.is_ascii_graphic())
}

fn is_dns_pattern(text: &str) -> bool {
    text.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
    })
}

/// Whether `name` matches `pattern`, where `*` is one or more bytes none of which is
/// `separator`. One pass over the name per pattern byte, with no backtracking, so no
/// pattern and name can make it slow.
fn glob(pattern: &[u8], name: &[u8], separator: Option<u8>) -> bool {
    // reach[j]: the pattern read so far matches the first j bytes of the name.
    let mut reach = vec![false; name.len() + 1];
    reach[0] = true;
    for &p in pattern {
        let mut next = vec![false; name.len() + 1];
        if p == b'*' {
            // Whether a star may have started since the last separator.
            let mut open = false;
            for end in 1..=name.len() {
                open |= reach[end - 1];
                if Some(name[end - 1]) == separator {
                    open = false;
                }
                next[end] = open;
            }
        } else {
            for start in 0..name.len() {
                next[start + 1] = reach[start] && name[start] == p;
            }
        }
        reach = next;
    }
    reach[name.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(kind: NameKind, pattern: &str, name: &str) -> bool {
        CertPattern::parse(kind, pattern)
            .expect("valid pattern")
            .matches_name(name)
    }

    #[test]
    fn a_uri_star_stays_within_one_segment() {
        let p = "spiffe://cluster/ns/*/sa/billing";
        assert!(matches(
            NameKind::Uri,
            p,
            "spiffe://cluster/ns/prod/sa/billing"
        ));
        assert!(matches(
            NameKind::Uri,
            p,
            "spiffe://cluster/ns/x.y-z/sa/billing"
        ));
        for refused in [
            "spiffe://cluster/ns/a/b/sa/billing",
            "spiffe://cluster/ns//sa/billing",
            "spiffe://cluster/ns/prod/sa/billing/x",
            "spiffe://cluster/ns/prod/sa/billing2",
            "spiffe://cluster/ns/prod/sa/Billing",
            "spiffe://other/ns/prod/sa/billing",
        ] {
            assert!(!matches(NameKind::Uri, p, refused), "{refused}");
        }
        assert!(matches(
            NameKind::Uri,
            "spiffe://*/sa/x",
            "spiffe://td/sa/x"
        ));
        assert!(!matches(
            NameKind::Uri,
            "spiffe://*/sa/x",
            "spiffe://td/y/sa/x"
        ));
        // Within a segment, around other text.
        let p = "spiffe://c/sa/billing-*-v*";
        assert!(matches(NameKind::Uri, p, "spiffe://c/sa/billing-a-b-v2"));
        assert!(!matches(NameKind::Uri, p, "spiffe://c/sa/billing--v2"));
        assert!(!matches(NameKind::Uri, p, "spiffe://c/sa/billing-a/b-v2"));
    }

    #[test]
    fn without_a_star_a_pattern_is_an_exact_match() {
        let p = "spiffe://cluster/ns/prod/sa/billing";
        assert!(matches(NameKind::Uri, p, p));
        assert!(!matches(
            NameKind::Uri,
            p,
            "spiffe://cluster/ns/prod/sa/billin"
        ));
        assert!(!matches(
            NameKind::Uri,
            p,
            "spiffe://cluster/ns/prod/sa/billing/"
        ));
        assert!(matches(NameKind::Cn, "billing", "billing"));
        assert!(!matches(NameKind::Cn, "billing", "Billing"));
        assert!(!matches(NameKind::Cn, "billing", "billing "));
        assert!(matches(NameKind::Dns, "Billing.Prod", "billing.PROD"));
    }

    #[test]
    fn a_dns_star_stays_within_one_label() {
        let p = "*.prod.svc";
        assert!(matches(NameKind::Dns, p, "billing.prod.svc"));
        assert!(!matches(NameKind::Dns, p, "prod.svc"));
        assert!(!matches(NameKind::Dns, p, ".prod.svc"));
        assert!(!matches(NameKind::Dns, p, "a.billing.prod.svc"));
        assert!(matches(NameKind::Dns, "api-*.example", "api-v2.example"));
        assert!(!matches(NameKind::Dns, "api-*.example", "api-.example"));
    }

    #[test]
    fn a_cn_star_matches_any_characters() {
        assert!(matches(NameKind::Cn, "svc-*", "svc-a/b.c d"));
        assert!(!matches(NameKind::Cn, "svc-*", "svc-"));
        assert!(matches(NameKind::Cn, "*a*a*b", "xaaaab"));
        assert!(!matches(NameKind::Cn, "*a*a*b", "xaaab"));
        // Many stars against a long name: no exponential backtracking.
        let long = "a".repeat(4000);
        assert!(!matches(NameKind::Cn, "*a*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for (kind, text) in [
            (NameKind::Uri, ""),
            (NameKind::Uri, "billing"),
            (NameKind::Uri, "*://x/y"),
            (NameKind::Uri, "spiffe:"),
            (NameKind::Uri, "spiffe://x/a b"),
            (NameKind::Uri, "spiffe://x/**"),
            (NameKind::Dns, "a..b"),
            (NameKind::Dns, "a_b.c"),
            (NameKind::Dns, "*.example.com."),
            (NameKind::Cn, "a\nb"),
            (NameKind::Cn, "**"),
        ] {
            assert!(CertPattern::parse(kind, text).is_err(), "{kind:?} {text:?}");
        }
    }
}
