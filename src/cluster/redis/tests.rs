//! The Redis store against a real `redis-server` started on a free loopback port: the shared
//! state-store contract, counting across two peers, change propagation between peers, and
//! fail-fast behaviour when Redis dies and recovery when it returns. Skipped with a message
//! when `redis-server` is missing (`PORTCULLIS_REQUIRE_REDIS=1`, set by `.ci/run`, fails instead).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::cluster::contract::{self, Advance, Now};

/// A private redis-server on 127.0.0.1 (no persistence), killed on drop.
struct Server {
    process: Child,
    port: u16,
}

impl Server {
    fn start_on(port: u16) -> Server {
        let process = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let server = Server { process, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on {port}");
    }

    fn start() -> Option<Server> {
        if Command::new("redis-server").arg("--version").output().is_err() {
            assert!(std::env::var_os("PORTCULLIS_REQUIRE_REDIS").is_none(), "redis-server is required");
            eprintln!("SKIPPED: redis-server not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Some(Server::start_on(port))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn flush(&self) {
        let mut c = redis::Client::open(self.url()).unwrap().get_connection().unwrap();
        let () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    }

    fn stop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn real_time() -> (Advance, Now) {
    let advance: Advance = Arc::new(|ms| Box::pin(tokio::time::sleep(Duration::from_millis(ms))));
    (advance, crate::clock::system())
}

#[tokio::test]
async fn the_redis_store_keeps_the_state_store_contract() {
    let Some(server) = Server::start() else { return };
    contract::run_all(|| {
        server.flush();
        let store: Arc<dyn StateStore> = Arc::new(RedisStore::open(&server.url(), "peer-a").unwrap());
        let (advance, now) = real_time();
        async move { (store, advance, now) }
    })
    .await;
}

#[tokio::test]
async fn two_peers_count_one_window_and_see_each_others_changes() {
    let Some(server) = Server::start() else { return };
    let a = RedisStore::open(&server.url(), "a").unwrap();
    let b = RedisStore::open(&server.url(), "b").unwrap();
    let mut seen_by_b = b.subscribe();
    tokio::time::sleep(Duration::from_millis(200)).await; // b's subscription is up
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
    let Some(mut server) = Server::start() else { return };
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
    let _back = Server::start_on(server.port);
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
    let Some(server) = Server::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let embedded = crate::cluster::embedded::EmbeddedStore::open(dir.path()).unwrap();
    let redis = RedisStore::open(&server.url(), "a").unwrap();
    contract::a_dump_restores_into_an_empty_store(&embedded, &redis, &crate::clock::system()).await;
    server.flush();
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
    let Some(mut master) = Server::start() else { return };
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (replica_port, sentinel_port) = (free(), free());
    let replica = Command::new("redis-server")
        .args(["--port", &replica_port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--replicaof", "127.0.0.1", &master.port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _replica = Server { process: replica, port: replica_port };
    // The replica is in sync before Sentinel looks.
    let replica_url = format!("redis://127.0.0.1:{replica_port}/0");
    let mut synced = false;
    for _ in 0..100 {
        if let Ok(mut c) = redis::Client::open(replica_url.as_str()).unwrap().get_connection() {
            let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap_or_default();
            if info.contains("master_link_status:up") {
                synced = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(synced, "the replica synced");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor pc 127.0.0.1 {} 1\nsentinel down-after-milliseconds pc 500\nsentinel failover-timeout pc 3000\n",
            master.port
        ),
    )
    .unwrap();
    let sentinel = Command::new("redis-server").arg(&conf).arg("--sentinel").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let _sentinel = Server { process: sentinel, port: sentinel_port };
    std::thread::sleep(Duration::from_millis(300));

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
    tokio::time::sleep(Duration::from_millis(300)).await; // replicated
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
    let mut c = redis::Client::open(replica_url.as_str()).unwrap().get_connection().unwrap();
    let promoted: Option<String> = redis::cmd("GET").arg("pc:k:k2").query(&mut c).unwrap();
    assert_eq!(promoted.as_deref(), Some("after"), "written to the promoted replica");
}

#[tokio::test]
async fn rediss_urls_speak_tls_and_trust_only_the_configured_ca() {
    if Server::start().is_none() {
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
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let process = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--tls-cert-file", cert_path.to_str().unwrap(), "--tls-key-file", key_path.to_str().unwrap()])
        .args(["--tls-ca-cert-file", cert_path.to_str().unwrap(), "--tls-auth-clients", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Server { process, port };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("rediss://127.0.0.1:{port}/0");
    let configured = crate::config::RedisUrl::parse(&url).unwrap();
    let a = RedisStore::open_configured(&configured, "a", Some(&cert_path)).unwrap();
    let b = RedisStore::open_configured(&configured, "b", Some(&cert_path)).unwrap();
    let mut seen_by_b = b.subscribe();
    tokio::time::sleep(Duration::from_millis(300)).await;
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
