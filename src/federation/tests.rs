//! The federation policy on a real embedded store (and, for the cluster, two peers on a real
//! `redis-server`): lists, throttle, watch list by distinct users and by error share, run-time
//! list changes with their events, and certificate names.

use std::time::Duration;

use super::*;
use crate::cluster::embedded::EmbeddedStore;
use crate::config::sip::AllowedPartner;

use crate::cluster::redis::tests::external;

fn config(discovery: bool) -> FederationConfig {
    FederationConfig {
        discovery,
        discovered_rate: 20,
        max_distinct_users: 3,
        error_share: 0.5,
        error_min_sample: 4,
        allow: vec![AllowedPartner { domain: "partner.example".into(), edge: Some("sip.partner.example".into()) }],
        block: vec!["spam.example".into(), "both.example".into()],
    }
}

fn federation_on(store: Arc<dyn StateStore>, discovery: bool) -> (Federation, EventBus) {
    let events = EventBus::new();
    (Federation::new(config(discovery), vec!["corp.example".into()], store, events.clone()), events)
}

/// The events published so far (waits briefly for none more).
async fn events_so_far(subscriber: &mut crate::event::Subscriber) -> Vec<Event> {
    let mut events = Vec::new();
    while let Ok(Some(crate::event::Received::Event(event))) = tokio::time::timeout(Duration::from_millis(20), subscriber.next()).await {
        events.push((*event).clone());
    }
    events
}

fn embedded() -> (Arc<dyn StateStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Arc::new(EmbeddedStore::open(dir.path()).unwrap()), dir)
}

#[tokio::test]
async fn the_block_list_wins_and_local_and_allowed_domains_pass() {
    let (store, _dir) = embedded();
    let (f, _) = federation_on(store.clone(), true);
    assert_eq!(f.decide(Some("SPAM.example"), None).await, Decision::Blocked);
    assert_eq!(f.decide(Some("spam.example."), None).await, Decision::Blocked, "a trailing dot is the same domain");
    assert_eq!(f.decide(Some("both.example"), None).await, Decision::Blocked, "on both lists: blocked");
    assert_eq!(f.decide(Some("corp.example"), None).await, Decision::Local);
    assert_eq!(f.decide(Some("partner.example"), None).await, Decision::Allowed);
    assert_eq!(f.decide(None, None).await, Decision::Refused, "no From host: not accepted");
    assert_eq!(f.decide(Some(&"a".repeat(300)), None).await, Decision::Refused, "longer than 256: not a domain");
    assert_eq!(f.decide(Some("bad domain!"), None).await, Decision::Refused);
    let (off, _) = federation_on(store, false);
    assert_eq!(off.decide(Some("stranger.example"), None).await, Decision::Refused, "discovery off");
}

#[tokio::test(start_paused = true)]
async fn a_discovered_domain_is_throttled_to_its_rate_with_a_burst_of_the_rate() {
    let (store, _dir) = embedded();
    let (f, _) = federation_on(store, true);
    let mut passed = 0;
    for _ in 0..100 {
        passed += usize::from(f.decide(Some("new.example"), None).await == Decision::Discovered);
    }
    assert_eq!(passed, 20, "a burst of the rate");
    assert_eq!(f.decide(Some("new.example"), None).await, Decision::Throttled { retry_after_secs: 1 });
    assert_eq!(f.decide(Some("other.example"), None).await, Decision::Discovered, "per domain");
    tokio::time::advance(Duration::from_secs(1)).await;
    let mut passed = 0;
    for _ in 0..100 {
        passed += usize::from(f.decide(Some("new.example"), None).await == Decision::Discovered);
    }
    assert_eq!(passed, 20, "one second later, another second's worth");
    for _ in 0..1000 {
        assert_eq!(f.decide(Some("partner.example"), None).await, Decision::Allowed, "allow-listed partners are never throttled");
    }
    let view = f.domains(10).await;
    let new = view.iter().find(|d| d.domain == "new.example").unwrap();
    assert_eq!((new.requests, new.throttled, new.state), (201, 161, "discovered"));
}

#[tokio::test]
async fn more_distinct_users_than_the_cap_puts_the_domain_on_the_watch_list_and_refuses_every_user() {
    let (store, _dir) = embedded();
    let (f, events) = federation_on(store.clone(), true);
    let mut seen = events.subscribe();
    for user in ["sip:a@corp.example", "sip:B@corp.example;transport=tcp", "sip:c@corp.example"] {
        assert_eq!(f.decide(Some("spray.example"), Some(user)).await, Decision::Discovered, "{user}");
    }
    assert_eq!(f.decide(Some("spray.example"), Some("sip:a@corp.example;x=1")).await, Decision::Discovered, "parameters do not count");
    assert_eq!(f.decide(Some("spray.example"), Some("sip:d@corp.example")).await, Decision::Watched, "the fourth distinct user");
    assert_eq!(f.decide(Some("spray.example"), Some("sip:a@corp.example")).await, Decision::Watched, "already-seen users too");
    assert_eq!(events_so_far(&mut seen).await, [Event::WatchListed { domain: "spray.example".into(), reason: "distinct-users".into() }]);
    assert_eq!(
        f.watch_list().iter().map(|w| (w.domain.as_str(), w.reason)).collect::<Vec<_>>(),
        [("spray.example", WatchReason::DistinctUsers)]
    );
    let view = f.domains(10).await;
    assert_eq!((view[0].state, view[0].distinct_users), ("watched", 3));

    // Another peer of the same store (a restart) knows the watch list.
    let (restarted, _) = federation_on(store, true);
    restarted.load().await.unwrap();
    assert_eq!(restarted.decide(Some("spray.example"), Some("sip:a@corp.example")).await, Decision::Watched);

    // Cleared: a fresh start, users forgotten.
    assert!(f.clear("spray.example").await.unwrap());
    assert!(!f.clear("spray.example").await.unwrap(), "not on the watch list any more");
    for user in ["sip:x@corp.example", "sip:y@corp.example", "sip:z@corp.example"] {
        assert_eq!(f.decide(Some("spray.example"), Some(user)).await, Decision::Discovered, "{user}");
    }
}

#[tokio::test]
async fn a_high_share_of_not_found_finals_flags_the_domain_and_throttles_it_to_one_request_a_second() {
    let (store, _dir) = embedded();
    let (f, _) = federation_on(store, true);
    let f = Arc::new(f);
    for status in [404, 200, 480] {
        f.note_final(Some("scanner.example"), status);
    }
    f.note_final(Some("partner.example"), 404); // allow-listed: never flagged
    f.note_final(Some("corp.example"), 404); // local: not a partner
    assert!(f.watch_list().is_empty(), "3 finals: below the minimum sample of 4");
    f.note_final(Some("scanner.example"), 604);
    // 3 errors of 4 finals > 0.5.
    let watch = f.watch_list();
    assert_eq!(watch.iter().map(|w| (w.domain.as_str(), w.reason)).collect::<Vec<_>>(), [("scanner.example", WatchReason::ErrorShare)]);
    assert_eq!(f.decide(Some("scanner.example"), Some("sip:a@corp.example")).await, Decision::Discovered);
    assert_eq!(f.decide(Some("scanner.example"), Some("sip:a@corp.example")).await, Decision::Throttled { retry_after_secs: 1 });
    let view = f.domains(10).await;
    let row = view.iter().find(|d| d.domain == "scanner.example").unwrap();
    assert_eq!(row.state, "flagged");
    assert_eq!((row.responses.success, row.responses.client_error, row.responses.global_failure, row.errors), (1, 2, 1, 3));
    assert!(view.iter().all(|d| d.domain != "corp.example"), "local domains are not partners");

    // A low share never flags.
    for status in [200, 200, 404, 200, 200, 486] {
        f.note_final(Some("fine.example"), status);
    }
    assert!(f.watch_list().iter().all(|w| w.domain != "fine.example"));
}

#[tokio::test]
async fn run_time_list_changes_are_kept_in_the_store_checked_and_announced() {
    let (store, _dir) = embedded();
    let (f, events) = federation_on(store.clone(), false);
    let mut seen = events.subscribe();
    assert_eq!(f.decide(Some("new-partner.example"), None).await, Decision::Refused);
    f.allow("New-Partner.Example", Some("edge.new-partner.example")).await.unwrap();
    assert_eq!(f.decide(Some("new-partner.example"), None).await, Decision::Allowed);
    assert!(f.certificate_speaks_for(&["edge.new-partner.example".to_string()], "new-partner.example"), "the run-time edge FQDN");
    assert_eq!(
        events_so_far(&mut seen).await,
        [Event::FederationListChanged { list: "allow", domain: "new-partner.example".into(), added: true }]
    );
    assert!(matches!(f.allow("new-partner.example", None).await, Err(ListError::AlreadyListed { .. })), "unique");
    assert!(matches!(f.allow("partner.example", None).await, Err(ListError::InFile { .. })), "the file's entries change by reload");
    assert!(matches!(f.allow("not a domain", None).await, Err(ListError::InvalidDomain(_))));
    assert!(matches!(f.allow(&"a".repeat(257), None).await, Err(ListError::InvalidDomain(_))), "longer than 256");
    assert!(matches!(f.disallow("partner.example").await, Err(ListError::InFile { .. })));

    // Blocking an allowed domain: blocked, warning 14518.
    f.block("new-partner.example").await.unwrap();
    assert_eq!(f.decide(Some("new-partner.example"), None).await, Decision::Blocked);
    let events = events_so_far(&mut seen).await;
    assert!(
        events.contains(&Event::FederationListChanged { list: "both", domain: "new-partner.example".into(), added: true }),
        "{events:?}"
    );
    assert_eq!(
        f.block_list().iter().map(|e| (e.domain.as_str(), e.origin)).collect::<Vec<_>>(),
        [("spam.example", Origin::File), ("both.example", Origin::File), ("new-partner.example", Origin::Runtime)]
    );

    // A restarted peer on the same store applies the run-time lists.
    let (restarted, _) = federation_on(store, false);
    restarted.load().await.unwrap();
    assert_eq!(restarted.decide(Some("new-partner.example"), None).await, Decision::Blocked);
    assert!(f.unblock("new-partner.example").await.unwrap());
    assert!(!f.unblock("new-partner.example").await.unwrap(), "not on it any more");
    assert_eq!(f.decide(Some("new-partner.example"), None).await, Decision::Allowed);
    assert!(f.disallow("new-partner.example").await.unwrap());
    assert_eq!(f.decide(Some("new-partner.example"), None).await, Decision::Refused);
}

#[test]
fn a_certificate_speaks_for_its_names_a_one_label_wildcard_and_the_allow_entrys_edge() {
    let (store, _dir) = embedded();
    let (f, _) = federation_on(store, true);
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(f.certificate_speaks_for(&names(&["Partner.Example"]), "partner.example"));
    assert!(f.certificate_speaks_for(&names(&["sip.partner.example"]), "partner.example"), "the allow entry's edge FQDN");
    assert!(f.certificate_speaks_for(&names(&["*.example"]), "other.example"), "one-label wildcard");
    assert!(!f.certificate_speaks_for(&names(&["*.example"]), "a.other.example"), "only one label");
    assert!(!f.certificate_speaks_for(&names(&["evil.example"]), "partner.example"));
    assert!(!f.certificate_speaks_for(&names(&["sip.partner.example"]), "other.example"), "an edge name only for its own domain");
    assert!(!f.certificate_speaks_for(&[], "partner.example"));
}

#[test]
fn user_uris_are_counted_without_parameters_and_long_ones_by_their_digest() {
    assert_eq!(user_key("sip:Alice@Corp.example;transport=tcp?subject=x"), "sip:alice@corp.example");
    let long = format!("sip:{}@corp.example", "u".repeat(500));
    let other = format!("sip:{}v@corp.example", "u".repeat(500));
    assert!(user_key(&long).starts_with("sha256:") && user_key(&long).len() == 71);
    assert_ne!(user_key(&long), user_key(&other), "long URIs stay distinct");
}

/// Two peers of one Redis: a list change on one applies on the other within a second; the
/// throttle is one window for the cluster; the distinct-user cap counts both peers' users.
#[tokio::test]
async fn two_peers_on_redis_share_lists_throttle_and_distinct_users() {
    let Some(server) = external::RedisServer::start() else { return };
    let open = |peer: &str| -> Arc<dyn StateStore> { Arc::new(crate::cluster::redis::RedisStore::open(&server.url(), peer).unwrap()) };
    let (store_a, store_b) = (open("a"), open("b"));
    let (a, _) = federation_on(store_a.clone(), true);
    let (b, _) = federation_on(store_b.clone(), true);
    let (a, b) = (Arc::new(a), Arc::new(b));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let followers: Vec<_> = [(&a, &store_a), (&b, &store_b)]
        .into_iter()
        .map(|(peer, store)| {
            let mut stopped = stopped.clone();
            tokio::spawn(peer.clone().follow(store.subscribe(), async move {
                let _ = stopped.wait_for(|s| *s).await;
            }))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.subscribers(crate::cluster::redis::CHANGES_CHANNEL) < 2 {
        assert!(Instant::now() < deadline, "the peers never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    a.block("rogue.example").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    while b.decide(Some("rogue.example"), None).await != Decision::Blocked {
        assert!(Instant::now() < deadline, "peer b did not apply a's block within a second");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // One throttle window for both peers: 20 per second between them, not 20 each.
    let mut passed = 0;
    for i in 0..40 {
        let peer = if i % 2 == 0 { &a } else { &b };
        passed += usize::from(peer.decide(Some("burst.example"), None).await == Decision::Discovered);
    }
    assert_eq!(passed, 20, "the cluster's throttle admits the rate, exactly");

    // Distinct users add up across peers: cap 3.
    assert_eq!(a.decide(Some("spray.example"), Some("sip:1@corp.example")).await, Decision::Discovered);
    assert_eq!(b.decide(Some("spray.example"), Some("sip:2@corp.example")).await, Decision::Discovered);
    assert_eq!(a.decide(Some("spray.example"), Some("sip:3@corp.example")).await, Decision::Discovered);
    assert_eq!(b.decide(Some("spray.example"), Some("sip:4@corp.example")).await, Decision::Watched, "the fourth across peers");
    let deadline = Instant::now() + Duration::from_secs(1);
    while a.decide(Some("spray.example"), Some("sip:1@corp.example")).await != Decision::Watched {
        assert!(Instant::now() < deadline, "peer a did not apply b's watch-list entry within a second");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send_replace(true);
    for follower in followers {
        follower.await.unwrap();
    }
}

/// A partner whose certificate names another domain claims a victim's From: it is refused
/// before anything is counted against the victim (its throttle, its distinct users, its row),
/// and a local From does not let a certificate holder (even a blocked one) past the lists.
#[tokio::test(start_paused = true)]
async fn an_impostors_requests_count_nothing_against_the_domain_it_claims() {
    let (store, _dir) = embedded();
    let (f, _) = federation_on(store, true);
    let evil = ["evil.example".to_string()];
    for i in 0..50 {
        let user = format!("sip:u{i}@corp.example");
        assert_eq!(f.decide_presented(Some("victim.example"), Some(&user), Some(&evil), None).await, Decision::Refused, "{user}");
    }
    assert!(f.watch_list().is_empty(), "the victim is not watch-listed by an impostor");
    assert!(f.domains(10).await.iter().all(|d| d.domain != "victim.example"), "nor shown with the impostor's requests");
    let genuine = ["victim.example".to_string()];
    for _ in 0..20 {
        assert_eq!(
            f.decide_presented(Some("victim.example"), Some("sip:a@corp.example"), Some(&genuine), None).await,
            Decision::Discovered,
            "the victim's own throttle is untouched"
        );
    }
    assert_eq!(f.decide_presented(Some("corp.example"), None, Some(&evil), None).await, Decision::Refused, "a partner is no local user");
    let spam = ["spam.example".to_string()];
    assert_eq!(f.decide_presented(Some("corp.example"), None, Some(&spam), None).await, Decision::Refused, "nor a blocked one");
    assert_eq!(f.decide_presented(Some("corp.example"), None, None, None).await, Decision::Local, "a remote user without a certificate");
    assert_eq!(f.decide_presented(Some("spam.example"), None, Some(&evil), None).await, Decision::Blocked, "the block list still wins");
}

/// A domain flagged for its error share that then addresses more distinct users than the cap
/// is refused like any other (to already-seen users too), not left flagged at 1 request/s.
#[tokio::test(start_paused = true)]
async fn a_flagged_domain_over_the_user_cap_is_watched_for_its_users() {
    let (store, _dir) = embedded();
    let (f, _) = federation_on(store, true);
    let f = Arc::new(f);
    for status in [404, 404, 404, 404] {
        f.note_final(Some("scanner.example"), status);
    }
    tokio::task::yield_now().await;
    assert_eq!(f.watch_list().iter().map(|w| w.reason).collect::<Vec<_>>(), [WatchReason::ErrorShare]);
    for user in ["a", "b", "c"] {
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(f.decide(Some("scanner.example"), Some(&format!("sip:{user}@corp.example"))).await, Decision::Discovered);
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(f.decide(Some("scanner.example"), Some("sip:d@corp.example")).await, Decision::Watched, "the fourth user");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(f.decide(Some("scanner.example"), Some("sip:a@corp.example")).await, Decision::Watched, "already-seen users too");
    assert_eq!(f.watch_list().iter().map(|w| w.reason).collect::<Vec<_>>(), [WatchReason::DistinctUsers]);
    f.load().await.unwrap();
    assert_eq!(f.watch_list().iter().map(|w| w.reason).collect::<Vec<_>>(), [WatchReason::DistinctUsers], "in the store too");
}

/// Parameters inside the user part (a telephone-subscriber's `phone-context`, or any
/// `;x=` before the `@`) select different users: they must not collapse into one count.
#[test]
fn user_part_parameters_are_part_of_the_user() {
    let site = |s: &str| user_key(&format!("sip:1234;phone-context={s}@corp.example;user=phone"));
    assert_ne!(site("site-a"), site("site-b"), "two sites' extension 1234 are two users");
    assert_eq!(site("site-a"), "sip:1234;phone-context=site-a@corp.example");
    assert_ne!(user_key("sip:0;ext=1@corp.example"), user_key("sip:0;ext=2@corp.example"));
    assert_eq!(user_key("sip:corp.example;transport=tcp"), "sip:corp.example", "no user part: the host's parameters go");
}

/// With a shared store both windows keep at most `MAX_EVENTS_PER_WINDOW` events: a busy
/// partner's finals window is cut to its newest 10,000 while its errors reach back the whole
/// hour. The share must be taken over the same span, or a partner with a modest share of
/// not-found answers is flagged once it is busy.
#[tokio::test]
async fn a_busy_partners_error_share_is_taken_over_one_span() {
    let Some(server) = external::RedisServer::start() else { return };
    let store: Arc<dyn StateStore> = Arc::new(crate::cluster::redis::RedisStore::open(&server.url(), "a").unwrap());
    let (f, _) = federation_on(store, true);
    for _ in 0..6_000 {
        f.shared_finals("busy.example", true).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut last = (0, 0);
    for _ in 0..10_000 {
        last = f.shared_finals("busy.example", false).await.unwrap();
    }
    let (finals, errors) = last;
    assert_eq!(finals, 10_000);
    assert!(errors as f64 <= 0.5 * finals as f64, "the last 10,000 finals hold no error, yet {errors} were counted against them");
}

/// A spray of invented domains flagged for their errors fills the watch list to its cap; a
/// domain then over the distinct-user cap must still get on it (in the store, announced, every
/// further request refused), the oldest flagged entry making room.
#[tokio::test]
async fn a_full_watch_list_still_takes_a_domain_over_the_user_cap() {
    let Some(server) = external::RedisServer::start() else { return };
    let store: Arc<dyn StateStore> = Arc::new(crate::cluster::redis::RedisStore::open(&server.url(), "a").unwrap());
    for i in 0..MAX_RUNTIME_ENTRIES {
        let junk = WatchEntry { domain: format!("junk{i}.example"), reason: WatchReason::ErrorShare, since_ms: 1_000 + i as u64 };
        store.set_add(WATCH_KEY, &junk.member(), MAX_RUNTIME_ENTRIES).await.unwrap();
    }
    let (f, events) = federation_on(store, true);
    f.load().await.unwrap();
    let mut seen = events.subscribe();
    for user in ["a", "b", "c"] {
        assert_eq!(f.decide(Some("harvest.example"), Some(&format!("sip:{user}@corp.example"))).await, Decision::Discovered);
    }
    assert_eq!(f.decide(Some("harvest.example"), Some("sip:d@corp.example")).await, Decision::Watched);
    assert_eq!(events_so_far(&mut seen).await, [Event::WatchListed { domain: "harvest.example".into(), reason: "distinct-users".into() }]);
    f.load().await.unwrap();
    let watch = f.watch_list();
    assert_eq!(watch.len(), MAX_RUNTIME_ENTRIES);
    assert!(watch.iter().any(|w| w.domain == "harvest.example" && w.reason == WatchReason::DistinctUsers), "kept in the store");
    assert!(watch.iter().all(|w| w.domain != "junk0.example"), "the oldest flagged entry made room");
    assert_eq!(f.decide(Some("harvest.example"), Some("sip:a@corp.example")).await, Decision::Watched, "already-seen users too");
}

#[test]
fn one_source_speaks_for_at_most_16_discovered_domains_an_hour() {
    let (store, _dir) = embedded();
    let (f, _) = federation_on(store, true);
    let source: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    for n in 0..MAX_DISCOVERED_DOMAINS_PER_SOURCE {
        assert!(f.source_may_speak_for(source, Some(&format!("d{n}.example"))), "{n}");
    }
    assert!(f.source_may_speak_for(source, Some("d0.example")), "a domain it already spoke for");
    assert!(!f.source_may_speak_for(source, Some("d99.example")), "the 17th discovered domain");
    assert!(f.source_may_speak_for(source, Some("partner.example")), "allowed domains are not counted");
    assert!(f.source_may_speak_for(source, Some("corp.example")), "nor local ones");
    assert!(f.source_may_speak_for("203.0.113.10".parse().unwrap(), Some("d99.example")), "another source");
    let v6 = |a: &str| a.parse::<std::net::IpAddr>().unwrap();
    for n in 0..MAX_DISCOVERED_DOMAINS_PER_SOURCE {
        assert!(f.source_may_speak_for(v6(&format!("2001:db8::{n:x}")), Some(&format!("v{n}.example"))));
    }
    assert!(!f.source_may_speak_for(v6("2001:db8::ffff"), Some("v99.example")), "one IPv6 /64 is one source");
}
