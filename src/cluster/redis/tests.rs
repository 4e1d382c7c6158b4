//! The Redis store against a real `redis-server` started on a free loopback port: the shared
//! state-store contract, counting across two peers, change propagation between peers, and
//! fail-fast behaviour when Redis dies and recovery when it returns. Skipped with a message
//! when `redis-server` is missing (`PORTCULLIS_REQUIRE_REDIS=1`, set by `.ci/run`, fails instead).

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::cluster::contract::{self, Advance, Now};

/// The `redis-server` fixture and `PORTCULLIS_REQUIRE_*`, shared with the integration tests.
#[allow(dead_code, unreachable_pub, reason = "shared with the integration tests, which use more of it")]
#[path = "../../../tests/it/support/external.rs"]
pub(crate) mod external;

use external::RedisServer;

/// Empties the server between contract cases.
fn flush(server: &RedisServer) {
    let mut c = server.connection().unwrap();
    let () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
}

/// Waits (at most 5 s) until `n` stores are subscribed to the change channel, so a change
/// published next reaches them all.
async fn subscribed(server: &RedisServer, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.subscribers(CHANGES_CHANNEL) < n {
        assert!(tokio::time::Instant::now() < deadline, "{n} subscribers never showed up on {CHANGES_CHANNEL}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn real_time() -> (Advance, Now) {
    let advance: Advance = Arc::new(|ms| Box::pin(tokio::time::sleep(Duration::from_millis(ms))));
    (advance, crate::clock::system())
}

#[tokio::test]
async fn the_redis_store_keeps_the_state_store_contract() {
    let Some(server) = RedisServer::start() else { return };
    contract::run_all(|| {
        flush(&server);
        let store: Arc<dyn StateStore> = Arc::new(RedisStore::open(&server.url(), "peer-a").unwrap());
        let (advance, now) = real_time();
        async move { (store, advance, now) }
    })
    .await;
}

#[tokio::test]
async fn two_peers_count_one_window_and_see_each_others_changes() {
    let Some(server) = RedisServer::start() else { return };
    let a = RedisStore::open(&server.url(), "a").unwrap();
    let b = RedisStore::open(&server.url(), "b").unwrap();
    let mut seen_by_b = b.subscribe();
    subscribed(&server, 2).await;
    let w = Duration::from_secs(30);
    for expected in 1..=3 {
        assert_eq!(a.record_event("fail:198.51.100.7", w).await.unwrap(), expected);
    }
    assert_eq!(b.record_event("fail:198.51.100.7", w).await.unwrap(), 4, "one window for every peer");
    let ban =
        BanRecord { subject: "198.51.100.7".into(), category: "c".into(), since_ms: 0, until_ms: u64::MAX / 2, reason: String::new() };
    a.ban(ban).await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(1), seen_by_b.recv()).await.expect("within 1 s").unwrap();
    assert_eq!(change, Change::Banned("198.51.100.7".into()));
    assert!(b.ban_lookup("198.51.100.7").await.unwrap().is_some());
    a.set_add("protect:exemptions", "10.0.0.0/8|http-auth-failure", 10).await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(1), seen_by_b.recv()).await.expect("within 1 s").unwrap();
    assert_eq!(change, Change::SetChanged("protect:exemptions".into()));
    let mut seen_by_a = a.subscribe();
    b.unban("198.51.100.7").await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(1), seen_by_a.recv()).await.expect("within 1 s").unwrap();
    assert_eq!(change, Change::Unbanned("198.51.100.7".into()));
    assert!(a.shared() && a.healthy());
}

#[tokio::test]
async fn a_dead_redis_fails_fast_and_a_returning_one_is_used_again() {
    let Some(mut server) = RedisServer::start() else { return };
    let store = RedisStore::open(&server.url(), "a").unwrap();
    store.set("k", b"v", None).await.unwrap();
    server.stop();
    let started = tokio::time::Instant::now();
    assert!(store.get("k").await.is_err());
    assert!(started.elapsed() < Duration::from_millis(1500), "no long wait on a dead Redis: {:?}", started.elapsed());
    assert!(!store.healthy(), "degraded");
    let started = tokio::time::Instant::now();
    for _ in 0..100 {
        assert!(store.get("k").await.is_err());
    }
    assert!(started.elapsed() < Duration::from_millis(200), "the breaker answers at once: {:?}", started.elapsed());
    server.restart();
    let mut recovered = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if store.set("k2", b"v", None).await.is_ok() {
            recovered = true;
            break;
        }
    }
    assert!(recovered && store.healthy(), "used again once Redis is back");
}

#[tokio::test]
async fn a_dump_moves_between_the_embedded_store_and_redis_both_ways() {
    let Some(server) = RedisServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let embedded = crate::cluster::embedded::EmbeddedStore::open(dir.path()).unwrap();
    let redis = RedisStore::open(&server.url(), "a").unwrap();
    contract::a_dump_restores_into_an_empty_store(&embedded, &redis, &crate::clock::system()).await;
    flush(&server);
    let back = tempfile::tempdir().unwrap();
    let embedded_again = crate::cluster::embedded::EmbeddedStore::open(back.path()).unwrap();
    let dump = embedded.dump().await.unwrap();
    redis.restore(dump.clone()).await.unwrap();
    embedded_again.restore(redis.dump().await.unwrap()).await.unwrap();
    let again = embedded_again.dump().await.unwrap();
    assert_eq!(again.sets, dump.sets);
    assert_eq!(again.bans, dump.bans);
    assert_eq!(again.values.iter().map(|v| (&v.0, &v.1)).collect::<Vec<_>>(), dump.values.iter().map(|v| (&v.0, &v.1)).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_is_followed() {
    let Some(mut master) = RedisServer::start() else { return };
    let replica = RedisServer::options().args(&["--replicaof", "127.0.0.1", &master.port.to_string()]).start();
    // The replica is in sync before Sentinel looks (up to 20 s: a loaded machine is slow to
    // fork the master's snapshot).
    let mut synced = false;
    for _ in 0..400 {
        if let Ok(mut c) = replica.connection() {
            let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap_or_default();
            if info.contains("master_link_status:up") {
                synced = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(synced, "the replica synced:\n{}", replica.log());
    let sentinel = RedisServer::options()
        .config(&format!(
            "sentinel monitor pc 127.0.0.1 {} 1\nsentinel down-after-milliseconds pc 500\nsentinel failover-timeout pc 3000\n",
            master.port
        ))
        .args(&["--sentinel"])
        .start();
    let sentinel_port = sentinel.port;
    // Sentinel can only promote a replica it has heard of (from the master's INFO).
    let replica_port = replica.port.to_string();
    let knows_replica = || {
        let Ok(mut c) = sentinel.connection() else { return false };
        let replicas: Vec<Vec<String>> = redis::cmd("SENTINEL").arg("REPLICAS").arg("pc").query(&mut c).unwrap_or_default();
        replicas.iter().any(|r| r.windows(2).any(|kv| kv[0] == "port" && kv[1] == replica_port))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !knows_replica() {
        assert!(tokio::time::Instant::now() < deadline, "Sentinel never listed the replica:\n{}", sentinel.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let store = RedisStore::open(&format!("redis+sentinel://127.0.0.1:{sentinel_port}/pc/0"), "a").unwrap();
    let mut written = false;
    for _ in 0..60 {
        if store.set("k", b"before", None).await.is_ok() {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(written, "the master named by Sentinel took a write");
    let replicated = || {
        let Ok(mut c) = replica.connection() else { return false };
        redis::cmd("GET").arg("pc:k:k").query::<Option<String>>(&mut c).is_ok_and(|v| v.as_deref() == Some("before"))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !replicated() {
        assert!(tokio::time::Instant::now() < deadline, "the write never reached the replica");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    master.stop();
    let started = tokio::time::Instant::now();
    let mut moved = false;
    while started.elapsed() < Duration::from_secs(20) {
        if matches!(store.get("k").await, Ok(Some(v)) if v == b"before") && store.set("k2", b"after", None).await.is_ok() {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(moved, "the store follows the failover to the promoted replica");
    let mut c = replica.connection().unwrap();
    let promoted: Option<String> = redis::cmd("GET").arg("pc:k:k2").query(&mut c).unwrap();
    assert_eq!(promoted.as_deref(), Some("after"), "written to the promoted replica");
}

#[tokio::test]
async fn rediss_urls_speak_tls_and_trust_only_the_configured_ca() {
    if !external::redis_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "127.0.0.1");
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let (cert_file, key_file) = (cert_path.to_str().unwrap(), key_path.to_str().unwrap());
    let server = RedisServer::options()
        .tls()
        .args(&["--tls-cert-file", cert_file, "--tls-key-file", key_file, "--tls-ca-cert-file", cert_file, "--tls-auth-clients", "no"])
        .start();
    let port = server.tls_port.unwrap();
    let url = format!("rediss://127.0.0.1:{port}/0");
    let configured = crate::config::RedisUrl::parse(&url).unwrap();
    let a = RedisStore::open_configured(&configured, "a", Some(&cert_path)).unwrap();
    let b = RedisStore::open_configured(&configured, "b", Some(&cert_path)).unwrap();
    let mut seen_by_b = b.subscribe();
    subscribed(&server, 2).await;
    a.set("k", b"over tls", None).await.unwrap();
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"over tls"[..]));
    assert_eq!(a.record_event("w", Duration::from_secs(10)).await.unwrap(), 1);
    assert_eq!(b.record_event("w", Duration::from_secs(10)).await.unwrap(), 2);
    let change = tokio::time::timeout(Duration::from_secs(1), seen_by_b.recv()).await.expect("pub/sub over TLS").unwrap();
    assert_eq!(change, Change::KeyChanged("k".into()));
    // Without the CA, the server's certificate is not trusted: the store stays degraded.
    let untrusting = RedisStore::open(&url, "c").unwrap();
    assert!(untrusting.get("k").await.is_err());
    assert!(!untrusting.healthy());
}
