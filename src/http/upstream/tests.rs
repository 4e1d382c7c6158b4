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

/// With per-core workers each thread runs its own event loop: an idle connection goes back
/// to a request on the thread that opened it, and to another thread only when that thread
/// has none of its own.
#[test]
fn idle_connections_go_back_to_the_thread_that_opened_them_first() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = PoolConfig {
        servers: vec![UpstreamConfig { address: upstream.local_addr().unwrap().to_string(), weight: 1, max_conns: 0 }],
        tls: false,
        ca_file: None,
        connect_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(5),
        queue_timeout: Duration::from_millis(10),
        health_check: None,
    };
    let pool = Pool::new(Arc::from("svc"), &config, Arc::new(Metrics::new()), EventBus::new()).unwrap();
    let server = pool.servers[0].clone();
    let (pool, server) = (&pool, &server);
    let one_thread = || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (opened_a, a_opened) = std::sync::mpsc::channel();
    let (opened_b, b_opened) = std::sync::mpsc::channel();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let a = scope.spawn(move || {
            let runtime = one_thread();
            runtime.block_on(async {
                let conn = pool.connect(server).await.unwrap();
                wire::Recycle::recycle(&**server, conn);
            });
            opened_a.send(()).unwrap();
            b_opened.recv().unwrap();
            // The newest idle connection is B's; A still gets its own first.
            let first = runtime.block_on(async { server.take_idle() }).map(|(conn, _)| conn.home() == std::thread::current().id());
            let second = runtime.block_on(async { server.take_idle() }).map(|(conn, _)| conn.home() == std::thread::current().id());
            let third = runtime.block_on(async { server.take_idle() }).map(|(conn, _)| conn.home() == std::thread::current().id());
            done.send(()).unwrap();
            (first, second, third)
        });
        scope.spawn(move || {
            a_opened.recv().unwrap();
            let runtime = one_thread();
            runtime.block_on(async {
                let conn = pool.connect(server).await.unwrap();
                wire::Recycle::recycle(&**server, conn);
            });
            opened_b.send(()).unwrap();
            // B's event loop stays alive until A is done with B's connection.
            finished.recv().unwrap();
        });
        assert_eq!(a.join().unwrap(), (Some(true), Some(false), None), "own connection first, then another thread's, then none");
    });
}
