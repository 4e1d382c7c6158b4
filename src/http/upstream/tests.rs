//! Unit tests of the upstream pool: weighted round robin, backups, slots, passive failure.

use super::*;
use crate::config::UpstreamConfig;

fn pool(weights: &[(u32, u32)]) -> Arc<Pool> {
    let config = PoolConfig {
        servers: weights
            .iter()
            .enumerate()
            .map(|(i, &(weight, max_conns))| UpstreamConfig { address: format!("127.0.0.1:{}", 1000 + i), weight, max_conns })
            .collect(),
        tls: false,
        ca_file: None,
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(1),
        queue_timeout: Duration::from_millis(10),
        health_check: None,
    };
    Pool::new(Arc::from("svc"), &config, Arc::new(Metrics::new()), EventBus::new()).unwrap()
}

#[tokio::test]
async fn smooth_weighted_round_robin_follows_weights() {
    let p = pool(&[(5, 0), (1, 0), (1, 0)]);
    let mut counts = [0; 3];
    let mut sequence = Vec::new();
    for _ in 0..70 {
        let first = p.candidates()[0];
        counts[first] += 1;
        sequence.push(first);
    }
    assert_eq!(counts, [50, 10, 10]);
    // Smooth: the heavy server never gets more than its share in a row.
    assert!(sequence.windows(6).all(|w| w.iter().filter(|&&i| i == 0).count() <= 5));
}

#[tokio::test]
async fn backups_come_last_and_only_when_available() {
    let p = pool(&[(0, 0), (1, 0), (2, 0)]);
    for _ in 0..10 {
        assert_eq!(*p.candidates().last().unwrap(), 0, "backup is always tried last");
    }
    p.servers[1].up.store(false, Ordering::Relaxed);
    p.servers[2].up.store(false, Ordering::Relaxed);
    assert_eq!(p.candidates(), vec![0], "only the backup when every primary is down");
    p.servers[0].up.store(false, Ordering::Relaxed);
    assert_eq!(p.candidates(), vec![0, 1, 2], "last resort: all servers");
}

#[tokio::test]
async fn full_servers_are_skipped_then_overload_is_reported() {
    let p = pool(&[(1, 1), (1, 1)]);
    let (a, _) = p.lease(&p.candidates()).await.unwrap();
    let (b, _) = p.lease(&p.candidates()).await.unwrap();
    assert_ne!(a.server(), b.server());
    assert!(matches!(p.lease(&p.candidates()).await, Err(ProxyError::Overloaded)));
    assert_eq!(p.servers[0].in_flight() + p.servers[1].in_flight(), 2);
    drop(a);
    assert!(p.lease(&p.candidates()).await.is_ok());
}

#[tokio::test]
async fn passive_failure_skips_a_server_for_a_while() {
    let p = pool(&[(1, 0), (1, 0)]);
    p.mark_failed(&p.servers[0], &ConnectError::Timeout);
    for _ in 0..4 {
        assert_eq!(p.candidates(), vec![1]);
    }
}
