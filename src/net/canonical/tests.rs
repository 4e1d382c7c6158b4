//! Unit and property tests of the canonical request view's authority parsing (its paths are
//! tested with the path grammar, `config::path`).

use proptest::prelude::*;

use super::*;

#[test]
fn authorities_are_canonical_or_refused() {
    for (raw, host, text) in [
        ("Desktop.Example.COM", "desktop.example.com", "desktop.example.com"),
        ("desktop.example.com.", "desktop.example.com", "desktop.example.com"),
        ("Desktop.Example.COM.:8445", "desktop.example.com", "desktop.example.com:8445"),
        ("127.0.0.1:80", "127.0.0.1", "127.0.0.1:80"),
        ("[::1]", "[::1]", "[::1]"),
        ("[0:0::1]:8443", "[::1]", "[::1]:8443"),
        ("under_score.example", "under_score.example", "under_score.example"),
    ] {
        let a = parse_authority(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!((a.host(), a.as_str()), (host, text), "{raw}");
    }
    for (raw, why) in [
        ("", AuthorityRefusal::Empty),
        (".", AuthorityRefusal::Empty),
        (":80", AuthorityRefusal::Empty),
        ("user@host", AuthorityRefusal::Userinfo),
        ("user:pw@host:80", AuthorityRefusal::Userinfo),
        ("host/x", AuthorityRefusal::InvalidHost),
        ("host?x", AuthorityRefusal::InvalidHost),
        ("host#x", AuthorityRefusal::InvalidHost),
        ("<script>", AuthorityRefusal::InvalidHost),
        ("a\"b", AuthorityRefusal::InvalidHost),
        ("a b", AuthorityRefusal::InvalidHost),
        ("a%2eb", AuthorityRefusal::InvalidHost),
        ("a..b", AuthorityRefusal::InvalidHost),
        ("host:", AuthorityRefusal::InvalidPort),
        ("host:65536", AuthorityRefusal::InvalidPort),
        ("host:8x", AuthorityRefusal::InvalidPort),
        ("host:80:80", AuthorityRefusal::InvalidPort),
        ("[::1", AuthorityRefusal::InvalidIpv6),
        ("[zz::1]", AuthorityRefusal::InvalidIpv6),
        ("[::1]x", AuthorityRefusal::InvalidPort),
        ("[fe80::1%25eth0]", AuthorityRefusal::InvalidIpv6),
    ] {
        assert_eq!(parse_authority(raw), Err(why), "{raw}");
    }
    assert_eq!(parse_authority(&"a".repeat(300)), Err(AuthorityRefusal::TooLong));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn authority_parsing_never_panics_and_is_idempotent(
        raw in prop::collection::vec(
            prop_oneof![
                prop::sample::select(&["a", "B", ".", ":", "80", "[", "]", "::1", "@", "-", "_", "%", "/", "65536"][..]).prop_map(str::to_string),
                prop::char::any().prop_map(String::from),
            ],
            0..12,
        ).prop_map(|parts| parts.concat())
    ) {
        if let Ok(a) = parse_authority(&raw) {
            prop_assert_eq!(parse_authority(a.as_str()), Ok(a.clone()));
            prop_assert!(!a.as_str().contains(['@', '/', '?', '#', ' ']));
        }
    }
}
