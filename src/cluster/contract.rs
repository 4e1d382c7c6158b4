//! The state-store contract: one suite every [`StateStore`] must pass, run against the
//! embedded store (with a manual clock) and against a real Redis (with real time), so both
//! backends behave the same for everything above them.
//!
//! Times are short (hundreds of milliseconds) because Redis keeps its own clock; exact
//! window boundaries are checked separately against the embedded store's manual clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::{BanRecord, Change, MAX_KEY_BYTES, MAX_VALUE_BYTES, SetAdd, StateStore, StoreError};

/// Lets time pass for the store under test (a manual clock, or real sleeping).
pub(crate) type Advance = Arc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;
/// The store's idea of now (Unix ms).
pub(crate) type Now = Arc<dyn Fn() -> u64 + Send + Sync>;

pub(crate) async fn values_expire_after_their_ttl(s: &dyn StateStore, advance: &Advance) {
    s.set("token:a", b"alice", Some(Duration::from_millis(300))).await.unwrap();
    s.set("forever", b"x", None).await.unwrap();
    assert_eq!(s.get("token:a").await.unwrap().as_deref(), Some(&b"alice"[..]));
    advance(350).await;
    assert_eq!(s.get("token:a").await.unwrap(), None, "expired");
    assert!(s.get("forever").await.unwrap().is_some());
    s.purge_expired().await.unwrap();
    assert!(s.delete("forever").await.unwrap());
    assert!(!s.delete("forever").await.unwrap());
    assert_eq!(s.get("never-set").await.unwrap(), None);
}

pub(crate) async fn sliding_windows_count_what_is_inside(s: &dyn StateStore, advance: &Advance, now: &Now) {
    let w = Duration::from_millis(600);
    let before = now();
    assert_eq!(s.record_event("fail:1.2.3.4", w).await.unwrap(), 1);
    let oldest = s.oldest_event("fail:1.2.3.4", w).await.unwrap().expect("one event");
    assert!(oldest >= before.saturating_sub(50) && oldest <= now() + 50, "{before} <= {oldest} <= now");
    advance(300).await;
    assert_eq!(s.record_event("fail:1.2.3.4", w).await.unwrap(), 2);
    assert_eq!(s.count_events("fail:1.2.3.4", w).await.unwrap(), 2);
    advance(400).await;
    // The first event is 700 ms old: out of the 600 ms window; the second is 400 ms old.
    assert_eq!(s.count_events("fail:1.2.3.4", w).await.unwrap(), 1);
    assert_eq!(s.record_event("fail:1.2.3.4", w).await.unwrap(), 2);
    assert_eq!(s.count_events("fail:other", w).await.unwrap(), 0);
    // Events counted elsewhere while the store was away are merged with their own times.
    let t = now();
    assert_eq!(s.merge_event("fail:merged", t.saturating_sub(100), w).await.unwrap(), 1);
    assert_eq!(s.merge_event("fail:merged", t.saturating_sub(5_000), w).await.unwrap(), 1, "too old: not added");
    assert_eq!(s.record_event("fail:merged", w).await.unwrap(), 2);
    s.clear_events("fail:1.2.3.4").await.unwrap();
    assert_eq!(s.count_events("fail:1.2.3.4", w).await.unwrap(), 0, "cleared");
    assert_eq!(s.record_event("fail:1.2.3.4", w).await.unwrap(), 1, "a fresh start");
    assert_eq!(s.oldest_event("fail:other", w).await.unwrap(), None);
}

pub(crate) async fn admitted_events_stop_at_the_limit_and_refusals_are_not_counted(s: Arc<dyn StateStore>, advance: &Advance) {
    let w = Duration::from_millis(500);
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.admit_event("rate:partner", w, 5).await.unwrap() })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(admitted, 5, "exactly the limit, however the calls interleave");
    assert_eq!(s.count_events("rate:partner", w).await.unwrap(), 5, "refused events are not recorded");
    advance(600).await;
    assert!(s.admit_event("rate:partner", w, 5).await.unwrap(), "the window moved on: admitted again");
    assert!(!s.admit_event("rate:none", w, 0).await.unwrap(), "a limit of 0 admits nothing");
}

pub(crate) async fn capped_sets_refuse_members_beyond_the_cap(s: &dyn StateStore) {
    assert_eq!(s.set_add("users:partner", "a", 2).await.unwrap(), SetAdd::Added);
    assert_eq!(s.set_add("users:partner", "a", 2).await.unwrap(), SetAdd::Present);
    assert_eq!(s.set_add("users:partner", "b", 2).await.unwrap(), SetAdd::Added);
    assert_eq!(s.set_add("users:partner", "c", 2).await.unwrap(), SetAdd::Full);
    assert_eq!(s.set_add("users:partner2", "c", 2).await.unwrap(), SetAdd::Added);
    assert_eq!(s.set_members("users:partner").await.unwrap(), vec!["a", "b"]);
    assert!(s.set_remove("users:partner", "a").await.unwrap());
    assert!(!s.set_remove("users:partner", "a").await.unwrap());
    assert_eq!(s.set_add("users:partner", "c", 2).await.unwrap(), SetAdd::Added);
    assert!(s.set_members("nobody").await.unwrap().is_empty());
    // A counting set keeps the same rules.
    let idle = Duration::from_secs(3600);
    assert_eq!(s.count_member("federation:users:p", "sip:a@x", 2, idle).await.unwrap(), SetAdd::Added);
    assert_eq!(s.count_member("federation:users:p", "sip:a@x", 2, idle).await.unwrap(), SetAdd::Present);
    assert_eq!(s.count_member("federation:users:p", "sip:b@x", 2, idle).await.unwrap(), SetAdd::Added);
    assert_eq!(s.count_member("federation:users:p", "sip:c@x", 2, idle).await.unwrap(), SetAdd::Full);
    assert_eq!(s.set_members("federation:users:p").await.unwrap(), vec!["sip:a@x", "sip:b@x"]);
}

/// Counting sets are named by network input (a partner's invented domain): each is forgotten
/// once idle, and counting announces nothing (a flood of new users must not flood the peers).
pub(crate) async fn counting_sets_are_forgotten_once_idle(s: &dyn StateStore, advance: &Advance) {
    let idle = Duration::from_millis(400);
    let mut changes = s.subscribe();
    assert_eq!(s.count_member("federation:users:q", "sip:a@x", 5, idle).await.unwrap(), SetAdd::Added);
    s.set_add("kept", "m", 5).await.unwrap();
    advance(250).await;
    assert_eq!(s.count_member("federation:users:q", "sip:b@x", 5, idle).await.unwrap(), SetAdd::Added, "counting again…");
    advance(250).await;
    s.purge_expired().await.unwrap();
    assert_eq!(s.set_members("federation:users:q").await.unwrap(), vec!["sip:a@x", "sip:b@x"], "…keeps the set");
    advance(500).await;
    s.purge_expired().await.unwrap();
    assert!(s.set_members("federation:users:q").await.unwrap().is_empty(), "idle for longer than its time: forgotten");
    assert_eq!(s.set_members("kept").await.unwrap(), vec!["m"], "other sets stay");
    assert_eq!(s.count_member("federation:users:q", "sip:c@x", 1, idle).await.unwrap(), SetAdd::Added, "a fresh count");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut seen = Vec::new();
    while let Ok(change) = changes.try_recv() {
        seen.push(change);
    }
    assert!(!seen.iter().any(|c| matches!(c, Change::SetChanged(k) if k.starts_with("federation:users:"))), "{seen:?}");
}

pub(crate) async fn bans_expire_at_their_end_and_notify(s: &dyn StateStore, advance: &Advance, now: &Now) {
    let mut changes = s.subscribe();
    let start = now();
    let record = |subject: &str, until_ms| BanRecord {
        subject: subject.into(),
        category: "http-auth-failure".into(),
        since_ms: start,
        until_ms,
        reason: "5 failures".into(),
    };
    s.ban(record("203.0.113.7", start + 400)).await.unwrap();
    s.ban(record("2001:db8::", start + 60_000)).await.unwrap();
    assert_eq!(changes.recv().await.unwrap(), Change::Banned("203.0.113.7".into()));
    let ban = s.ban_lookup("203.0.113.7").await.unwrap().expect("banned");
    assert_eq!((ban.category.as_str(), ban.until_ms, ban.reason.as_str()), ("http-auth-failure", start + 400, "5 failures"));
    let mut all: Vec<String> = s.bans().await.unwrap().into_iter().map(|b| b.subject).collect();
    all.sort();
    assert_eq!(all, vec!["2001:db8::", "203.0.113.7"]);
    advance(450).await;
    assert_eq!(s.ban_lookup("203.0.113.7").await.unwrap(), None, "expired at its end");
    assert_eq!(s.bans().await.unwrap().len(), 1);
    assert!(s.unban("2001:db8::").await.unwrap());
    assert!(!s.unban("2001:db8::").await.unwrap_or(false));
    assert!(s.bans().await.unwrap().is_empty());
    let mut seen = Vec::new();
    while let Ok(change) = changes.try_recv() {
        seen.push(change);
    }
    assert!(seen.contains(&Change::Unbanned("2001:db8::".into())), "{seen:?}");
}

pub(crate) async fn oversized_input_is_refused(s: &dyn StateStore) {
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    assert!(matches!(s.set(&long, b"", None).await, Err(StoreError::TooLarge("key"))));
    assert!(matches!(s.record_event(&long, Duration::from_secs(1)).await, Err(StoreError::TooLarge("key"))));
    assert!(matches!(s.set("k", &vec![0; MAX_VALUE_BYTES + 1], None).await, Err(StoreError::TooLarge("value"))));
}

pub(crate) async fn concurrent_events_are_all_counted(s: Arc<dyn StateStore>) {
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.record_event("burst", Duration::from_secs(60)).await.unwrap() })
        })
        .collect();
    let mut seen: Vec<u64> = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=20).collect::<Vec<u64>>(), "each increment is atomic");
}

pub(crate) async fn a_dump_restores_into_an_empty_store(s: &dyn StateStore, empty: &dyn StateStore, now: &Now) {
    s.set("token:x", b"one", Some(Duration::from_secs(600))).await.unwrap();
    s.set("forever", b"two", None).await.unwrap();
    s.set_add("protect:exemptions", "10.0.0.0/8|http-auth-failure", 10).await.unwrap();
    let start = now();
    s.ban(BanRecord {
        subject: "192.0.2.1".into(),
        category: "manual".into(),
        since_ms: start,
        until_ms: start + 600_000,
        reason: String::new(),
    })
    .await
    .unwrap();
    s.record_event("fail:x", Duration::from_secs(60)).await.unwrap();
    let dump = s.dump().await.unwrap();
    assert_eq!(dump.values.iter().map(|v| v.0.as_str()).collect::<Vec<_>>(), ["forever", "token:x"]);
    assert!(dump.values[1].2.is_some_and(|at| at > start + 590_000), "absolute expiry kept: {:?}", dump.values[1]);
    assert_eq!(dump.sets, vec![("protect:exemptions".to_string(), vec!["10.0.0.0/8|http-auth-failure".to_string()])]);
    assert_eq!(dump.bans.len(), 1);
    assert_eq!(empty.restore(dump.clone()).await.unwrap(), 4);
    assert_eq!(empty.get("token:x").await.unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(empty.set_members("protect:exemptions").await.unwrap().len(), 1);
    assert!(empty.ban_lookup("192.0.2.1").await.unwrap().is_some());
    assert_eq!(empty.dump().await.unwrap().values.len(), 2);
}

/// Runs the whole contract on stores made by `fresh` (one new, empty store per part).
pub(crate) async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = (Arc<dyn StateStore>, Advance, Now)>,
{
    let (s, advance, _) = fresh().await;
    values_expire_after_their_ttl(&*s, &advance).await;
    let (s, advance, now) = fresh().await;
    sliding_windows_count_what_is_inside(&*s, &advance, &now).await;
    let (s, _, _) = fresh().await;
    capped_sets_refuse_members_beyond_the_cap(&*s).await;
    let (s, advance, _) = fresh().await;
    counting_sets_are_forgotten_once_idle(&*s, &advance).await;
    let (s, advance, _) = fresh().await;
    admitted_events_stop_at_the_limit_and_refusals_are_not_counted(s, &advance).await;
    let (s, advance, now) = fresh().await;
    bans_expire_at_their_end_and_notify(&*s, &advance, &now).await;
    let (s, _, _) = fresh().await;
    oversized_input_is_refused(&*s).await;
    let (s, _, _) = fresh().await;
    concurrent_events_are_all_counted(s).await;
}
