//! Tests of the embedded store against a real redb file in a temporary directory.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    fn new(start: u64) -> (ManualClock, Clock) {
        let now = Arc::new(AtomicU64::new(start));
        let reader = now.clone();
        (ManualClock(now), Arc::new(move || reader.load(Ordering::SeqCst)))
    }

    fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

fn store() -> (tempfile::TempDir, ManualClock, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    let (clock, reader) = ManualClock::new(1_000_000);
    let store = EmbeddedStore::open_with_clock(dir.path(), reader).unwrap();
    (dir, clock, store)
}

#[tokio::test]
async fn values_expire_after_their_ttl() {
    let (_dir, clock, s) = store();
    s.set("token:a", b"alice", Some(Duration::from_secs(10))).await.unwrap();
    s.set("forever", b"x", None).await.unwrap();
    assert_eq!(s.get("token:a").await.unwrap().as_deref(), Some(&b"alice"[..]));
    clock.advance(10_000);
    assert_eq!(s.get("token:a").await.unwrap(), None);
    assert!(s.get("forever").await.unwrap().is_some());
    assert_eq!(s.purge_expired().await.unwrap(), 1);
    assert!(s.delete("forever").await.unwrap());
    assert!(!s.delete("forever").await.unwrap());
}

#[tokio::test]
async fn sliding_window_counts_exactly() {
    let (_dir, clock, s) = store();
    let w = Duration::from_secs(30);
    assert_eq!(s.record_event("fail:1.2.3.4", w).await.unwrap(), 1);
    clock.advance(10_000);
    assert_eq!(s.record_event("fail:1.2.3.4", w).await.unwrap(), 2);
    clock.advance(19_999);
    assert_eq!(s.record_event("fail:1.2.3.4", w).await.unwrap(), 3);
    assert_eq!(s.oldest_event("fail:1.2.3.4", w).await.unwrap(), Some(1_000_000));
    clock.advance(1);
    // The first event is now exactly 30 s old: out of the window.
    assert_eq!(s.count_events("fail:1.2.3.4", w).await.unwrap(), 2);
    assert_eq!(s.count_events("fail:other", w).await.unwrap(), 0);
}

#[tokio::test]
async fn bans_persist_across_reopen_and_expire_absolutely() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, reader) = ManualClock::new(5_000);
    {
        let s = EmbeddedStore::open_with_clock(dir.path(), reader.clone()).unwrap();
        let mut changes = s.subscribe();
        s.ban(BanRecord {
            subject: "203.0.113.7".into(),
            category: "http-auth-failure".into(),
            since_ms: 5_000,
            until_ms: 65_000,
            reason: "5 failures".into(),
        })
        .await
        .unwrap();
        assert_eq!(changes.recv().await.unwrap(), Change::Banned("203.0.113.7".into()));
    }
    let s = EmbeddedStore::open_with_clock(dir.path(), reader).unwrap();
    let ban = s.ban_lookup("203.0.113.7").await.unwrap().expect("ban survives restart");
    assert_eq!(ban.until_ms, 65_000);
    assert_eq!(s.bans().await.unwrap().len(), 1);
    clock.advance(60_000);
    assert_eq!(s.ban_lookup("203.0.113.7").await.unwrap(), None);
    assert!(s.bans().await.unwrap().is_empty());
}

#[tokio::test]
async fn unban_notifies_and_oversized_input_is_refused() {
    let (_dir, _clock, s) = store();
    let mut changes = s.subscribe();
    s.ban(BanRecord { subject: "x".into(), category: "c".into(), since_ms: 0, until_ms: u64::MAX, reason: String::new() }).await.unwrap();
    assert!(s.unban("x").await.unwrap());
    assert_eq!(changes.recv().await.unwrap(), Change::Banned("x".into()));
    assert_eq!(changes.recv().await.unwrap(), Change::Unbanned("x".into()));
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    assert!(matches!(s.set(&long, b"", None).await, Err(StoreError::TooLarge("key"))));
    assert!(matches!(s.set("k", &vec![0; MAX_VALUE_BYTES + 1], None).await, Err(StoreError::TooLarge("value"))));
}

#[tokio::test]
async fn the_embedded_store_keeps_the_state_store_contract() {
    let root = tempfile::tempdir().unwrap();
    let next = std::sync::atomic::AtomicUsize::new(0);
    crate::cluster::contract::run_all(|| {
        let dir = root.path().join(next.fetch_add(1, Ordering::SeqCst).to_string());
        async move {
            let (clock, reader) = ManualClock::new(1_000_000);
            let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::open_with_clock(&dir, reader.clone()).unwrap());
            let clock = Arc::new(clock);
            let advance: crate::cluster::contract::Advance = Arc::new(move |ms| {
                clock.advance(ms);
                Box::pin(async {})
            });
            let now: crate::cluster::contract::Now = reader;
            (store, advance, now)
        }
    })
    .await;
}

#[tokio::test]
async fn a_dump_of_the_embedded_store_restores_into_another() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let from = EmbeddedStore::open(a.path()).unwrap();
    let into = EmbeddedStore::open(b.path()).unwrap();
    crate::cluster::contract::a_dump_restores_into_an_empty_store(&from, &into, &crate::clock::system()).await;
}
