//! Text a client chose (a username, a path), made safe for a log line: control characters
//! escaped, so a newline cannot start a forged line and an ESC cannot reach a terminal,
//! and the length bounded, so a 15 KB name does not cost 15 KB per log line.

use std::fmt;

/// Characters of client text a log line keeps; the rest is counted, not written.
pub(crate) const LOGGED_CHARS: usize = 256;

/// Client text as a log field: escaped and cut at [`LOGGED_CHARS`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Untrusted<'a>(pub(crate) &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0, LOGGED_CHARS)
    }
}

/// Writes `text` with control characters (C0, DEL, C1, and the bidirectional overrides
/// that reorder what a terminal shows) as `\u{…}` escapes and `\` doubled, and at most
/// `max_chars` characters of it, followed by how many more there were.
pub(crate) fn write_escaped(
    out: &mut impl fmt::Write,
    text: &str,
    max_chars: usize,
) -> fmt::Result {
    for (written, (at, c)) in text.char_indices().enumerate() {
        if written == max_chars {
            let rest = text[at..].chars().count();
            return write!(out, "…(+{rest} chars)");
        }
        match c {
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if c.is_control()
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                write!(out, "\\u{{{:x}}}", u32::from(c))?;
            }
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let shown = Untrusted("eve\n2026-01-01 INFO forged\r\x1b[31m\u{202e}\\x\u{85}").to_string();
        assert_eq!(
            shown,
            "eve\\n2026-01-01 INFO forged\\r\\u{1b}[31m\\u{202e}\\\\x\\u{85}"
        );
        assert!(!shown.chars().any(char::is_control));
    }

    #[test]
    fn long_text_is_cut_and_counted() {
        let long = "é".repeat(LOGGED_CHARS + 10);
        let shown = Untrusted(&long).to_string();
        assert_eq!(shown, format!("{}…(+10 chars)", "é".repeat(LOGGED_CHARS)));
        assert_eq!(Untrusted("short").to_string(), "short");
    }
}
