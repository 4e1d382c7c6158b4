//! Configuration parsing and validation (`config::Config::from_toml_str`) on arbitrary text.
//!
//! Asserts: no panic, whatever the text; every refusal carries at least one error. The base
//! directory does not exist, so relative paths resolve to nothing and nothing is written.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use portcullis::config::Config;

fuzz_target!(|text: &str| {
    if let Err(errors) = Config::from_toml_str(text, Path::new("/nonexistent/portcullis-fuzz")) {
        assert!(!errors.0.is_empty(), "a refused configuration without an error");
    }
});
