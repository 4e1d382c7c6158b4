//! The JWT header and claims pre-checks (`auth::jwt::precheck`) on arbitrary tokens, with
//! and without a configured issuer and audience (chosen by the first byte).
//!
//! Asserts: never panics; a token it accepts has exactly three dot-separated parts.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::auth::jwt::precheck;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, token)) = data.split_first() else { return };
    let issuer = (choice & 1 == 1).then_some("https://ids.example.com");
    let audience = (choice & 2 == 2).then_some("finesse");
    if precheck(token, issuer, audience).is_ok() {
        assert_eq!(token.iter().filter(|b| **b == b'.').count(), 2, "accepted {:?}", String::from_utf8_lossy(token));
    }
});
