//! Unit and property tests of the canonical path grammar: what normalising does, what it
//! refuses, and the invariant that a canonical path keeps its segments under any upstream
//! resolution.

use proptest::prelude::*;

use super::*;

fn strict() -> PathPolicy {
    PathPolicy::default()
}

fn norm(raw: &str) -> Result<String, PathRefusal> {
    normalize_path(raw, strict())
}

#[test]
fn dot_segments_are_resolved_including_encoded_ones() {
    for (raw, want) in [
        ("/", "/"),
        ("/a/b/../c", "/a/c"),
        ("/a/./b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/desktop/assets/../../finesse/api", "/finesse/api"),
        ("/desktop/assets/%2e%2e/%2E%2e/finesse", "/finesse"),
        ("/desktop/assets/.%2e/x", "/desktop/x"),
        ("/desktop/assets/%2e./x", "/desktop/x"),
        ("/a/%2e/b", "/a/b"),
        ("//finesse//api", "/finesse/api"),
        ("/a//", "/a/"),
        ("/a/b/", "/a/b/"),
        ("/a/...", "/a/..."),
    ] {
        assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
    }
}

#[test]
fn unreserved_escapes_are_decoded_and_others_kept_upper_case() {
    assert_eq!(norm("/fin%65sse/%41%7e%2D%5f").as_deref(), Ok("/finesse/A~-_"));
    assert_eq!(norm("/a%3cb%20c").as_deref(), Ok("/a%3Cb%20c"));
    assert_eq!(norm("/a;jsessionid=1/x").as_deref(), Ok("/a;jsessionid=1/x"));
}

#[test]
fn what_cannot_be_normalised_safely_is_refused() {
    for (raw, why) in [
        ("*", PathRefusal::NotAbsolute),
        ("", PathRefusal::NotAbsolute),
        ("a/b", PathRefusal::NotAbsolute),
        ("/..", PathRefusal::AboveRoot),
        ("/a/../../b", PathRefusal::AboveRoot),
        ("/a%2fb", PathRefusal::EncodedSlash),
        ("/a%2F..%2Fb", PathRefusal::EncodedSlash),
        ("/a%5cb", PathRefusal::EncodedSlash),
        ("/a\\b", PathRefusal::Backslash),
        ("/desktop/assets/..;/finesse", PathRefusal::DotSegmentParameters),
        ("/desktop/assets/.;x/y", PathRefusal::DotSegmentParameters),
        ("/a/;/b", PathRefusal::DotSegmentParameters),
        ("/a/%2e%2e;x/b", PathRefusal::DotSegmentParameters),
        ("/a/..%3B/b", PathRefusal::DotSegmentParameters),
        ("/a/..%3b/b", PathRefusal::DotSegmentParameters),
        ("/a%00b", PathRefusal::ControlByte),
        ("/a%0d%0ab", PathRefusal::ControlByte),
        ("/a%7f", PathRefusal::ControlByte),
        ("/a b", PathRefusal::ControlByte),
        ("/a%252e%252e/b", PathRefusal::DoubleEncoding),
        ("/a%25%32%65/b", PathRefusal::DoubleEncoding),
        ("/a%zz", PathRefusal::MalformedEscape),
        ("/a%4", PathRefusal::MalformedEscape),
        ("/a%", PathRefusal::MalformedEscape),
    ] {
        assert_eq!(norm(raw), Err(why), "{raw}");
    }
    assert_eq!(norm(&format!("/{}", "a".repeat(MAX_PATH_BYTES))), Err(PathRefusal::TooLong));
}

#[test]
fn listener_policies_keep_encoded_slashes_or_read_backslashes_as_slashes() {
    let keep = PathPolicy { escaped_slashes: EscapedSlashPolicy::Keep, backslash: BackslashPolicy::Reject };
    assert_eq!(normalize_path("/a%2fb/../c", keep).as_deref(), Ok("/c"));
    assert_eq!(normalize_path("/x/a%2fb", keep).as_deref(), Ok("/x/a%2Fb"));
    let slash = PathPolicy { escaped_slashes: EscapedSlashPolicy::Reject, backslash: BackslashPolicy::Slash };
    assert_eq!(normalize_path("/a\\..\\b", slash).as_deref(), Ok("/b"));
    assert_eq!(normalize_path("\\a", slash).as_deref(), Ok("/a"));
}

#[test]
fn parameters_come_off_every_segment_for_the_second_view() {
    assert_eq!(without_parameters("/finesse/api"), None);
    assert_eq!(without_parameters("/finesse;x/api").as_deref(), Some("/finesse/api"));
    assert_eq!(without_parameters("/a;b=c/d%3Be/f;g").as_deref(), Some("/a/d/f"));
}

#[test]
fn prefixes_compare_case_sensitively_unless_folding() {
    assert!(has_prefix("/Desktop/x", "/Desktop/", false));
    assert!(!has_prefix("/DESKTOP/x", "/desktop/", false));
    assert!(has_prefix("/DESKTOP/x", "/desktop/", true));
    assert!(!has_prefix("/d", "/desktop/", true));
}

/// Path pieces an attacker combines: separators, dot-segments in every encoding, parameters,
/// backslashes, escapes of every kind, case variants.
const PIECES: &[&str] = &[
    "/", "//", "a", "B", "desktop", "assets", "finesse", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2e.", ";", ";x", "..;", "%3b", "%3B",
    "\\", "%5c", "%2f", "%2F", "%25", "%252e", "%00", "%41", "%7e", "%20", "%3C", "~", "-", "_", "x.y", "%", "%zz", "%32", "%65", "%61",
    "A",
];

fn attack_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..14).prop_map(|pieces| format!("/{}", pieces.concat()))
}

fn any_policy() -> impl Strategy<Value = PathPolicy> {
    (any::<bool>(), any::<bool>()).prop_map(|(keep, slash)| PathPolicy {
        escaped_slashes: if keep { EscapedSlashPolicy::Keep } else { EscapedSlashPolicy::Reject },
        backslash: if slash { BackslashPolicy::Slash } else { BackslashPolicy::Reject },
    })
}

/// Decodes every escape (as an upstream might), leaving invalid ones as they are.
fn decode_all(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2)))
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(0));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The segments an upstream resolves a path into, after applying what upstreams do: decode
/// escapes, read backslashes as slashes, strip `;parameters`, fold case, then resolve
/// dot-segments and merge slashes. `None` when it climbs above the root.
fn upstream_segments(path: &str, decode: bool, backslash: bool, strip_params: bool, fold: bool) -> Option<Vec<String>> {
    let mut text = if decode { decode_all(path) } else { path.to_string() };
    if backslash {
        text = text.replace('\\', "/");
    }
    if fold {
        text = text.to_ascii_lowercase();
    }
    let mut out: Vec<String> = Vec::new();
    for segment in text.split('/') {
        let segment = if strip_params { segment.split(';').next().unwrap_or("") } else { segment };
        match segment {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            s => out.push(s.to_string()),
        }
    }
    Some(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn normalising_is_idempotent(raw in attack_path(), policy in any_policy()) {
        if let Ok(once) = normalize_path(&raw, policy) {
            prop_assert_eq!(normalize_path(&once, policy), Ok(once.clone()));
        }
    }

    #[test]
    fn a_canonical_path_has_no_dot_or_empty_segments(raw in attack_path(), policy in any_policy()) {
        if let Ok(path) = normalize_path(&raw, policy) {
            prop_assert!(path.starts_with('/'));
            let inner = path.strip_prefix('/').unwrap_or("");
            let inner = inner.strip_suffix('/').unwrap_or(inner);
            if !inner.is_empty() {
                for segment in inner.split('/') {
                    prop_assert!(!matches!(segment, "" | "." | ".."), "segment {:?} in {:?}", segment, path);
                }
            }
            prop_assert!(!path.contains('\\'));
        }
    }

    /// The security property: under the strict (default) policy, whatever an upstream does to
    /// a canonical path — decoding, backslash as slash, `;` stripping, case folding, in any
    /// combination — keeps each canonical segment one segment, never a dot-segment, so a path
    /// under a public prefix stays under it at the upstream.
    #[test]
    fn public_paths_stay_public_after_any_upstream_resolution(
        raw in attack_path(),
        prefix in prop::sample::select(&["/desktop/assets/", "/a/", "/desktop/", "/"][..]),
        decode in any::<bool>(),
        backslash in any::<bool>(),
        strip in any::<bool>(),
        fold in any::<bool>(),
    ) {
        let raw = format!("{prefix}{}", raw.trim_start_matches('/'));
        if let Ok(path) = normalize_path(&raw, strict())
            && has_prefix(&path, prefix, false)
        {
            let want = upstream_segments(prefix, decode, backslash, strip, fold).unwrap_or_default();
            let got = upstream_segments(&path, decode, backslash, strip, fold);
            prop_assert!(got.as_ref().is_some_and(|g| g.starts_with(&want)),
                "{raw:?} -> {path:?} resolves upstream to {got:?}, outside {prefix:?}");
            let canonical_segments = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).count();
            prop_assert_eq!(got.map(|g| g.len()), Some(canonical_segments), "segment count changed for {}", path);
        }
    }
}
