//! Scalar value formats of the config file: durations (`"15m"`), sizes (`"32KiB"`) and
//! where secret material is read from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::Source;

/// `"500ms"`, `"30s"`, `"15m"`, `"2h"`, `"7d"`, or a sum such as `"1h30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("\"{text}\" is not a duration (examples: \"500ms\", \"30s\", \"15m\", \"7d\")");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            "d" => Duration::from_secs(number.saturating_mul(86_400)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// `"8192"`, `"64KB"`, `"32KiB"`, `"1MiB"`, `"1GB"`.
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("\"{text}\" is not a size (examples: \"16384\", \"32KiB\", \"1MiB\")");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let number: u64 = trimmed[..split].parse().map_err(|_| bad())?;
    let factor: u64 = match trimmed[split..].trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1000 * 1000,
        "MiB" => 1 << 20,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    number.checked_mul(factor).ok_or_else(bad)
}

/// A path from the file, relative to the config file's folder.
pub(super) fn resolve(base: &Path, path: &str) -> PathBuf {
    base.join(path)
}

/// Reads secret material. An inline string is a value (a secret written in the file) when
/// `inline_is_path` is false, and a path when it is true (`signing_key = "certs/k.pem"`).
/// Errors never contain the material.
pub(super) fn read_source(
    source: &Source,
    base: &Path,
    inline_is_path: bool,
) -> Result<Vec<u8>, String> {
    match source {
        Source::Inline(text) if inline_is_path && looks_like_pem(text) => Err(
            "this is PEM text, not a path: give a path, { file = \"path\" } or { env = \"VAR\" }"
                .to_owned(),
        ),
        Source::Inline(path) if inline_is_path => read_file(&resolve(base, path)),
        Source::Inline(value) => Ok(value.as_bytes().to_vec()),
        Source::Env(var) => match std::env::var(var) {
            Ok(value) if !value.is_empty() => Ok(value.into_bytes()),
            Ok(_) => Err(format!("environment variable {var} is empty")),
            Err(_) => Err(format!("environment variable {var} is not set")),
        },
        Source::File(path) => read_file(&resolve(base, path)),
    }
}

/// The path a source names, if it names one (for generating missing dev material).
pub(super) fn source_path(source: &Source, base: &Path, inline_is_path: bool) -> Option<PathBuf> {
    match source {
        Source::Inline(text) if inline_is_path && looks_like_pem(text) => None,
        Source::Inline(path) if inline_is_path => Some(resolve(base, path)),
        Source::File(path) => Some(resolve(base, path)),
        Source::Inline(_) | Source::Env(_) => None,
    }
}

/// Key material pasted where a path was expected: it must never be echoed as a "path".
fn looks_like_pem(text: &str) -> bool {
    text.contains("-----BEGIN") || text.contains('\n')
}

pub(super) fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A secret read from a file or variable, without the line break editors and `echo` add.
pub(super) fn trim_secret(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "15", "m", "15x", "1.5s", "-1s", "s15"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8192"), Ok(8192));
        assert_eq!(parse_size("32KiB"), Ok(32 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64KB"), Ok(64_000));
        for bad in ["", "KiB", "1.5MiB", "12 parsecs"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
