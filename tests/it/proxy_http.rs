//! Proxying over real sockets: HTTP/1.1, HTTP/2 (h2c and TLS+ALPN), forwarding headers,
//! weighted and backup selection, failover, max_conns, timeouts, static files, auth gate.

use std::time::Duration;

use bytes::Bytes;

use crate::support::client::{self, get, h1, h2c, tls_get};
use crate::support::{TestEdge, Upstream, closed_port, eventually};

#[tokio::test]
async fn http1_request_reaches_upstream_with_forwarding_headers_and_without_hop_by_hop() {
    let up = Upstream::start("a").await;
    let edge = TestEdge::new().proxy("app", "/", &[(up.addr, 1, 0)], "").start().await;
    let reply = h1(
        edge.http,
        "GET",
        "/hello?x=1",
        &[("connection", "keep-alive, x-drop-me"), ("x-drop-me", "1"), ("x-forwarded-for", "6.6.6.6"), ("x-keep", "yes")],
        Bytes::new(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "a 0");
    assert!(!reply.headers.contains_key("x-upstream-private"), "response hop-by-hop header named in Connection must be removed");
    let seen = up.last_seen();
    assert_eq!(seen.path, "/hello");
    assert_eq!(seen.headers["host"], "localhost");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1", "client-supplied XFF is replaced, not trusted");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["forwarded"], "for=127.0.0.1;proto=http;host=\"localhost\"");
    assert_eq!(seen.headers["x-keep"], "yes");
    assert!(!seen.headers.contains_key("x-drop-me"));
    // The access log records the request once the body is done.
    assert!(
        eventually(Duration::from_secs(3), || edge.log("access.log").contains(&format!("GET /hello HTTP/1.1 200 3 {} app", up.addr))).await,
        "{}",
        edge.log("access.log")
    );
    edge.stop().await;
}

#[tokio::test]
async fn http2_prior_knowledge_and_tls_alpn_reach_an_http1_upstream() {
    let up = Upstream::start("a").await;
    let edge = TestEdge::new().https().proxy("app", "/", &[(up.addr, 1, 0)], "").start().await;
    let reply = h2c(edge.http, "/h2c").await;
    assert_eq!((reply.status, reply.version), (200, hyper::Version::HTTP_2));
    assert_eq!(up.last_seen().headers["host"], format!("localhost:{}", edge.http.port()));

    let cert = edge.running().certificate.clone().expect("self-signed certificate");
    assert!(cert.origin == portcullis::operate::cert::CertOrigin::SelfSigned && cert.cert.starts_with(edge.state_dir()));
    let https = edge.https.unwrap();
    let reply = tls_get(https, &cert.cert, &[b"h2", b"http/1.1"], "/tls-h2").await;
    assert_eq!((reply.status, reply.version), (200, hyper::Version::HTTP_2));
    assert_eq!(up.last_seen().headers["x-forwarded-proto"], "https");
    let reply = tls_get(https, &cert.cert, &[b"http/1.1"], "/tls-h1").await;
    assert_eq!((reply.status, reply.version), (200, hyper::Version::HTTP_11));
    assert_eq!(up.last_seen().path, "/tls-h1");
    edge.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_hosts_get_404_at_the_edge() {
    let up = Upstream::start("a").await;
    let edge = TestEdge::new()
        .proxy("app", "/app/", &[(up.addr, 1, 0)], "")
        .raw(&format!("[[service]]\nname = \"vhost\"\n[[service.upstream]]\naddress = \"{}\"\n[[route]]\nhost = \"desk.example\"\npath = \"/\"\nservice = \"vhost\"\n", up.addr))
        .start()
        .await;
    assert_eq!(get(edge.http, "/other").await.status, 404);
    assert_eq!(up.hits(), 0, "nothing unrouted reaches an upstream");
    assert_eq!(get(edge.http, "/app/x").await.status, 200);
    let reply = h1(edge.http, "GET", "/other", &[("host", "DESK.example:8445")], Bytes::new()).await;
    assert_eq!(reply.status, 200, "host route matches case-insensitively, port ignored");
    assert_eq!(up.hits(), 2);
    edge.stop().await;
}

#[tokio::test]
async fn weighted_selection_follows_weights_and_backup_waits() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let backup = Upstream::start("backup").await;
    let edge = TestEdge::new().proxy("app", "/", &[(a.addr, 3, 0), (b.addr, 1, 0), (backup.addr, 0, 0)], "").start().await;
    for _ in 0..40 {
        assert_eq!(get(edge.http, "/").await.status, 200);
    }
    assert_eq!((a.hits(), b.hits(), backup.hits()), (30, 10, 0));
    edge.stop().await;
}

#[tokio::test]
async fn failover_skips_a_dead_server_and_backup_takes_over_when_primaries_are_down() {
    let dead = closed_port().await;
    let backup = Upstream::start("backup").await;
    let live = Upstream::start("live").await;
    let edge = TestEdge::new()
        .proxy("app", "/app/", &[(dead, 1, 0), (live.addr, 1, 0)], "")
        .proxy("solo", "/solo/", &[(dead, 1, 0), (backup.addr, 0, 0)], "")
        .start()
        .await;
    for i in 0..10 {
        let reply = get(edge.http, &format!("/app/{i}")).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "live 0"));
    }
    assert_eq!(live.hits(), 10);
    // POST bodies below the replay limit are retried on the next server too.
    let reply = h1(edge.http, "POST", "/solo/form", &[("content-type", "text/plain")], Bytes::from_static(b"abc")).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "backup 3"));
    edge.stop().await;
}

#[tokio::test]
async fn all_servers_down_is_502() {
    let dead = closed_port().await;
    let edge = TestEdge::new().proxy("app", "/", &[(dead, 1, 0)], "").start().await;
    let reply = get(edge.http, "/").await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.body, "upstream unavailable\n");
    edge.stop().await;
}

#[tokio::test]
async fn max_conns_queues_briefly_then_answers_503() {
    let up = Upstream::start("a").await;
    let edge = TestEdge::new().proxy("app", "/", &[(up.addr, 1, 1)], "queue_timeout = \"200ms\"").start().await;
    let addr = edge.http;
    let tasks: Vec<_> = (0..4).map(|_| tokio::spawn(async move { get(addr, "/slow/600").await })).collect();
    let mut statuses = Vec::new();
    for t in tasks {
        let reply = t.await.unwrap();
        if reply.status == 503 {
            assert_eq!(reply.headers["retry-after"], "1");
        }
        statuses.push(reply.status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 503, 503, 503]);
    assert_eq!(up.max_in_flight.load(std::sync::atomic::Ordering::SeqCst), 1, "the upstream never saw more than max_conns");
    // A request that waits less than queue_timeout for the slot gets it.
    let slow = tokio::spawn(async move { get(addr, "/slow/100").await });
    let holding = crate::support::eventually(Duration::from_secs(2), || up.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 1);
    assert!(holding.await, "the slow request never reached the upstream");
    assert_eq!(get(addr, "/").await.status, 200);
    assert_eq!(slow.await.unwrap().status, 200);
    edge.stop().await;
}

#[tokio::test]
async fn slow_upstream_gets_504() {
    let up = Upstream::start("a").await;
    let edge = TestEdge::new().proxy("app", "/", &[(up.addr, 1, 0)], "response_timeout = \"300ms\"").start().await;
    let reply = get(edge.http, "/slow/1500").await;
    assert_eq!(reply.status, 504);
    edge.stop().await;
}

#[tokio::test]
async fn large_request_bodies_stream_to_the_upstream() {
    let up = Upstream::start("a").await;
    let edge = TestEdge::new().proxy("app", "/", &[(up.addr, 1, 0)], "").start().await;
    let body = Bytes::from(vec![b'x'; 300 * 1024]);
    let reply = h1(edge.http, "PUT", "/upload", &[], body).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "a 307200"));
    assert_eq!(up.last_seen().body_len, 300 * 1024);
    assert_eq!(up.last_seen().method, "PUT");
    edge.stop().await;
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let up = Upstream::start("a").await;
    let edge = TestEdge::new().proxy("app", "/", &[(up.addr, 1, 0)], "[service.health_check]\nenabled = false").start().await;
    for _ in 0..20 {
        assert_eq!(get(edge.http, "/").await.status, 200);
    }
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1, "keep-alive: one upstream connection for sequential requests");
    edge.stop().await;
}

#[tokio::test]
async fn active_health_checks_mark_a_dead_server_down() {
    let up = Upstream::start("a").await;
    let dead = closed_port().await;
    let edge = TestEdge::new()
        .proxy("app", "/", &[(dead, 1, 0), (up.addr, 1, 0)], "[service.health_check]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfails = 1")
        .start()
        .await;
    let metrics = edge.running().runtime.metrics.clone();
    let down = format!("portcullis_upstream_up{{service=\"app\",server=\"{dead}\"}} 0");
    assert!(eventually(Duration::from_secs(3), || metrics.encode().contains(&down)).await, "{}", metrics.encode());
    assert!(metrics.encode().contains(&format!("portcullis_upstream_up{{service=\"app\",server=\"{}\"}} 1", up.addr)));
    edge.stop().await;
}

#[tokio::test]
async fn protected_services_answer_401_and_never_reach_the_upstream_except_public_paths() {
    let up = Upstream::start("a").await;
    let edge = TestEdge::new()
        .proxy("desk", "/", &[(up.addr, 1, 0)], "auth = \"basic\"\npublic_paths = [\"/assets/\", \"=/favicon.ico\"]")
        .raw("[auth.basic]\nvalidate_url = \"http://127.0.0.1:9/auth\"\n")
        .start()
        .await;
    let reply = h1(edge.http, "GET", "/desktop", &[], Bytes::new()).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.headers["www-authenticate"], "Basic realm=\"portcullis\"");
    let reply = h1(edge.http, "GET", "/desktop", &[("authorization", "Bearer not-a-jwt")], Bytes::new()).await;
    assert_eq!(reply.status, 401, "a credential of another scheme is refused");
    let reply = h1(edge.http, "GET", "/desktop", &[("authorization", "Basic YWdlbnQ6cHc=")], Bytes::new()).await;
    assert_eq!(reply.status, 503, "the validator is down: unavailable, never valid");
    assert_eq!(get(edge.http, "/favicon.ico/x").await.status, 401, "exact public path is exact");
    assert_eq!(up.hits(), 0);
    assert_eq!(get(edge.http, "/assets/app.js").await.status, 200);
    assert_eq!(get(edge.http, "/favicon.ico").await.status, 200);
    assert_eq!(up.hits(), 2);
    edge.stop().await;
}

#[tokio::test]
async fn static_service_serves_files_and_refuses_traversal() {
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "<h1>edge</h1>").unwrap();
    let edge = TestEdge::new()
        .raw(&format!(
            "[[service]]\nname = \"site\"\nstatic_dir = \"{}\"\n[[route]]\npath = \"/\"\nservice = \"site\"\n",
            www.path().display()
        ))
        .start()
        .await;
    let reply = get(edge.http, "/").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "<h1>edge</h1>"));
    assert_eq!(reply.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(get(edge.http, "/%2e%2e/%2e%2e/etc/passwd").await.status, 400);
    assert_eq!(get(edge.http, "/missing.css").await.status, 404);
    edge.stop().await;
}

#[tokio::test]
async fn plain_listener_redirects_to_https() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let edge = TestEdge::new()
        .raw(&format!("[[listener]]\nname = \"secure\"\naddress = \"127.0.0.1:{free}\"\ntls = true\n[[listener]]\nname = \"redirect\"\naddress = \"127.0.0.1:0\"\nredirect_to = \"secure\"\n"))
        .start()
        .await;
    let redirect = edge.running().listeners.iter().find(|(n, _)| n == "redirect").unwrap().1;
    let reply = client::h1(redirect, "GET", "/a/b?c=d", &[], Bytes::new()).await;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.headers["location"], format!("https://localhost:{free}/a/b?c=d"));
    edge.stop().await;
}

#[tokio::test]
async fn tls_upstreams_are_verified_against_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (up, ca) = Upstream::start_tls("secure", dir.path()).await;
    let edge = TestEdge::new()
        .proxy("trusted", "/trusted/", &[(up.addr, 1, 0)], &format!("upstream_tls = true\nupstream_ca = \"{}\"", ca.display()))
        .proxy("untrusted", "/untrusted/", &[(up.addr, 1, 0)], "upstream_tls = true")
        .start()
        .await;
    let reply = get(edge.http, "/trusted/x").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "secure 0"));
    assert_eq!(up.last_seen().path, "/trusted/x");
    let reply = get(edge.http, "/untrusted/x").await;
    assert_eq!(reply.status, 502, "a certificate from an unknown CA is refused");
    assert_eq!(up.hits(), 1);
    edge.stop().await;
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_not_used() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An upstream that answers one request per connection and then closes it silently
    // (no `Connection: close`): the edge must not send the next request into the dead socket.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { return };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n) = tcp.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                // The upstream's behaviour: it closes the connection 50 ms after answering.
                tokio::time::sleep(Duration::from_millis(50)).await;
            });
        }
    });
    let edge = TestEdge::new().proxy("app", "/", &[(addr, 1, 0)], "[service.health_check]\nenabled = false").start().await;
    for _ in 0..3 {
        let reply = get(edge.http, "/").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
        // The scenario under test: the pooled connection sits idle well after the upstream
        // closed it (50 ms after answering) before the next request.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3, "a fresh connection each time");
    edge.stop().await;
}
