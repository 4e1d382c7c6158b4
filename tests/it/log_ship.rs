//! Log shipping against a real `rsyslogd` (Debian `rsyslog`, `rsyslog-gnutls`, `rsyslog-relp`):
//! TLS `imtcp` (anonymous and mutual TLS) and `imrelp` over TLS on loopback ports, each
//! writing what it receives to a file these tests read. Lines are made by requests through
//! the edge (one access-log line each, path `/r/<n>`).
//!
//! Covered: every line arrives in order with its RFC 5424 fields; a server stopped and
//! started again gets everything queued meanwhile; RELP with the server killed -9 mid-stream
//! loses nothing; an edge killed -9 with lines queued sends them all after its restart; a
//! wrong CA or a refused client certificate is a clear error with nothing delivered and no
//! crash (and the lines go once the certificate is fixed); a full queue keeps the oldest lines
//! and says so in error.log, status and metrics.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use crate::support::client::{get, h1};
use crate::support::{ADMIN_TOKEN, RunningEdge, TestEdge, Upstream, eventually};

mod rsyslog;

use rsyslog::{Listener, Pki, Rsyslog};

/// One message as rsyslog wrote it: `PRI TIMESTAMP HOST APP PROCID MSGID SD MSG`.
#[derive(Debug)]
struct Received {
    pri: String,
    host: String,
    app: String,
    msgid: String,
    sequence: u64,
    msg: String,
}

fn parse(line: &str) -> Option<Received> {
    let mut parts = line.splitn(7, ' ');
    let pri = parts.next()?.to_string();
    let _time = parts.next()?;
    let host = parts.next()?.to_string();
    let app = parts.next()?.to_string();
    let _procid = parts.next()?;
    let msgid = parts.next()?.to_string();
    let rest = parts.next()?;
    let sequence = rest.strip_prefix("[meta sequenceId=\"")?.split('"').next()?.parse().ok()?;
    let msg = rest.split_once("\"] ")?.1.to_string();
    Some(Received { pri, host, app, msgid, sequence, msg })
}

/// The `/r/<n>` numbers of the access lines received, in arrival order.
fn request_numbers(server: &Rsyslog) -> Vec<u64> {
    server
        .received()
        .iter()
        .filter_map(|l| parse(l))
        .filter(|r| r.msgid == "access")
        .filter_map(|r| {
            let path = match serde_json::from_str::<serde_json::Value>(&r.msg) {
                Ok(json) => json["path"].as_str()?.to_string(),
                Err(_) => r.msg.split(' ').nth(4)?.to_string(),
            };
            path.strip_prefix("/r/")?.parse().ok()
        })
        .collect()
}

/// How often each request number arrived.
fn counts(numbers: &[u64]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for n in numbers {
        *counts.entry(*n).or_default() += 1;
    }
    counts
}

/// Every sequenceId received, sorted and deduplicated: a gap is a lost message.
fn gaps(server: &Rsyslog) -> Vec<u64> {
    let mut seqs: Vec<u64> = server.received().iter().filter_map(|l| parse(l)).map(|r| r.sequence).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let (Some(first), Some(last)) = (seqs.first().copied(), seqs.last().copied()) else { return Vec::new() };
    (first..=last).filter(|s| seqs.binary_search(s).is_err()).collect()
}

fn ship_section(server: &Rsyslog, protocol: &str, ca: &Path, identity: Option<(&Path, &Path)>, extra: &str) -> String {
    let identity = identity
        .map(|(cert, key)| format!("client_cert = \"{}\"\nclient_key = \"{}\"\n", cert.display(), key.display()))
        .unwrap_or_default();
    format!(
        "[logging.ship]\naddress = \"{}\"\nprotocol = \"{protocol}\"\nserver_name = \"localhost\"\nca = \"{}\"\n{identity}{extra}\n",
        server.address,
        ca.display()
    )
}

async fn edge_shipping_to(up: &Upstream, ship: &str) -> RunningEdge {
    TestEdge::new().proxy("web", "/", &[(up.addr, 1, 0)], "").raw(ship).start().await
}

async fn requests(edge: &RunningEdge, range: std::ops::Range<u64>) {
    for i in range {
        assert_eq!(get(edge.http, &format!("/r/{i}")).await.status, 200);
    }
}

fn status(edge: &RunningEdge) -> portcullis::telemetry::ship::ShippingStatus {
    edge.running().runtime.shipping.as_ref().expect("shipping configured").status()
}

/// Waits until requests `0..n` all arrived (at least once each).
async fn all_arrive(server: &Rsyslog, n: u64, within: Duration) -> bool {
    eventually(within, || {
        let counts = counts(&request_numbers(server));
        (0..n).all(|i| counts.contains_key(&i))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_ships_every_line_in_order_and_what_was_queued_while_the_server_was_down() {
    if !rsyslog::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut server = Rsyslog::start(&dir.path().join("rs"), &pki, Listener::MutualTls);
    let up = Upstream::start("web").await;
    let ship = ship_section(&server, "tls", &pki.ca, Some((&pki.client_cert, &pki.client_key)), "");
    let edge = edge_shipping_to(&up, &ship).await;

    requests(&edge, 0..100).await;
    assert!(all_arrive(&server, 100, Duration::from_secs(20)).await, "{:?}\n{}", server.received(), edge.log("error.log"));
    let numbers = request_numbers(&server);
    assert_eq!(numbers, (0..100).collect::<Vec<_>>(), "in order, each once");
    let access: Vec<Received> = server.received().iter().filter_map(|l| parse(l)).filter(|r| r.msgid == "access").collect();
    for r in &access {
        assert_eq!((r.pri.as_str(), r.host.as_str(), r.app.as_str()), ("134", "localhost", "portcullis"), "{r:?}");
        assert!(r.msg.contains(" GET /r/") && r.msg.contains(" HTTP/1.1 200 "), "the access line is the MSG: {r:?}");
    }
    assert!(access.windows(2).all(|w| w[1].sequence > w[0].sequence), "sequenceIds rise");
    assert_eq!(gaps(&server), Vec::<u64>::new());
    let before = status(&edge);
    assert!(before.connected && before.sent >= 100, "{before:?}");

    // The server goes away; lines queue up on disk; it comes back; they all arrive.
    server.stop(false);
    assert!(eventually(Duration::from_secs(10), || !status(&edge).connected).await, "the edge noticed the server left");
    requests(&edge, 100..200).await;
    assert!(eventually(Duration::from_secs(5), || status(&edge).queued >= 100).await, "{:?}", status(&edge));
    let down = status(&edge);
    assert!(down.last_error.is_some() && down.queued_bytes > 0, "{down:?}");
    server.restart();
    assert!(all_arrive(&server, 200, Duration::from_secs(30)).await, "{:?}", status(&edge));
    assert_eq!(gaps(&server), Vec::<u64>::new(), "no message lost");
    assert!(eventually(Duration::from_secs(10), || status(&edge).queued == 0).await, "{:?}", status(&edge));
    let after = status(&edge);
    assert!(after.connected && after.reconnects >= 1 && after.last_error.is_none(), "{after:?}");
    let error_log = edge.log("error.log");
    assert!(error_log.contains("log shipping: connection to"), "{error_log}");
    assert!(error_log.contains("log shipping: connected to"), "{error_log}");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relp_loses_nothing_when_the_server_is_killed_mid_stream() {
    server_killed_mid_stream(Listener::Relp, "relp").await;
}

/// RFC 5425 has no acknowledgements; the edge keeps each batch until the connection has
/// stayed up for a second after it, so a receiver killed mid-stream loses nothing it had
/// not written within that second (rsyslog writes within milliseconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_loses_nothing_when_the_server_is_killed_mid_stream() {
    server_killed_mid_stream(Listener::MutualTls, "tls").await;
}

async fn server_killed_mid_stream(listener: Listener, protocol: &str) {
    if !rsyslog::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut server = Rsyslog::start(&dir.path().join("rs"), &pki, listener);
    let up = Upstream::start("web").await;
    let ship = ship_section(&server, protocol, &pki.ca, Some((&pki.client_cert, &pki.client_key)), "");
    let edge = edge_shipping_to(&up, &ship).await;
    const N: u64 = 600;
    let http = edge.http;
    let load = tokio::spawn(async move {
        for i in 0..N {
            assert_eq!(get(http, &format!("/r/{i}")).await.status, 200);
        }
    });
    assert!(eventually(Duration::from_secs(20), || request_numbers(&server).len() >= 150).await, "{}", edge.log("error.log"));
    server.stop(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    load.await.unwrap();
    assert!(all_arrive(&server, N, Duration::from_secs(40)).await, "{:?}\n{}", status(&edge), edge.log("error.log"));
    assert_eq!(gaps(&server), Vec::<u64>::new(), "no message lost");
    assert!(eventually(Duration::from_secs(10), || status(&edge).queued == 0).await, "{:?}", status(&edge));
    let after = status(&edge);
    assert!(after.reconnects >= 1, "{after:?}");
    if protocol == "relp" {
        assert!(after.acknowledged >= N, "{after:?}");
        let repeats = counts(&request_numbers(&server)).values().filter(|c| **c > 1).count();
        let window = portcullis::telemetry::ship::relp::WINDOW;
        assert!(repeats <= window, "at most one window sent twice: {repeats}");
    }
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_a_refused_client_certificate_is_a_clear_error_and_nothing_is_delivered() {
    if !rsyslog::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let server = Rsyslog::start(&dir.path().join("rs"), &pki, Listener::MutualTls);
    let up = Upstream::start("web").await;
    // The edge trusts another CA than the one that signed the server's certificate.
    let wrong_ca = edge_shipping_to(&up, &ship_section(&server, "tls", &pki.rogue_ca, Some((&pki.client_cert, &pki.client_key)), "")).await;
    // The edge presents a certificate the server does not accept (copied, to be fixed later).
    let (cert, key) = (dir.path().join("edge.pem"), dir.path().join("edge.key"));
    std::fs::copy(&pki.rogue_cert, &cert).unwrap();
    std::fs::copy(&pki.rogue_key, &key).unwrap();
    let refused = edge_shipping_to(&up, &ship_section(&server, "tls", &pki.ca, Some((&cert, &key)), "")).await;
    requests(&wrong_ca, 0..5).await;
    requests(&refused, 0..5).await;

    assert!(eventually(Duration::from_secs(10), || status(&wrong_ca).last_error.is_some()).await);
    let error = status(&wrong_ca).last_error.unwrap();
    assert!(error.contains("TLS handshake with") && error.contains("must chain to logging.ship.ca"), "{error}");
    assert!(wrong_ca.log_once("error.log", "log shipping: TLS handshake with").await.contains("UnknownIssuer"));
    assert!(eventually(Duration::from_secs(10), || status(&refused).last_error.is_some()).await);
    let error = status(&refused).last_error.unwrap();
    assert!(error.contains("refused our client certificate (logging.ship.client_cert)"), "{error}");
    assert!(refused.log("error.log").contains("log shipping: "), "{}", refused.log("error.log"));
    for edge in [&wrong_ca, &refused] {
        let s = status(edge);
        assert!(!s.connected && s.queued >= 5 && s.sent == 0, "{s:?}");
        assert_eq!(get(edge.http, "/r/alive").await.status, 200, "the edge serves on");
    }
    assert!(request_numbers(&server).is_empty(), "nothing delivered: {:?}", server.received());

    // The certificate is fixed: the queued lines go (the files are read on every attempt).
    std::fs::copy(&pki.client_cert, &cert).unwrap();
    std::fs::copy(&pki.client_key, &key).unwrap();
    assert!(all_arrive(&server, 5, Duration::from_secs(30)).await, "{:?}", status(&refused));
    wrong_ca.stop().await;
    refused.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_keeps_the_oldest_lines_and_says_so_in_error_log_status_and_metrics() {
    if !rsyslog::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut server = Rsyslog::start(&dir.path().join("rs"), &pki, Listener::Tls);
    server.stop(false);
    let up = Upstream::start("web").await;
    let ship = format!("[logging]\nformat = \"json\"\n{}", ship_section(&server, "tls", &pki.ca, None, "queue_max = \"64KiB\""));
    let edge = edge_shipping_to(&up, &ship).await;
    requests(&edge, 0..600).await;
    assert!(eventually(Duration::from_secs(10), || status(&edge).queue_full).await, "{:?}", status(&edge));
    let full = status(&edge);
    assert!(full.dropped > 0 && full.queued_bytes <= 64 * 1024, "{full:?}");
    assert!(edge.log("error.log").contains("log shipping: queue full (65536 bytes, logging.ship.queue_max)"), "{}", edge.log("error.log"));
    let auth = format!("Bearer {ADMIN_TOKEN}");
    // Lines keep being dropped meanwhile (the admin requests' own log lines, say): the metric
    // lies between the counts before and after the scrape.
    let before = status(&edge).dropped;
    let metrics = h1(edge.admin, "GET", "/metrics", &[("authorization", &auth)], Bytes::new()).await.body;
    let after = status(&edge).dropped;
    let metric: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_log_ship_dropped_total ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dropped metric: {metrics}"));
    assert!(before <= metric && metric <= after && metric > 0, "{before} <= {metric} <= {after}");
    assert!(metrics.contains("portcullis_log_ship_connected 0"), "{metrics}");
    let json = h1(edge.admin, "GET", "/api/v1/status", &[("authorization", &auth)], Bytes::new()).await.body;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["shipping"]["queue_full"], true, "{json}");
    assert_eq!(json["shipping"]["protocol"], "tls");

    server.restart();
    assert!(eventually(Duration::from_secs(30), || status(&edge).queued == 0).await, "{:?}", status(&edge));
    assert!(eventually(Duration::from_secs(10), || request_numbers(&server).len() > 100).await, "{:?}", server.received());
    let kept = request_numbers(&server);
    // The oldest lines were kept (JSON access lines), in order, up to where the queue filled.
    assert!(kept.len() > 100 && kept.len() < 600, "{}", kept.len());
    assert_eq!(kept, (0..kept.len() as u64).collect::<Vec<_>>());
    assert_eq!(gaps(&server), Vec::<u64>::new(), "dropped lines took no sequenceId");
    // The next line finds room again, and error.log says so.
    requests(&edge, 1000..1001).await;
    assert!(eventually(Duration::from_secs(10), || !status(&edge).queue_full).await);
    assert!(edge.log_once("error.log", "log shipping: the queue has room again").await.contains("has room again"));
    edge.stop().await;
}

pub mod kill9;
mod partition;

/// A TLS server (the test PKI's certificate) that completes every handshake, waits past the
/// edge's 300-ms probe, and closes without reading: it counts the connections it got.
async fn accept_and_drop_server(pki: &Pki) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use rustls_pki_types::pem::PemObject;
    let chain = vec![rustls_pki_types::CertificateDer::from_pem_file(&pki.server_cert).unwrap()];
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    drop(tls);
                }
            });
        }
    });
    (address, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_accepts_and_drops_every_connection_is_retried_with_a_growing_pause() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (address, accepted) = accept_and_drop_server(&pki).await;
    let up = Upstream::start("web").await;
    let ship = format!(
        "[logging.ship]\naddress = \"{address}\"\nprotocol = \"tls\"\nserver_name = \"localhost\"\nca = \"{}\"\n",
        pki.ca.display()
    );
    let edge = edge_shipping_to(&up, &ship).await;
    requests(&edge, 0..5).await;
    // Sessions of ~0.5 s; pauses of 0.1–0.2 s, then 0.2–0.4, 0.4–0.8, 0.8–1.6, 1.6–3.2: at
    // most 6 connections in 7 s. A pause reset after each session (the connection did come
    // up) would make 10 or more.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let connections = accepted.load(std::sync::atomic::Ordering::Relaxed);
    assert!((3..=6).contains(&connections), "{connections} connections in 7 s");
    let status = status(&edge);
    assert!(status.queued >= 5 && status.reconnects >= 2, "nothing delivered, the lines wait: {status:?}");
}
