//! The canonical path grammar's normaliser (`config::path::normalize_path`) on
//! arbitrary request paths, under every listener policy (chosen by the first byte).
//!
//! Asserts: never panics; a canonical path starts with `/`, holds no `\`, no `.`/`..`/empty
//! segment and no control byte; normalising it again gives it back (idempotent); and under
//! the strict default policy every segment stays one non-dot segment after what an upstream
//! might do to it (decode escapes, read `\` as `/`, strip `;parameters`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config::path::{BackslashPolicy, EscapedSlashPolicy, PathPolicy, normalize_path, without_parameters};

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else { return };
    let Ok(raw) = std::str::from_utf8(rest) else { return };
    let policy = PathPolicy {
        escaped_slashes: if choice & 1 == 0 { EscapedSlashPolicy::Reject } else { EscapedSlashPolicy::Keep },
        backslash: if choice & 2 == 0 { BackslashPolicy::Reject } else { BackslashPolicy::Slash },
    };
    let Ok(path) = normalize_path(raw, policy) else { return };
    assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
    assert!(!path.contains('\\') && path.bytes().all(|b| (0x21..0x7f).contains(&b)), "{raw:?} -> {path:?}");
    let inner = path.trim_start_matches('/').strip_suffix('/').unwrap_or(path.trim_start_matches('/'));
    if !inner.is_empty() {
        for segment in inner.split('/') {
            assert!(!matches!(segment, "" | "." | ".."), "{raw:?} -> {path:?}: segment {segment:?}");
        }
    }
    assert_eq!(normalize_path(&path, policy).as_deref(), Ok(path.as_str()), "not idempotent for {raw:?}");
    let _ = without_parameters(&path);
    if choice & 3 == 0 {
        for segment in inner.split('/').filter(|s| !s.is_empty()) {
            let decoded = decode_all(segment).replace('\\', "/");
            assert!(!decoded.contains('/'), "{raw:?} -> {path:?}: {segment:?} splits upstream");
            let base = decoded.split(';').next().unwrap_or("");
            assert!(!matches!(base, "" | "." | ".."), "{raw:?} -> {path:?}: {segment:?} is a dot or empty segment upstream");
        }
    }
});

/// Decodes every `%XX` (as an upstream would), leaving anything else as it is.
fn decode_all(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(0));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
