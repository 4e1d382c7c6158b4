//! Hostile clients: request smuggling shapes, oversized and too many headers, slow-loris
//! heads, idle connections, garbage bytes. Nothing of it may reach an upstream.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestEdge, Upstream, eventually, raw_exchange};

async fn edge_with_upstream(server: &str) -> (crate::support::RunningEdge, Upstream) {
    let up = Upstream::start("a").await;
    let edge = TestEdge::new().server(server).proxy("app", "/", &[(up.addr, 1, 0)], "").start().await;
    (edge, up)
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_with_400() {
    let (edge, up) = edge_with_upstream("").await;
    for attack in [
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    ] {
        let reply = raw_exchange(edge.http, attack, Duration::from_secs(3)).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "attack {:?} got {reply:?}", String::from_utf8_lossy(attack));
    }
    assert_eq!(up.hits(), 0, "no smuggling attempt reached the upstream");
    let metrics = edge.running().runtime.metrics.encode();
    assert!(metrics.contains("portcullis_framing_refused_total{listener=\"http\"} 5"), "{metrics}");
    assert!(eventually(Duration::from_secs(2), || edge.log("access.log").matches(" 400 ").count() >= 5).await);
    assert!(edge.log("error.log").contains("request refused: both Content-Length and Transfer-Encoding"), "{}", edge.log("error.log"));
    edge.stop().await;
}

#[tokio::test]
async fn a_smuggled_request_after_a_good_one_is_refused_without_losing_the_first() {
    let (edge, up) = edge_with_upstream("").await;
    let stream = b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let reply = raw_exchange(edge.http, stream, Duration::from_secs(3)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("HTTP/1.1 400"), "{reply}");
    assert_eq!(up.hits(), 1);
    assert_eq!(up.last_seen().path, "/first");
    edge.stop().await;
}

#[tokio::test]
async fn a_chunked_body_that_looks_like_a_request_is_just_a_body() {
    let (edge, up) = edge_with_upstream("").await;
    let inner = "GET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
    let stream = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        inner.len()
    );
    let reply = raw_exchange(edge.http, stream.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(reply.matches("HTTP/1.1 200").count(), 2, "{reply}");
    let paths: Vec<String> = up.seen.lock().unwrap().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths, vec!["/upload", "/after"]);
    assert_eq!(up.seen.lock().unwrap()[0].body_len, inner.len());
    edge.stop().await;
}

#[tokio::test]
async fn oversized_heads_and_too_many_headers_get_431() {
    let (edge, up) = edge_with_upstream("max_header_bytes = 8192\nmax_headers = 20").await;
    let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    let reply = raw_exchange(edge.http, big.as_bytes(), Duration::from_secs(3)).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply:?}");
    let many: String = (0..40).map(|i| format!("X-H{i}: v\r\n")).collect();
    let reply = raw_exchange(edge.http, format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(), Duration::from_secs(3)).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply:?}");
    assert_eq!(up.hits(), 0);
    edge.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_400_and_missing_host_is_refused() {
    let (edge, up) = edge_with_upstream("").await;
    for garbage in [
        &b"\x16\x03\x01\x02\x00garbage-not-http\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let reply = raw_exchange(edge.http, garbage, Duration::from_secs(3)).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{:?} got {reply:?}", String::from_utf8_lossy(garbage));
    }
    assert_eq!(up.hits(), 0);
    edge.stop().await;
}

#[tokio::test]
async fn slow_loris_heads_are_cut_off_by_the_header_read_timeout() {
    let (edge, up) = edge_with_upstream("header_read_timeout = \"1s\"").await;
    let mut tcp = TcpStream::connect(edge.http).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let started = tokio::time::Instant::now();
    // Trickle one header byte at a time: activity must not extend the head deadline.
    let mut closed = false;
    for _ in 0..40 {
        if tcp.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => {
                assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"), "only a 408 may come back");
            }
            Err(_) => {}
        }
    }
    assert!(closed, "connection still open after 4 s of trickling");
    assert!(started.elapsed() < Duration::from_secs(3), "closed too late: {:?}", started.elapsed());
    assert_eq!(up.hits(), 0);
    edge.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let (edge, _up) = edge_with_upstream("idle_timeout = \"500ms\"").await;
    let mut tcp = TcpStream::connect(edge.http).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = tokio::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "idle connection was not closed");
    assert!(started.elapsed() >= Duration::from_millis(400));
    edge.stop().await;
}

#[tokio::test]
async fn a_refused_smuggling_attempt_logs_its_request_escaped_on_one_line() {
    let (edge, up) = edge_with_upstream("").await;
    // Control bytes cannot be in a head the guard parses that far (they are refused as
    // malformed, unlogged); quotes, a backslash and non-ASCII can.
    let attack = "POST /a\"b\\c HTTP/1.1\r\nHost: evil\" will be blocked for 5 minutes, host: \"\u{e9}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let reply = raw_exchange(edge.http, attack.as_bytes(), Duration::from_secs(3)).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");
    assert_eq!(up.hits(), 0);
    assert!(eventually(Duration::from_secs(2), || edge.log("access.log").contains(" 400 ")).await);
    let errors = edge.log("error.log");
    let refused: Vec<&str> = errors.lines().filter(|l| l.contains("request refused")).collect();
    assert_eq!(refused.len(), 1, "{errors}");
    assert!(
        refused[0].ends_with(
            ":: request refused: both Content-Length and Transfer-Encoding, request: \"POST /a\\x22b\\x5Cc\", host: \"evil\\x22 will be blocked for 5 minutes, host: \\x22\\xC3\\xA9\""
        ),
        "{errors}"
    );
    let access = edge.log("access.log");
    assert_eq!(access.lines().count(), 1, "{access}");
    assert!(access.contains(" evil\\x22\\x20will\\x20be\\x20blocked"), "{access}");
    edge.stop().await;
}

#[tokio::test]
async fn connect_and_underscore_fields_never_reach_the_upstream() {
    let (edge, up) = edge_with_upstream("").await;
    // CONNECT in any form: the edge is no tunnel (a 2xx would make the pooled connection one).
    for target in ["/x", "a:443"] {
        let request = format!("CONNECT {target} HTTP/1.1\r\nHost: a\r\n\r\n");
        let reply = raw_exchange(edge.http, request.as_bytes(), Duration::from_secs(3)).await;
        assert!(reply.starts_with("HTTP/1.1 405") || reply.starts_with("HTTP/1.1 400"), "{target}: {reply}");
    }
    // The same over HTTP/2 (prior knowledge on the same port).
    let tcp = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let connect = http::Request::builder().method("CONNECT").uri("a:443").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let status = send.send_request(connect).await.map(|r| r.status().as_u16());
    assert_eq!(status.ok(), Some(405), "h2 CONNECT is refused, not tunnelled");
    assert_eq!(up.hits(), 0, "no CONNECT reached the upstream");
    // Fields a CGI/WSGI upstream would read as the edge's own (X-Forwarded-For, Content-Length).
    let reply = raw_exchange(
        edge.http,
        b"GET /u HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 10.9.9.9\r\nContent_Length: 5\r\nX-Kept: yes\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = up.last_seen();
    assert!(seen.headers.iter().all(|(name, _)| !name.contains('_')), "{:?}", seen.headers);
    assert_eq!(seen.headers.get("x-kept").map(String::as_str), Some("yes"));
    edge.stop().await;
}

/// `server.max_connections` is one cap for the listener, not one per worker: with per-core
/// workers (two here, each with its own `SO_REUSEPORT` socket) the kernel spreads the
/// connections over both, and still only four are held; the others are closed at once, and a
/// freed slot serves the next one.
#[tokio::test]
async fn the_connection_cap_holds_across_per_core_workers() {
    let up = Upstream::start("desk").await;
    let edge = TestEdge::new().server("max_connections = 4\nworkers = 2").proxy("desk", "/", &[(up.addr, 1, 0)], "").start().await;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..16 {
        let mut tcp = TcpStream::connect(edge.http).await.unwrap();
        // A held connection stays open (idle); a refused one is closed by the edge.
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => refused += 1,
            Ok(Ok(_)) => panic!("the edge sent bytes unasked"),
            Err(_) => held.push(tcp),
        }
    }
    assert_eq!(held.len(), 4, "one cap across the workers ({refused} refused)");
    held.pop();
    let answered = crate::support::eventually_async(Duration::from_secs(5), || async {
        let reply =
            raw_exchange(edge.http, b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", Duration::from_secs(2)).await;
        reply.starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(answered, "a freed slot serves the next connection");
}
