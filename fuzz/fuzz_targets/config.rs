//! The config file: whatever text it holds, `Config::from_toml_str` answers with a config
//! or with errors, and never panics (it runs at start and at every reload, and a panic on
//! reload would take the serving gateway down).
#![no_main]

use std::path::Path;

use authgate::config::{Config, LoadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A folder that does not exist: every file the text names is missing, and nothing
    // generated is written.
    let _ = Config::from_toml_str(
        text,
        Path::new("/nonexistent/gateway.toml"),
        LoadOptions {
            write_generated: false,
        },
    );
});
