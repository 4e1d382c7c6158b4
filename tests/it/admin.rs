//! The admin API over a real socket: token auth, health, metrics, status, reloads.

use bytes::Bytes;

use crate::support::client::{get, h1};
use crate::support::{ADMIN_TOKEN, TestEdge, Upstream};

fn bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

#[tokio::test]
async fn health_is_open_and_everything_else_needs_the_token() {
    let up = Upstream::start("a").await;
    let edge = TestEdge::new().proxy("app", "/", &[(up.addr, 1, 0)], "").start().await;
    let reply = get(edge.admin, "/health").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
    for path in ["/metrics", "/api/v1/status"] {
        let reply = get(edge.admin, path).await;
        assert_eq!(reply.status, 401, "{path}");
        assert_eq!(reply.headers["www-authenticate"], "Bearer realm=\"portcullis-admin\"");
        let wrong = h1(edge.admin, "GET", path, &[("authorization", "Bearer test-admin-token-124")], Bytes::new()).await;
        assert_eq!(wrong.status, 401, "{path}");
    }
    assert!(edge.log("error.log").contains("admin API authentication failed"));
    assert!(!edge.log("error.log").contains("test-admin-token-124"), "presented tokens are never logged");
    edge.stop().await;
}

#[tokio::test]
async fn metrics_and_status_describe_the_running_edge() {
    let up = Upstream::start("a").await;
    let edge = TestEdge::new().proxy("app", "/", &[(up.addr, 2, 7)], "").start().await;
    assert_eq!(get(edge.http, "/x").await.status, 200);
    let auth = bearer();
    let metrics = h1(edge.admin, "GET", "/metrics", &[("authorization", &auth)], Bytes::new()).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("portcullis_requests_total{service=\"app\",status=\"200\"} 1"), "{}", metrics.body);
    assert!(metrics.body.contains("portcullis_request_duration_seconds_bucket{le="), "{}", metrics.body);
    assert!(metrics.body.contains("portcullis_open_connections{listener=\"http\"}"), "{}", metrics.body);
    let status = h1(edge.admin, "GET", "/api/v1/status", &[("authorization", &auth)], Bytes::new()).await;
    let status: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(status["server"], "localhost");
    assert_eq!(status["listeners"][0]["address"], edge.http.to_string());
    assert_eq!(status["services"][0]["servers"][0]["address"], up.addr.to_string());
    assert_eq!(status["services"][0]["servers"][0]["weight"], 2);
    assert_eq!(status["services"][0]["servers"][0]["max_conns"], 7);
    assert_eq!(status["services"][0]["servers"][0]["up"], true);
    edge.stop().await;
}

#[tokio::test]
async fn a_broken_reload_keeps_the_running_config_and_a_good_one_applies() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let builder = TestEdge::new().proxy("app", "/", &[(a.addr, 1, 0)], "");
    let good_text = builder.config_text();
    let edge = builder.start().await;
    assert_eq!(get(edge.http, "/").await.body, "a 0");

    // Broken file: a route to a missing service and a bad duration.
    std::fs::write(
        &edge.config_path,
        good_text.replace("service = \"app\"", "service = \"ghost\"").replace("[server]\n", "[server]\nidle_timeout = \"forever\"\n"),
    )
    .unwrap();
    let auth = bearer();
    let reply = h1(edge.admin, "POST", "/api/v1/reload", &[("authorization", &auth)], Bytes::new()).await;
    assert_eq!(reply.status, 400);
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let errors: Vec<String> = body["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect();
    assert!(errors.iter().any(|e| e.starts_with("route[0].service: no service named \"ghost\"")), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("server.idle_timeout: \"forever\" is not a duration")), "{errors:?}");
    let log = edge.log_once("error.log", "configuration reload refused").await;
    assert!(log.contains("[error]") && log.contains("configuration reload refused, keeping the running configuration: "), "{log}");
    assert!(log.contains("route[0].service: no service named \"ghost\""), "{log}");
    assert_eq!(get(edge.http, "/").await.body, "a 0", "old configuration still serves");

    // Fixed file pointing at another upstream: applied without a restart (via the same path SIGHUP uses).
    std::fs::write(&edge.config_path, good_text.replace(&a.addr.to_string(), &b.addr.to_string())).unwrap();
    edge.running().reload().await.expect("reload applies");
    assert_eq!(get(edge.http, "/").await.body, "b 0");
    let metrics = edge.running().runtime.metrics.encode();
    assert!(metrics.contains("portcullis_config_reloads_total{result=\"error\"} 1"), "{metrics}");
    assert!(metrics.contains("portcullis_config_reloads_total{result=\"ok\"} 1"), "{metrics}");
    edge.stop().await;
}

/// A client that connects to the admin port and never sends a request — nothing at all, the
/// first bytes of the HTTP/2 preface, or the whole preface and no request — must not hold a
/// connection slot past `header_read_timeout`: 64 of them would otherwise lock the operator
/// out of the admin API for good (the listener closes every connection over its cap).
#[tokio::test]
async fn silent_admin_connections_do_not_lock_the_operator_out() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start("a").await;
    let edge = TestEdge::new().server("header_read_timeout = \"1s\"").proxy("app", "/", &[(up.addr, 1, 0)], "").start().await;
    let connect_from = |source: &str| {
        let source: std::net::IpAddr = source.parse().unwrap();
        async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind((source, 0).into()).unwrap();
            socket.connect(edge.admin).await.unwrap()
        }
    };
    let health = b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    // A flood from 127.0.0.2 fills the cap with connections that never send a request.
    let mut held = Vec::new();
    for n in 0..portcullis::admin::MAX_ADMIN_CONNECTIONS {
        let mut tcp = connect_from("127.0.0.2").await;
        match n % 3 {
            0 => {}
            1 => tcp.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap(),
            _ => tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap(),
        }
        held.push(tcp);
    }
    // While it holds the cap, another source is turned away at accept…
    let mut other = connect_from("127.0.0.3").await;
    let _ = other.write_all(health).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tokio::io::AsyncReadExt::read_to_end(&mut other, &mut answer)).await;
    assert!(answer.is_empty(), "the cap holds for other sources: {:?}", String::from_utf8_lossy(&answer));
    // …but the operator on the box (127.0.0.1) is served beside the cap.
    let reply = crate::support::raw_exchange(edge.admin, health, Duration::from_secs(3)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "the local operator is locked out: {reply:?}");
    // Well past the header-read timeout every silent connection is gone, and others get in.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut again = connect_from("127.0.0.3").await;
    again.write_all(health).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tokio::io::AsyncReadExt::read_to_end(&mut again, &mut answer)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "silent connections were not timed out: {answer:?}");
    drop(held);
    edge.stop().await;
}

/// A reload moves the admin API: the reload's own answer comes back on the old address, the
/// new address serves from then on and the old one stops accepting. An address that cannot
/// be bound refuses the reload (the running admin API stays), and so does HTTPS asked for
/// when no certificate was loaded at start. Removing `[admin]` stops it; a later reload
/// brings it back. With a certificate loaded, HTTPS is switched on in place, and off again
/// together with a move.
#[tokio::test]
async fn a_reload_moves_the_admin_api_and_switches_it_to_https() {
    use std::time::Duration;
    let up = Upstream::start("a").await;
    let builder = TestEdge::new().proxy("app", "/", &[(up.addr, 1, 0)], "");
    let text = builder.config_text();
    let mut edge = builder.start().await;
    let auth = bearer();
    let status = |admin: std::net::SocketAddr| {
        let auth = auth.clone();
        async move { h1(admin, "GET", "/api/v1/status", &[("authorization", &auth)], Bytes::new()).await.status }
    };
    let refused = |admin: std::net::SocketAddr| async move {
        crate::support::eventually(Duration::from_secs(5), || std::net::TcpStream::connect(admin).is_err()).await
    };
    let admin_at =
        |text: &str, address: &str| text.replace("[admin]\naddress = \"127.0.0.1:0\"", &format!("[admin]\naddress = \"{address}\""));
    assert_eq!(edge.reload_with(&admin_at(&text, "127.0.0.2:0")).await.status, 200, "answered on the old address");
    let moved = moved_to(&edge, 1).await;
    assert_eq!(moved.ip().to_string(), "127.0.0.2");
    assert_eq!(status(moved).await, 200, "the new address serves");
    assert!(refused(edge.admin).await, "the old address stops accepting");
    edge.admin = moved;

    // An address something else holds: refused as a whole, the running admin API stays.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap();
    let reply = edge.reload_with(&admin_at(&text, &taken.to_string())).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains(&format!("admin: cannot bind {taken}")), "{}", reply.body);
    assert_eq!(status(moved).await, 200, "the running admin API stays");

    // Plain HTTP on a non-loopback address: refused as at start (the token would cross the
    // network in the clear).
    let reply = edge.reload_with(&admin_at(&text, "0.0.0.0:0")).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("0.0.0.0:0 is not loopback and admin.tls is off"), "{}", reply.body);
    assert_eq!(status(moved).await, 200, "the running admin API stays");

    // HTTPS with no certificate loaded at start: refused.
    let https = admin_at(&text, "127.0.0.2:0").replace("address = \"127.0.0.2:0\"\n", "address = \"127.0.0.2:0\"\ntls = true\n");
    let reply = edge.reload_with(&https).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("admin.tls: HTTPS on the admin API needs a restart"), "{}", reply.body);
    assert_eq!(status(moved).await, 200, "still plain HTTP");

    // [admin] removed: the API stops (the old token with it); a later reload brings it back.
    let without = text.replace(&format!("[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n"), "");
    assert_ne!(without, text);
    assert_eq!(edge.reload_with(&without).await.status, 200);
    assert!(refused(moved).await, "no admin API any more");
    std::fs::write(&edge.config_path, &text).unwrap();
    edge.running().reload().await.expect("the reload (as SIGHUP does it) brings [admin] back");
    let back = moved_to(&edge, 2).await;
    assert_eq!(status(back).await, 200, "the admin API is back");
    edge.stop().await;

    // With a certificate loaded (an HTTPS listener), HTTPS is switched on at the same address…
    let builder = TestEdge::new().https().proxy("app", "/", &[(up.addr, 1, 0)], "");
    let text = builder.config_text();
    let mut edge = builder.start().await;
    let cert = edge.running().certificate.clone().unwrap().cert;
    let https = text.replace("[admin]\naddress = \"127.0.0.1:0\"\n", "[admin]\naddress = \"127.0.0.1:0\"\ntls = true\n");
    assert_eq!(edge.reload_with(&https).await.status, 200);
    let reply = crate::support::client::tls_get(edge.admin, &cert, &[b"http/1.1"], "/health").await;
    assert_eq!(reply.status, 200, "the admin API speaks HTTPS on the same address");
    let log = edge.log_once("error.log", "admin API switched").await;
    assert!(log.contains("admin API switched to HTTPS by the reload"), "{log}");
    // …and off together with a move: the new address speaks plain HTTP, the old one is gone.
    std::fs::write(&edge.config_path, admin_at(&text, "127.0.0.2:0")).unwrap();
    let reload = crate::support::client::tls_h1(edge.admin, &cert, "POST", "/api/v1/reload", &[("authorization", &auth)]).await;
    assert_eq!(reload.status, 200, "answered over HTTPS on the old address");
    let plain = moved_to(&edge, 1).await;
    assert_eq!(status(plain).await, 200, "plain HTTP on the new address");
    assert!(refused(edge.admin).await, "the HTTPS address stops accepting");
    edge.admin = plain;
    edge.stop().await;
}

/// Where the `n`th move of the admin API put it (a port 0 binds a free port: `error.log`
/// names it).
async fn moved_to(edge: &crate::support::RunningEdge, n: usize) -> std::net::SocketAddr {
    const MOVED: &str = "admin API moved by the reload to ";
    let moves = || edge.log("error.log").lines().filter(|l| l.contains(MOVED)).map(str::to_string).collect::<Vec<_>>();
    crate::support::eventually(std::time::Duration::from_secs(10), || moves().len() >= n).await;
    let line = moves().get(n - 1).cloned().unwrap_or_else(|| panic!("no move {n} in {}", edge.log("error.log")));
    line.split(MOVED).nth(1).and_then(|rest| rest.split(": ").next()).and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}
