//! The shield under concurrency (contract 8) and banned clients on the TLS listener
//! (contract 9). Scenarios rather than tables: each check is recorded as one case.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{Deployment, EXCHANGE, H2Request, Options, Report, TABLE, USER, Wire, h1, raw_exchange, send};
use crate::support::{Upstream, basic, eventually};

/// Every check of this module (for the inventory).
pub const CHECKS: &[&str] = &[
    "parallel-connections/at-most-5-validations",
    "parallel-connections/statuses-401-or-418",
    "parallel-connections/one-blocking-line",
    "parallel-connections/then-418",
    "parallel-connections/upstream-saw-nothing",
    "h2-streams/at-most-5-validations",
    "h2-streams/statuses-401-or-418",
    "h2-streams/one-blocking-line",
    "h2-streams/then-418",
    "h2-streams/upstream-saw-nothing",
    "banned-tls/handshake-completes",
    "banned-tls/http1-gets-418",
    "banned-tls/h2-gets-418",
    "banned-tls/upstream-saw-nothing",
    "banned-tls-close/closed-at-accept",
    "banned-tls-close/plain-still-418",
    "banned-tls-close/upstream-saw-nothing",
];

const BURST: usize = 40;

fn check(report: &mut Report, name: &str, ok: bool, got: String, expected: &str) {
    report.record(name, None, if ok { Ok(()) } else { Err(format!("got      {got}\n      expected {expected}")) });
}

/// A deployment whose Basic credentials are validated (slowly, always "invalid") by a
/// recording upstream, with the brute-force trigger at 5.
async fn validated_deployment() -> Result<(Deployment, Upstream), String> {
    let validator = Upstream::start("validator").await;
    let options = Options {
        shield: true,
        validate_url: Some(format!("http://{}/slow/300/status/401", validator.addr)),
        top: "[protection.categories.http-auth-failure]\ntrigger = 5\nwindow = \"60s\"\n".into(),
        ..Options::default()
    };
    match Deployment::start(&options).await {
        Ok(d) => Ok((d, validator)),
        Err(e) => {
            validator.stop();
            Err(e)
        }
    }
}

async fn one_status(addr: std::net::SocketAddr, path: &str, authorization: &str) -> u16 {
    let bytes = h1("GET", path, Some(super::EDGE_HOST), &[("Authorization", authorization)], b"");
    raw_exchange(addr, &bytes).await.responses.first().map_or(0, |r| r.status)
}

/// The checks after a burst of wrong passwords.
async fn after_burst(report: &mut Report, prefix: &str, d: &Deployment, validator: &Upstream, statuses: Vec<u16>) {
    let validations = validator.hits();
    check(report, &format!("{prefix}/at-most-5-validations"), validations <= 5, format!("{validations} validations"), "at most 5");
    let ok = statuses.len() == BURST && statuses.iter().all(|s| matches!(s, 401 | 418));
    check(report, &format!("{prefix}/statuses-401-or-418"), ok, format!("{statuses:?}"), "40 answers, each 401 or 418");
    eventually(Duration::from_secs(3), || !d.edge.log("blocking.log").is_empty()).await;
    // A negative check (no second line): give a duplicate 300 ms to be written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = d.edge.log("blocking.log");
    check(report, &format!("{prefix}/one-blocking-line"), log.lines().count() == 1, format!("{log:?}"), "exactly one line");
    let status = one_status(d.edge.http, "/public/after-burst", &basic(USER, "still-wrong")).await;
    check(report, &format!("{prefix}/then-418"), status == 418, status.to_string(), "418");
    let seen: Vec<String> = d.tomcat.seen.lock().unwrap().iter().map(|s| s.target.clone()).collect();
    check(report, &format!("{prefix}/upstream-saw-nothing"), seen.is_empty(), format!("{seen:?}"), "nothing");
}

fn fail_all(report: &mut Report, prefix: &str, why: &str) {
    for name in CHECKS.iter().filter(|c| c.starts_with(&format!("{prefix}/"))) {
        report.record(name, None, Err(format!("not run: {why}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_shield_parallel_connections() {
    let mut report = Report::new("shield (parallel connections)");
    match validated_deployment().await {
        Ok((d, validator)) => {
            let addr = d.edge.http;
            let burst = async {
                let tasks: Vec<_> = (0..BURST)
                    .map(|i| {
                        tokio::spawn(async move {
                            one_status(addr, &format!("/finesse/api/b{i}"), &basic(&format!("agent{i}"), &format!("guess{i}"))).await
                        })
                    })
                    .collect();
                let mut statuses = Vec::new();
                for t in tasks {
                    statuses.push(t.await.unwrap_or(0));
                }
                statuses
            };
            match tokio::time::timeout(TABLE, burst).await {
                Ok(statuses) => after_burst(&mut report, "parallel-connections", &d, &validator, statuses).await,
                Err(_) => fail_all(&mut report, "parallel-connections", "timed out"),
            }
            d.stop().await;
            validator.stop();
        }
        Err(e) => fail_all(&mut report, "parallel-connections", &e),
    }
    report.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_shield_h2_streams() {
    let mut report = Report::new("shield (HTTP/2 streams)");
    match validated_deployment().await {
        Ok((d, validator)) => {
            let addr = d.edge.http;
            let burst = async {
                let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                let (send_request, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
                let driver = tokio::spawn(conn);
                let tasks: Vec<_> = (0..BURST)
                    .map(|i| {
                        let mut send_request = send_request.clone();
                        tokio::spawn(async move {
                            let request = hyper::Request::builder()
                                .uri(format!("http://{}/finesse/api/h{i}", super::EDGE_HOST))
                                .header("authorization", basic(&format!("agent{i}"), &format!("guess{i}")))
                                .body(Full::new(Bytes::new()))
                                .unwrap();
                            match tokio::time::timeout(EXCHANGE * 3, send_request.send_request(request)).await {
                                Ok(Ok(response)) => response.status().as_u16(),
                                _ => 0,
                            }
                        })
                    })
                    .collect();
                let mut statuses = Vec::new();
                for t in tasks {
                    statuses.push(t.await.unwrap_or(0));
                }
                driver.abort();
                Ok::<_, String>(statuses)
            };
            match tokio::time::timeout(TABLE, burst).await {
                Ok(Ok(statuses)) => after_burst(&mut report, "h2-streams", &d, &validator, statuses).await,
                Ok(Err(e)) => fail_all(&mut report, "h2-streams", &e),
                Err(_) => fail_all(&mut report, "h2-streams", "timed out"),
            }
            d.stop().await;
            validator.stop();
        }
        Err(e) => fail_all(&mut report, "h2-streams", &e),
    }
    report.finish();
}

/// Bans 127.0.0.1 through five wrong passwords on the plain listener.
async fn ban_myself(d: &Deployment) {
    for i in 0..5 {
        let _ = one_status(d.edge.http, &format!("/finesse/api/ban{i}"), &basic(USER, &format!("wrong{i}"))).await;
    }
    eventually(Duration::from_secs(3), || !d.edge.log("blocking.log").is_empty()).await;
}

fn public_get() -> H2Request {
    H2Request { method: "GET".into(), uri: format!("https://{}/public/banned", super::EDGE_HOST), headers: Vec::new(), body: Vec::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_shield_banned_tls() {
    let mut report = Report::new("shield (banned TLS client)");
    let options = Options { shield: true, https: true, ..Options::default() };
    match Deployment::start(&options).await {
        Ok(d) => {
            let run = async {
                ban_myself(&d).await;
                let https = d.edge.https.unwrap();
                let cert = d.edge.running().certificate.clone().unwrap();
                let handshake = super::tls_connect(https, &cert.cert, &[b"http/1.1".to_vec()]).await;
                check(
                    &mut report,
                    "banned-tls/handshake-completes",
                    handshake.is_ok(),
                    format!("{:?}", handshake.as_ref().err()),
                    "a completed handshake",
                );
                drop(handshake);
                let bytes = h1("GET", "/public/banned", Some(super::EDGE_HOST), &[], b"");
                let outcome = send(&d.edge, &Wire::Tls { alpn: vec![b"http/1.1".to_vec()], bytes }).await;
                let ok = outcome.responses.first().is_some_and(|r| r.status == 418);
                check(&mut report, "banned-tls/http1-gets-418", ok, outcome.to_string(), "418");
                let outcome = send(&d.edge, &Wire::TlsH2(public_get())).await;
                let ok = outcome.responses.first().is_some_and(|r| r.status == 418);
                check(&mut report, "banned-tls/h2-gets-418", ok, outcome.to_string(), "418");
                let seen: Vec<String> = d.tomcat.seen.lock().unwrap().iter().map(|s| s.target.clone()).collect();
                check(&mut report, "banned-tls/upstream-saw-nothing", seen.is_empty(), format!("{seen:?}"), "nothing");
            };
            if tokio::time::timeout(TABLE, run).await.is_err() {
                report.record("banned-tls/timeout", None, Err("timed out".into()));
            }
            d.stop().await;
        }
        Err(e) => fail_all(&mut report, "banned-tls", &e),
    }
    report.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_shield_banned_tls_close() {
    let mut report = Report::new("shield (banned_tls = close)");
    let options = Options { shield: true, https: true, top: "[protection]\nbanned_tls = \"close\"\n".into(), ..Options::default() };
    match Deployment::start(&options).await {
        Ok(d) => {
            let run = async {
                ban_myself(&d).await;
                let bytes = h1("GET", "/public/banned", Some(super::EDGE_HOST), &[], b"");
                let outcome = send(&d.edge, &Wire::Tls { alpn: vec![b"http/1.1".to_vec()], bytes }).await;
                check(
                    &mut report,
                    "banned-tls-close/closed-at-accept",
                    outcome.responses.is_empty(),
                    outcome.to_string(),
                    "no response (closed)",
                );
                let status = one_status(d.edge.http, "/public/banned-plain", "Basic eA==").await;
                check(&mut report, "banned-tls-close/plain-still-418", status == 418, status.to_string(), "418");
                let seen: Vec<String> = d.tomcat.seen.lock().unwrap().iter().map(|s| s.target.clone()).collect();
                check(&mut report, "banned-tls-close/upstream-saw-nothing", seen.is_empty(), format!("{seen:?}"), "nothing");
            };
            if tokio::time::timeout(TABLE, run).await.is_err() {
                report.record("banned-tls-close/timeout", None, Err("timed out".into()));
            }
            d.stop().await;
        }
        Err(e) => fail_all(&mut report, "banned-tls-close", &e),
    }
    report.finish();
}
