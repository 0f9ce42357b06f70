//! The request path: `normalize` never panics, and what it returns is canonical — a
//! fixed point with no spelling left that an upstream could read another way.
#![no_main]

use authgate::routes::normalize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = normalize(raw) else {
        return;
    };
    assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
    assert_eq!(
        normalize(&path).as_deref(),
        Ok(&*path),
        "not a fixed point: {raw:?} -> {path:?}"
    );
    assert!(
        !path.bytes().any(|b| b == b'\\' || b.is_ascii_control()),
        "{raw:?} -> {path:?}"
    );
    assert!(
        !path
            .split('/')
            .any(|segment| segment == "." || segment == ".."),
        "{raw:?} -> {path:?}"
    );
    let upper = path.to_ascii_uppercase();
    assert!(
        !upper.contains("%2F") && !upper.contains("%5C") && !upper.contains("%252F"),
        "an encoded separator survived: {raw:?} -> {path:?}"
    );
});
