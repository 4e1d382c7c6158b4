//! Unit tests of the shield: exact thresholds, windows, exemptions, IPv6 prefixes.

use super::*;
use crate::cluster::embedded::EmbeddedStore;
use crate::config::{Category, CategorySettings, Exemption};

fn config() -> ProtectionConfig {
    let mut categories = std::collections::BTreeMap::new();
    categories.insert(
        Category::HttpAuthFailure,
        CategorySettings { enabled: true, trigger: 5, window: Duration::from_secs(30), ban: Duration::from_secs(1800) },
    );
    categories.insert(
        Category::HttpResourceAccessFailure,
        CategorySettings { enabled: false, trigger: 1, window: Duration::from_secs(30), ban: Duration::from_secs(60) },
    );
    ProtectionConfig {
        blocked_status: 418,
        ipv6_prefix: 64,
        categories,
        exemptions: vec![Exemption {
            address: "203.0.113.0".parse().unwrap(),
            prefix_length: 24,
            categories: vec![Category::HttpAuthFailure],
        }],
        trusted_proxies: Vec::new(),
        close_banned_tls: false,
        nftables_table: None,
    }
}

/// A shield over an embedded store in `dir`, with its `blocking.log` subscriber there.
fn shield(dir: &std::path::Path) -> Shield {
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::open(dir).unwrap());
    let events = EventBus::new();
    let blocking_log = blocking_log::BlockingLog::open(dir, "edge.test").unwrap();
    tokio::spawn(blocking_log.follow(events.subscribe(), ErrorLog::console_only()));
    Shield::new(config(), store, events, ErrorLog::console_only(), Arc::new(Metrics::new()))
}

/// `blocking.log` in `dir` once its subscriber wrote something (it runs beside the shield).
async fn blocking_log_in(dir: &std::path::Path) -> String {
    for _ in 0..1000 {
        let text = std::fs::read_to_string(dir.join("blocking.log")).unwrap_or_default();
        if !text.is_empty() {
            return text;
        }
        tokio::task::yield_now().await;
    }
    String::new()
}

const REQ: RequestLine<'static> = RequestLine { method: "GET", path: "/login", protocol: "HTTP/1.1", host: "edge.test" };

#[tokio::test(start_paused = true)]
async fn the_trigger_th_event_inside_the_window_bans() {
    let dir = tempfile::tempdir().unwrap();
    let s = shield(dir.path());
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    for _ in 0..4 {
        assert!(!s.record(ip, Category::HttpAuthFailure, REQ).await);
        assert_eq!(s.check(ip), None);
    }
    assert!(s.record(ip, Category::HttpAuthFailure, REQ).await, "5th failure bans");
    assert_eq!(s.check(ip), Some(418));
    let log = blocking_log_in(dir.path()).await;
    assert!(log.contains("[emerg] ") && log.contains("#0: 198.51.100.7 will be blocked for 30 minutes for exceeding retry limit., client: 198.51.100.7, server: edge.test, request: \"GET /login HTTP/1.1\", host: \"edge.test\""), "{log}");
}

#[tokio::test(start_paused = true)]
async fn events_older_than_the_window_do_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let s = shield(dir.path());
    let ip: IpAddr = "198.51.100.8".parse().unwrap();
    for _ in 0..4 {
        s.record(ip, Category::HttpAuthFailure, REQ).await;
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(!s.record(ip, Category::HttpAuthFailure, REQ).await, "the first four left the window");
    for _ in 0..3 {
        s.record(ip, Category::HttpAuthFailure, REQ).await;
    }
    assert!(s.record(ip, Category::HttpAuthFailure, REQ).await, "five inside the window");
}

#[tokio::test]
async fn exemptions_and_disabled_categories_never_count() {
    let dir = tempfile::tempdir().unwrap();
    let s = shield(dir.path());
    let nat: IpAddr = "203.0.113.77".parse().unwrap();
    for _ in 0..20 {
        assert!(!s.record(nat, Category::HttpAuthFailure, REQ).await);
    }
    assert_eq!(s.check(nat), None);
    assert!(!s.record("198.51.100.9".parse().unwrap(), Category::HttpResourceAccessFailure, REQ).await, "off by default");
}

#[tokio::test]
async fn ipv6_sources_are_counted_and_banned_per_64() {
    let dir = tempfile::tempdir().unwrap();
    let s = shield(dir.path());
    for i in 1..=5u16 {
        let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, i));
        s.record(ip, Category::HttpAuthFailure, REQ).await;
    }
    assert_eq!(s.check("2001:db8:1:2::ffff".parse().unwrap()), Some(418), "same /64");
    assert_eq!(s.check("2001:db8:1:3::1".parse().unwrap()), None, "other /64");
    assert_eq!(source_of("::ffff:192.0.2.1".parse().unwrap(), 64), "192.0.2.1".parse::<IpAddr>().unwrap());
}

#[tokio::test]
async fn bans_persist_and_unban_sticks() {
    let dir = tempfile::tempdir().unwrap();
    let ip: IpAddr = "198.51.100.10".parse().unwrap();
    {
        let s = shield(dir.path());
        for _ in 0..5 {
            s.record(ip, Category::HttpAuthFailure, REQ).await;
        }
        // The store write is spawned: wait until it landed and its task let go of the store
        // (the embedded store opens exclusively).
        let mut landed = false;
        for _ in 0..100 {
            if !s.store.bans().await.unwrap().is_empty() && Arc::strong_count(&s.store) == 1 {
                landed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(landed, "the ban never reached the store (or its writer kept the store)");
    }
    let s = shield(dir.path());
    s.load().await;
    assert_eq!(s.check(ip), Some(418), "ban survives a restart");
    assert_eq!(s.list().len(), 1);
    assert!(s.unban(ip).await);
    assert_eq!(s.check(ip), None);
    drop(s);
    let s = shield(dir.path());
    s.load().await;
    assert_eq!(s.check(ip), None, "unban survives a restart");
}

#[test]
fn networks_match_by_prefix() {
    assert!(in_network("10.1.2.3".parse().unwrap(), "10.1.0.0".parse().unwrap(), 16));
    assert!(!in_network("10.2.2.3".parse().unwrap(), "10.1.0.0".parse().unwrap(), 16));
    assert!(in_network("2001:db8::1".parse().unwrap(), "2001:db8::".parse().unwrap(), 32));
    assert!(!in_network("10.1.2.3".parse().unwrap(), "2001:db8::".parse().unwrap(), 0), "families never mix");
}

#[tokio::test]
async fn a_spray_of_fresh_sources_stays_under_the_cap_and_never_unbans() {
    let dir = tempfile::tempdir().unwrap();
    let s = shield(dir.path());
    let victim: IpAddr = "198.51.100.99".parse().unwrap();
    for _ in 0..5 {
        s.record(victim, Category::HttpAuthFailure, REQ).await;
    }
    assert_eq!(s.check(victim), Some(418));
    // One failure each from far more distinct sources than the counter table holds.
    for i in 0..(MAX_COUNTED_SOURCES as u32 + 5_000) {
        let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        s.record(ip, Category::HttpAuthFailure, REQ).await;
    }
    assert!(s.counters.lock().unwrap().len() <= MAX_COUNTED_SOURCES, "counter table is capped");
    assert_eq!(s.check(victim), Some(418), "evicting counters never lifts a ban");
}

#[tokio::test(start_paused = true)]
async fn a_ban_line_keeps_injected_request_text_escaped_inside_its_quoted_fields() {
    let dir = tempfile::tempdir().unwrap();
    let s = shield(dir.path());
    let ip: IpAddr = "198.51.100.30".parse().unwrap();
    let forged = "\", host: \"x\"\r\n2026/01/01 00:00:00 [emerg] 1#0: 6.6.6.6 will be blocked for 30 minutes\x1b[2J\\";
    let path = format!("/login{forged}");
    let host = format!("edge.test{forged}");
    let request = RequestLine { method: "GET\"", path: &path, protocol: "HTTP/1.1", host: &host };
    for _ in 0..5 {
        s.record(ip, Category::HttpAuthFailure, request).await;
    }
    let log = blocking_log_in(dir.path()).await;
    assert_eq!(log.lines().count(), 1, "{log}");
    assert_eq!(log.matches(" will be blocked for ").count(), 3, "the real one and the escaped copies in path and host: {log}");
    let escaped_forged =
        "\\x22, host: \\x22x\\x22\\x0D\\x0A2026/01/01 00:00:00 [emerg] 1#0: 6.6.6.6 will be blocked for 30 minutes\\x1B[2J\\x5C";
    let want = format!(
        "#0: 198.51.100.30 will be blocked for 30 minutes for exceeding retry limit., client: 198.51.100.30, server: edge.test, request: \"GET\\x22 /login{escaped_forged} HTTP/1.1\", host: \"edge.test{escaped_forged}\"\n"
    );
    assert!(log.ends_with(&want), "{log}\nwant: {want}");
    // What the stock fail2ban filter relies on: `request: "[^"]*", host: "[^"]*"` up to the end.
    let after = log.split_once("request: \"").unwrap().1;
    let (request_field, rest) = after.split_once('"').unwrap();
    assert!(request_field.ends_with(" HTTP/1.1"), "{request_field}");
    let host_field = rest.strip_prefix(", host: \"").unwrap().strip_suffix("\"\n").unwrap();
    assert!(!host_field.contains('"'), "{host_field}");
}

/// The bus is sized for "a burst of a thousand bans between two runs of a subscriber"
/// (`event::BUS_CAPACITY`): every one of them must reach `blocking.log`, fail2ban's feed —
/// before the bus, the line was written by the ban itself and could not be lost.
#[tokio::test]
async fn a_burst_of_a_thousand_bans_reaches_blocking_log_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s = shield(dir.path());
    let bans = 1000u32;
    // One task bans them all before the subscriber runs again (as many connection tasks
    // banning between two of its turns would).
    for i in 0..bans {
        s.ban_manually(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)), Duration::from_secs(60));
    }
    let mut lines = 0;
    for _ in 0..2000 {
        lines = std::fs::read_to_string(dir.path().join("blocking.log")).unwrap_or_default().lines().count();
        if lines >= bans as usize {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(lines, bans as usize, "ban lines lost from blocking.log");
}
