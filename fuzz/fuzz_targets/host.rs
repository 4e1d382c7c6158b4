//! The authority parser of the canonical request view (`net::canonical::parse_authority`) on
//! arbitrary `Host` values.
//!
//! Asserts: never panics; an accepted authority is lower-case, has no trailing dot, no
//! userinfo and no character a host cannot hold; parsing its text again gives it back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::net::canonical::parse_authority;

fuzz_target!(|raw: &str| {
    let Ok(authority) = parse_authority(raw) else { return };
    let text = authority.as_str();
    assert!(!text.is_empty() && text.len() <= 300, "{raw:?} -> {text:?}");
    assert!(text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._:[]".contains(&b) || b.is_ascii_hexdigit()), "{raw:?} -> {text:?}");
    assert!(!authority.host().ends_with('.'), "{raw:?} -> {text:?}");
    assert_eq!(parse_authority(text).as_ref(), Ok(&authority), "not idempotent for {raw:?}");
});
