//! Percent-encoding (`net::percent`) on arbitrary strings.
//!
//! Asserts: `decode` and `encode` never panic; `decode(encode(s)) == Some(s)` for every
//! string; `encode` emits only unreserved characters and `%XX` escapes; whatever `decode`
//! accepts has only `%` + two hex digits escapes (RFC 3986 §2.1: no `%+1`), and decoding
//! the re-encoded result gives it back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::net::percent::{decode, encode};

fuzz_target!(|text: &str| {
    let encoded = encode(text);
    assert!(
        encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)) && only_rfc3986_escapes(&encoded),
        "encode({text:?}) = {encoded:?} has reserved characters"
    );
    assert_eq!(decode(&encoded).as_deref(), Some(text), "round trip of {text:?} through {encoded:?}");
    if let Some(decoded) = decode(text) {
        assert!(only_rfc3986_escapes(text), "decode accepted a malformed escape in {text:?}: {decoded:?}");
        assert_eq!(decode(&encode(&decoded)).as_deref(), Some(decoded.as_str()));
    }
});

/// Every `%` starts `%` HEXDIG HEXDIG.
fn only_rfc3986_escapes(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'%')
        .all(|(i, _)| bytes.get(i + 1..i + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)))
}
