//! The shield over real sockets: brute force → 418 on the very next request, protocol
//! violations, exemptions, the admin list/unblock, the error.log rate limit, and the real
//! `fail2ban-regex` against the blocking.log Portcullis wrote.

use std::time::Duration;

use bytes::Bytes;

use crate::support::client::h1;
use crate::support::{ADMIN_TOKEN, Upstream, basic, raw_exchange};

async fn edge(up: &Upstream, extra: &str) -> crate::support::RunningEdge {
    crate::support::users_file_edge(up, extra).await
}

async fn get(addr: std::net::SocketAddr, path: &str, auth: &str) -> u16 {
    h1(addr, "GET", path, &[("authorization", auth)], Bytes::new()).await.status
}

#[tokio::test]
async fn the_fifth_failure_bans_and_the_next_request_gets_418() {
    let up = Upstream::start("desk").await;
    let edge = edge(&up, "").await;
    assert_eq!(get(edge.http, "/x", &basic("alice", "pw")).await, 200);
    for _ in 0..5 {
        assert_eq!(get(edge.http, "/login", &basic("alice", "guess")).await, 401);
    }
    let hits = up.hits();
    for path in ["/x", "/anything", "/portcullis/token"] {
        assert_eq!(get(edge.http, path, &basic("alice", "pw")).await, 418, "{path}: banned, even with good credentials");
    }
    assert_eq!(up.hits(), hits, "the upstream saw nothing from the banned source");
    let log = edge.log_once("blocking.log", "will be blocked").await;
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.contains("127.0.0.1 will be blocked for 30 minutes for exceeding retry limit., client: 127.0.0.1, server: localhost, request: \"GET /login HTTP/1.1\", host: \"localhost\""),
        "{log}"
    );
    // The admin API lists and lifts the ban.
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let list = h1(edge.admin, "GET", "/api/v1/blocked", &[("authorization", &admin)], Bytes::new()).await;
    let bans: serde_json::Value = serde_json::from_str(&list.body).unwrap();
    assert_eq!(bans[0]["source"], "127.0.0.1");
    assert_eq!(bans[0]["category"], "http-auth-failure");
    assert_eq!(bans[0]["hits"], 3);
    let metrics = edge.running().runtime.metrics.encode();
    assert!(metrics.contains("portcullis_bans_total{category=\"http-auth-failure\"} 1"), "{metrics}");
    assert!(metrics.contains("portcullis_banned_sources 1"), "{metrics}");
    let url = format!("http://{}", edge.admin);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["blocked", "list", "--admin", &url, "--token", ADMIN_TOKEN])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listed.contains("127.0.0.1") && listed.contains("http-auth-failure") && listed.contains("1 banned"), "{listed}");
    let lifted = h1(edge.admin, "DELETE", "/api/v1/blocked?ip=127.0.0.1", &[("authorization", &admin)], Bytes::new()).await;
    assert_eq!(lifted.status, 200);
    assert_eq!(get(edge.http, "/x", &basic("alice", "pw")).await, 200, "unblocked");
    edge.stop().await;
}

#[tokio::test]
async fn a_first_visit_without_credentials_is_not_a_failure() {
    let up = Upstream::start("desk").await;
    let edge = edge(&up, "").await;
    for _ in 0..10 {
        assert_eq!(h1(edge.http, "GET", "/x", &[], Bytes::new()).await.status, 401);
    }
    assert_eq!(get(edge.http, "/x", &basic("alice", "pw")).await, 200);
    edge.stop().await;
}

#[tokio::test]
async fn exempt_networks_are_never_counted() {
    let up = Upstream::start("desk").await;
    let edge =
        edge(&up, "[[protection.exemption]]\naddress = \"127.0.0.0\"\nprefix_length = 8\ncategories = [\"http-auth-failure\"]\n").await;
    for _ in 0..12 {
        assert_eq!(get(edge.http, "/x", &basic("alice", "guess")).await, 401);
    }
    assert_eq!(get(edge.http, "/x", &basic("alice", "pw")).await, 200);
    assert_eq!(edge.log("blocking.log"), "");
    edge.stop().await;
}

#[tokio::test]
async fn smuggling_attempts_count_as_protocol_violations() {
    let up = Upstream::start("desk").await;
    let edge = edge(&up, "").await;
    for _ in 0..5 {
        let reply = raw_exchange(
            edge.http,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            Duration::from_secs(2),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    }
    assert_eq!(get(edge.http, "/x", &basic("alice", "pw")).await, 418);
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let list = h1(edge.admin, "GET", "/api/v1/blocked", &[("authorization", &admin)], Bytes::new()).await;
    assert!(list.body.contains("http-protocol-violation"), "{}", list.body);
    edge.stop().await;
}

#[tokio::test]
async fn already_blocked_is_logged_once_a_minute_per_source() {
    let up = Upstream::start("desk").await;
    let edge = edge(&up, "").await;
    for _ in 0..5 {
        get(edge.http, "/x", &basic("alice", "guess")).await;
    }
    for _ in 0..300 {
        assert_eq!(get(edge.http, "/x", &basic("alice", "pw")).await, 418);
    }
    let errors = edge.log("error.log");
    assert_eq!(errors.matches("127.0.0.1 :: IP is already blocked.").count(), 1, "{errors}");
    edge.stop().await;
}

#[tokio::test]
async fn fail2ban_regex_matches_every_ban_line_portcullis_wrote() {
    let Ok(version) = std::process::Command::new("fail2ban-regex").arg("--version").output() else {
        // `.ci/run` installs fail2ban and sets PORTCULLIS_REQUIRE_FAIL2BAN, so CI never skips.
        crate::support::external::missing("FAIL2BAN", "fail2ban-regex not installed (CI installs it)");
        return;
    };
    assert!(version.status.success());
    let up = Upstream::start("desk").await;
    let edge = edge(&up, "").await;
    for _ in 0..5 {
        get(edge.http, "/login", &basic("alice", "guess")).await;
    }
    let (ok, text) = fail2ban_regex(&edge);
    assert!(ok, "{text}");
    assert!(text.contains("Lines: 1 lines, 0 ignored, 1 matched, 0 missed"), "{text}");
    assert!(text.contains("127.0.0.1"), "the banned host is extracted: {text}");
    edge.stop().await;
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
    let up = Upstream::start("desk").await;
    // Trusted load balancer on 127.0.0.1: the client is the address it forwards.
    let edge = edge(&up, "[protection]\ntrusted_proxies = [\"127.0.0.1\"]\n").await;
    let as_client = |ip: &'static str, auth: String| {
        let addr = edge.http;
        async move { h1(addr, "GET", "/x", &[("authorization", &auth), ("x-forwarded-for", ip)], Bytes::new()).await.status }
    };
    for _ in 0..5 {
        assert_eq!(as_client("198.51.100.20", basic("alice", "guess")).await, 401);
    }
    assert_eq!(as_client("198.51.100.20", basic("alice", "pw")).await, 418, "the forwarded client is banned");
    assert_eq!(as_client("198.51.100.21", basic("alice", "pw")).await, 200, "other clients behind the balancer are not");
    assert_eq!(up.last_seen().headers["x-forwarded-for"], "198.51.100.21");
    edge.stop().await;

    // No trusted proxies (the default): a spoofed X-Forwarded-For changes nothing.
    let edge = crate::support::users_file_edge(&up, "").await;
    for i in 0..5 {
        let spoofed = format!("203.0.113.{i}");
        let status =
            h1(edge.http, "GET", "/x", &[("authorization", &basic("alice", "guess")), ("x-forwarded-for", &spoofed)], Bytes::new())
                .await
                .status;
        assert_eq!(status, 401);
    }
    assert_eq!(
        h1(edge.http, "GET", "/x", &[("authorization", &basic("alice", "pw"))], Bytes::new()).await.status,
        418,
        "the real peer is banned"
    );
    edge.stop().await;
}

#[tokio::test]
async fn exemptions_are_managed_at_run_time_through_the_cli() {
    let up = Upstream::start("desk").await;
    let edge = edge(&up, "").await;
    let url = format!("http://{}", edge.admin);
    let cli = |args: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
            command.args(&args).args(["--admin", &url, "--token", ADMIN_TOKEN]);
            command.output().unwrap()
        })
    };
    let out = cli(vec!["exemptions".into(), "add".into(), "127.0.0.0/8".into(), "--categories".into(), "http-auth-failure".into()])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(vec!["exemptions".into(), "list".into()]).await.unwrap();
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listed.contains("127.0.0.0/8") && listed.contains("api") && listed.contains("http-auth-failure"), "{listed}");
    for _ in 0..8 {
        assert_eq!(get(edge.http, "/x", &basic("alice", "guess")).await, 401);
    }
    assert_eq!(get(edge.http, "/x", &basic("alice", "pw")).await, 200, "exempt: never counted");
    let out =
        cli(vec!["exemptions".into(), "add".into(), "10.0.0.0/8".into(), "--categories".into(), "no-such-category".into()]).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "unknown categories are refused");
    let out = cli(vec!["exemptions".into(), "del".into(), "127.0.0.0/8".into()]).await.unwrap();
    assert_eq!(out.status.code(), Some(0));
    for _ in 0..5 {
        get(edge.http, "/x", &basic("alice", "guess")).await;
    }
    assert_eq!(get(edge.http, "/x", &basic("alice", "pw")).await, 418, "counted again once the exemption is gone");
    edge.stop().await;
}

#[tokio::test]
async fn a_banned_source_is_refused_at_accept_time() {
    use tokio::io::AsyncReadExt;
    let up = Upstream::start("desk").await;
    let edge = edge(&up, "").await;
    for _ in 0..5 {
        get(edge.http, "/x", &basic("alice", "guess")).await;
    }
    // A new connection gets the blocked answer without reaching TLS or the HTTP stack.
    let mut tcp = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(3), tcp.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 418 I'm a teapot\r\n"), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\nblocked\n"));
    edge.stop().await;
}

#[tokio::test]
async fn resource_probing_counts_only_when_enabled_and_already_blocked_logs_once_for_10000_requests() {
    let up = Upstream::start("desk").await;
    let edge =
        edge(&up, "[protection.categories.http-resource-access-failure]\nenabled = true\ntrigger = 3\nwindow = \"30s\"\nban = \"5m\"\n")
            .await;
    // One keep-alive connection opened before the ban keeps carrying requests.
    let tcp = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let mut status_of = async |path: &str| {
        let request = hyper::Request::builder()
            .uri(path)
            .header("host", "localhost")
            .header("authorization", basic("alice", "pw"))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let response = send.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
        status
    };
    for _ in 0..3 {
        assert_eq!(status_of("/status/404").await, 404);
    }
    for _ in 0..10_000 {
        assert_eq!(status_of("/x").await, 418);
    }
    let errors = edge.log("error.log");
    assert_eq!(errors.matches("127.0.0.1 :: IP is already blocked.").count(), 1, "one line for 10,000 blocked requests");
    assert!(edge.log_once("blocking.log", "will be blocked").await.contains("will be blocked for 5 minutes"));
    edge.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_heads_count_as_protocol_violations() {
    let up = Upstream::start("desk").await;
    let edge = edge(&up, "").await;
    let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(40_000));
    for attempt in 0..5 {
        let bytes: &[u8] = if attempt % 2 == 0 { b"GET / HTTP/1.1\r\nBad Header\r\n\r\n" } else { big.as_bytes() };
        let reply = raw_exchange(edge.http, bytes, Duration::from_secs(2)).await;
        assert!(reply.starts_with("HTTP/1.1 400") || reply.starts_with("HTTP/1.1 431"), "{reply:?}");
    }
    assert_eq!(get(edge.http, "/x", &basic("alice", "pw")).await, 418);
    assert_eq!(up.hits(), 0);
    edge.stop().await;
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spray_from_100000_distinct_sources_stays_under_the_memory_cap() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _quiet = crate::support::MEMORY_QUIET.quiet().await;
    let up = Upstream::start("desk").await;
    let edge = crate::support::users_file_edge_on(crate::support::TestEdge::new().measuring_memory(), &up, "").await;
    let victim_auth = basic("alice", "guess");
    for _ in 0..5 {
        get(edge.http, "/x", &victim_auth).await;
    }
    let before = rss_kib();
    let sources = 100_000u32;
    let tasks: Vec<_> = (0..8u32)
        .map(|worker| {
            let target = edge.http;
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                for i in (worker..sources).step_by(8) {
                    // 127.1.0.0 + i: one failed authentication from each distinct source.
                    let source = std::net::Ipv4Addr::from(0x7f01_0000 + i);
                    let socket = tokio::net::TcpSocket::new_v4().unwrap();
                    socket.bind((source, 0).into()).unwrap();
                    let Ok(mut tcp) = socket.connect(target).await else { continue };
                    let _ = tcp.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Basic !!!\r\nConnection: close\r\n\r\n").await;
                    let _ = tcp.read(&mut buf).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    // docs/shield.md: 100,000 counters of ~150 bytes; allow generous slack for allocator
    // and socket churn in the same process.
    eprintln!("RSS grew {grown_mib} MiB for 100,000 tracked sources");
    assert!(grown_mib < 96, "RSS grew {grown_mib} MiB for 100,000 tracked sources");
    let metrics = edge.running().runtime.metrics.encode();
    assert!(metrics.contains("portcullis_banned_sources 1"), "the spray banned nobody and unbanned nobody: {metrics}");
    assert_eq!(get(edge.http, "/x", &basic("alice", "pw")).await, 418, "the earlier ban of 127.0.0.1 survives the spray");
    edge.stop().await;
}

#[tokio::test]
async fn an_operator_bans_a_source_by_hand_and_only_that_source_is_refused() {
    let up = Upstream::start("desk").await;
    let edge = edge(&up, "").await;
    let url = format!("http://{}", edge.admin);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["blocked", "ban", "127.0.0.2", "--minutes", "5", "--admin", &url, "--token", ADMIN_TOKEN])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let from = |source: &'static str| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let mut tcp = socket.connect(edge.http).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tcp.write_all(format!("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n", basic("alice", "pw")).as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut head)).await.unwrap().unwrap();
        String::from_utf8_lossy(&head[9..12]).into_owned()
    };
    assert_eq!(from("127.0.0.2").await, "418");
    assert_eq!(from("127.0.0.3").await, "200");
    let bans = edge.running().runtime.shield.list();
    assert_eq!((bans.len(), bans[0].category.as_str()), (1, "manual"));
    assert!(bans[0].until_ms - bans[0].since_ms == 5 * 60 * 1000);
    let bans = edge.log_once("blocking.log", "will be blocked").await;
    assert!(bans.contains("127.0.0.2 will be blocked for 5 minutes"), "{bans}");
    edge.stop().await;
}

/// Whether `fail2ban-regex` can run here (CI sets PORTCULLIS_REQUIRE_FAIL2BAN and never skips).
fn fail2ban_regex_installed() -> bool {
    if std::process::Command::new("fail2ban-regex").arg("--version").output().is_ok_and(|out| out.status.success()) {
        return true;
    }
    crate::support::external::missing("FAIL2BAN", "fail2ban-regex not installed: that part of the test (CI installs it)");
    false
}

/// Every line of an nginx-layout log starts with its date, level and pid.
fn assert_nginx_lines(log: &str) {
    for line in log.lines() {
        let b = line.as_bytes();
        let dated = b.len() > 22 && b[4] == b'/' && b[7] == b'/' && b[10] == b' ' && b[13] == b':' && b[19] == b' ' && b[20] == b'[';
        assert!(dated && line.contains("#0: "), "a line that is not one of ours: {line:?}\n{log}");
        assert!(line.bytes().all(|b| b == b'\t' || !b.is_ascii_control()), "control byte in {line:?}");
    }
}

#[tokio::test]
async fn injected_user_names_hosts_and_paths_stay_escaped_on_one_log_line() {
    let up = Upstream::start("desk").await;
    let edge = edge(&up, "").await;
    // A user name that tries to forge a ban line (Basic names cannot hold control characters:
    // those are refused as malformed, without a name).
    // No ':' either: it ends the name.
    let user = "x\" 9.9.9.9 will be blocked for 30 minutes, host= \"\\\u{202e}é";
    let split = "y\r\n2026/01/01 00.00.00 [emerg] 1#0 6.6.6.6 will be blocked for 30 minutes\x1b[2J";
    for i in 0..5 {
        let credential = basic(if i == 4 { split } else { user }, "guess");
        let request = format!("GET /login\"x HTTP/1.1\r\nHost: x\r\nAuthorization: {credential}\r\nConnection: close\r\n\r\n");
        let reply = raw_exchange(edge.http, request.as_bytes(), Duration::from_secs(10)).await;
        assert!(reply.starts_with("HTTP/1.1 401"), "{i}: {reply:?}");
    }
    assert_eq!(get(edge.http, "/x", &basic("alice", "pw")).await, 418, "the fifth failure banned");

    let errors = edge.log("error.log");
    assert_nginx_lines(&errors);
    let escaped_user = "\"x\\x22 9.9.9.9 will be blocked for 30 minutes, host= \\x22\\x5C\\xE2\\x80\\xAE\\xC3\\xA9\"";
    let failures: Vec<&str> = errors.lines().filter(|l| l.contains("authentication failed for user")).collect();
    assert_eq!(failures.len(), 5, "{errors}");
    for line in &failures[..4] {
        assert!(line.ends_with(&format!("#0: 127.0.0.1 :: authentication failed for user {escaped_user}: invalid credentials")), "{line}");
    }
    // A name with control characters is not a name at all.
    assert!(failures[4].ends_with("#0: 127.0.0.1 :: authentication failed for user \"-\": malformed Basic credential"), "{errors}");
    assert!(!errors.contains("x\" 9.9.9.9") && !errors.contains('\u{202e}') && !errors.contains("6.6.6.6"), "{errors}");

    let bans = edge.log_once("blocking.log", "will be blocked").await;
    assert_nginx_lines(&bans);
    assert_eq!(bans.lines().count(), 1, "{bans}");
    assert!(
        bans.ends_with(
            "#0: 127.0.0.1 will be blocked for 30 minutes for exceeding retry limit., client: 127.0.0.1, server: localhost, request: \"GET /login\\x22x HTTP/1.1\", host: \"x\"\n"
        ),
        "{bans}"
    );
    if fail2ban_regex_installed() {
        let (ok, text) = fail2ban_regex(&edge);
        assert!(ok, "{text}");
        assert!(text.contains("Lines: 1 lines, 0 ignored, 1 matched, 0 missed"), "{text}");
        assert!(text.contains("127.0.0.1") && !text.contains("9.9.9.9 ("), "only the real client is extracted: {text}");
    }
    edge.stop().await;

    // A forged Host is refused (400, a protocol violation) and logged escaped as received.
    let edge = crate::support::users_file_edge(&up, "[protection.categories.http-protocol-violation]\ntrigger = 1\n").await;
    let host = "evil\" will be blocked for 5 minutes, host: \"x";
    let request = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let reply = raw_exchange(edge.http, request.as_bytes(), Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");
    let bans = edge.log_once("blocking.log", "will be blocked").await;
    assert_nginx_lines(&bans);
    assert!(bans.ends_with("request: \"GET /x HTTP/1.1\", host: \"evil\\x22 will be blocked for 5 minutes, host: \\x22x\"\n"), "{bans}");
    edge.stop().await;
}

/// The status line's code of what `request` gets over TLS (HTTP/1.1) from `https`.
async fn status_over_tls(https: std::net::SocketAddr, cert: &std::path::Path, request: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = crate::support::client::tls_connect(https, cert, &[b"http/1.1"]).await;
    tls.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.get(9..12).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// The pipeline's order (`src/http/pipeline.rs`, steps 4 and 5): the ban comes before the
/// request's sanity, so a banned client whose request has no Host gets 418, not 400 — on a
/// TLS listener, where banned sources are served and each request is refused.
#[tokio::test]
async fn a_banned_client_without_host_gets_418_not_400() {
    let up = Upstream::start("desk").await;
    let edge = crate::support::TestEdge::new().https().proxy("desk", "/", &[(up.addr, 1, 0)], "").start().await;
    let https = edge.https.unwrap();
    let cert = edge.running().certificate.clone().unwrap().cert;
    let without_host = b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n";
    assert_eq!(status_over_tls(https, &cert, without_host).await, 400, "not banned: a request without Host is refused as such");
    edge.running().runtime.shield.ban_manually("127.0.0.1".parse().unwrap(), Duration::from_secs(600));
    assert_eq!(status_over_tls(https, &cert, without_host).await, 418, "banned: the ban answers before the missing Host");
    assert_eq!(up.hits(), 0, "neither request reached the upstream");
}

/// The real `fail2ban-regex` with the shipped filter over the edge's `blocking.log`: whether it
/// succeeded, and what it printed.
fn fail2ban_regex(edge: &crate::support::RunningEdge) -> (bool, String) {
    let log = edge.dir.path().join("logs/blocking.log");
    let filter = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/fail2ban/filter.d/portcullis.conf");
    let out = std::process::Command::new("fail2ban-regex").args(["--print-all-matched", "-v"]).arg(&log).arg(filter).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An upstream and an edge in front of it on which one `http-protocol-violation` bans.
async fn one_violation_bans() -> (Upstream, crate::support::RunningEdge) {
    let up = Upstream::start("desk").await;
    let edge = crate::support::TestEdge::new()
        .proxy("desk", "/", &[(up.addr, 1, 0)], "")
        .raw("[protection.categories.http-protocol-violation]\ntrigger = 1\n")
        .start()
        .await;
    (up, edge)
}

/// Waits (up to 5 s) until `client` is banned; fails with `why` otherwise.
async fn banned_within_5s(edge: &crate::support::RunningEdge, client: std::net::IpAddr, why: &str) {
    let banned = async {
        while edge.running().runtime.shield.check(client).is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), banned).await.expect(why);
}

/// An HTTP/2 client that cancels a request while its body is on the way (a browser leaving
/// a page: RST_STREAM CANCEL) has done nothing wrong: it is not a protocol violation, even
/// with a trigger of 1, and nothing reaches the upstream. A body that breaks its own
/// `content-length` still is one (the control that proves the counting works).
#[tokio::test]
async fn a_cancelled_http2_upload_is_not_a_protocol_violation_but_a_broken_one_is() {
    let (up, edge) = one_violation_bans().await;
    let client: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let tcp = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let upload = |length: Option<&str>| {
        let mut request = http::Request::post(format!("http://localhost:{}/upload", edge.http.port()));
        if let Some(length) = length {
            request = request.header("content-length", length);
        }
        request.body(()).unwrap()
    };
    for _ in 0..3 {
        let (answer, mut body) = h2.clone().ready().await.unwrap().send_request(upload(None), false).unwrap();
        body.send_data(Bytes::from_static(b"first part of a form"), false).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        body.send_reset(h2::Reason::CANCEL);
        drop(answer);
    }
    // The edge has read the resets once a later stream on the same connection is answered.
    let (answer, _) = h2
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(http::Request::get(format!("http://localhost:{}/x", edge.http.port())).body(()).unwrap(), true)
        .unwrap();
    assert_eq!(answer.await.unwrap().status(), 200);
    assert_eq!(edge.running().runtime.shield.check(client), None, "a cancelled upload does not count against the source");
    assert_eq!(up.hits(), 1, "only the complete GET reached the upstream");

    // Five bytes of a declared ten, then the end of the stream: a broken body.
    let (answer, mut body) = h2.clone().ready().await.unwrap().send_request(upload(Some("10")), false).unwrap();
    body.send_data(Bytes::from_static(b"12345"), true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), answer).await;
    banned_within_5s(&edge, client, "a body shorter than its content-length is a protocol violation").await;
    assert_eq!(up.hits(), 1, "the broken upload did not reach the upstream");
    edge.stop().await;
}

/// Opens an HTTP/2 connection to `addr` and resets up to `count` streams to a slow upstream
/// path, each once the edge has it (`pause` after sending); how many were sent before the
/// connection failed, and the connection's task. `None` when the connection was refused
/// (a banned source).
async fn reset_streams(addr: std::net::SocketAddr, count: u32, pause: Duration) -> Option<(u32, tokio::task::JoinHandle<()>)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (h2, connection) = h2::client::handshake(tcp).await.ok()?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut sent = 0;
    for _ in 0..count {
        let Ok(mut ready) = h2.clone().ready().await else { break };
        let request = http::Request::get(format!("http://localhost:{}/slow/3000", addr.port())).body(()).unwrap();
        let Ok((answer, _)) = ready.send_request(request, true) else { break };
        tokio::time::sleep(pause).await;
        drop(answer); // RST_STREAM(CANCEL)
        sent += 1;
    }
    Some((sent, task))
}

/// HTTP/2 rapid reset (CVE-2023-44487): each stream the client cancels before its answer cost
/// the edge a request to the upstream and the client one frame. A client that cancels a
/// few streams (a browser leaving a page), or every stream it has in flight at once, keeps
/// its connection; one that keeps resetting past the connection's budget (256 at once, 10 a
/// second after) gets a GOAWAY, its connection ends, and it counts as a protocol violation
/// (trigger 1 here: banned). The upstream saw at most the budget's worth of the cancelled
/// requests.
#[tokio::test]
async fn an_http2_client_that_cancels_stream_after_stream_loses_its_connection() {
    let (up, edge) = one_violation_bans().await;
    let client: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let get = |path: &str| http::Request::get(format!("http://localhost:{}{path}", edge.http.port())).body(()).unwrap();
    let tcp = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);

    // A browser-like client: 20 cancels among 80 answers, same connection, never cut.
    for i in 0..100 {
        if i % 5 == 0 {
            let (answer, _) = h2.clone().ready().await.unwrap().send_request(get("/slow/3000"), true).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(answer);
        } else {
            let (answer, _) = h2.clone().ready().await.unwrap().send_request(get("/x"), true).unwrap();
            assert_eq!(answer.await.unwrap().status(), 200, "stream {i}");
        }
    }
    // Everything in flight cancelled at once (a page left, deadlines while an upstream
    // stalls): 100 streams the upstream has, all reset together.
    let hits = up.hits();
    let mut answers = Vec::new();
    for _ in 0..100 {
        answers.push(h2.clone().ready().await.unwrap().send_request(get("/slow/3000"), true).unwrap().0);
    }
    assert!(crate::support::eventually(Duration::from_secs(5), || up.hits() >= hits + 100).await, "the upstream has all 100");
    drop(answers);
    let (answer, _) = h2.clone().ready().await.unwrap().send_request(get("/x"), true).unwrap();
    assert_eq!(answer.await.unwrap().status(), 200, "the connection still serves");
    assert_eq!(edge.running().runtime.shield.check(client), None, "cancelling everything in flight is no violation");

    // Rapid reset on a new connection: cut off just past the budget.
    let hits_before = up.hits();
    let began = tokio::time::Instant::now();
    let (sent, task) = reset_streams(edge.http, 1000, Duration::from_millis(2)).await.expect("a new source connects");
    // The bucket: 256 at once, then 10 a second.
    let allowed = 256 + (10.0 * began.elapsed().as_secs_f64()) as u32;
    assert!(sent > 256 && sent <= allowed + 3, "the connection ended just past the budget ({sent} resets sent, {allowed} allowed)");
    let ended = tokio::time::timeout(Duration::from_secs(3), task).await;
    assert!(ended.is_ok(), "the client's connection ended");
    let reached = up.hits() - hits_before;
    assert!(reached <= sent as usize + 1, "only the resets before the cut reached the upstream ({reached})");
    banned_within_5s(&edge, client, "the rapid reset counts as a protocol violation").await;
    let log = edge.log_once("error.log", "rapid reset").await;
    assert!(log.contains("HTTP/2 connection closed: its client cancelled ") && log.contains("(rapid reset)"), "{log}");
    edge.stop().await;
}

/// The budget is also per source, across its connections: waves of 24 connections resetting
/// 60 streams each (each far below one connection's budget) empty the source's bucket (1,024
/// at once, 100 a second), and the connections that reset after that are cut and counted
/// (found by review: a new connection per few dozen resets escaped a per-connection budget).
/// Waves go on until a cut, so a slow machine (the refill covering a slow first wave) does not
/// decide the outcome; without the source's bucket no wave is ever cut.
#[tokio::test]
async fn http2_resets_spread_over_many_connections_meet_the_sources_budget() {
    use portcullis::http::cancels::{SOURCE_CANCEL_BURST, SOURCE_CANCEL_RATE};
    let (_up, edge) = one_violation_bans().await;
    let client: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let began = tokio::time::Instant::now();
    let (mut total, mut cut, mut waves) = (0u32, 0u32, 0u32);
    while cut == 0 && waves < 10 {
        let runs: Vec<_> = (0..24).map(|_| tokio::spawn(reset_streams(edge.http, 60, Duration::from_millis(1)))).collect();
        for run in runs {
            // A connection opened after the ban is refused: it sent nothing.
            if let Some((sent, _task)) = run.await.unwrap() {
                total += sent;
                cut += u32::from(sent < 60);
            }
        }
        waves += 1;
        // A first wave done before the refill could cover its excess (1,440 - 1,024 resets
        // at 100 a second: 4.2 s) must be cut: this is what tells the bucket's size.
        if waves == 1 && began.elapsed() < Duration::from_secs(3) {
            assert!(cut >= 1, "the first wave ({total} resets in {:?}) emptied the source's bucket", began.elapsed());
        }
    }
    let allowed = SOURCE_CANCEL_BURST + (SOURCE_CANCEL_RATE as f64 * began.elapsed().as_secs_f64()) as u32;
    assert!(cut >= 1, "connections were cut once the source's bucket was empty ({total} resets in {waves} waves, none cut)");
    // The cut came within a wave of the bucket running dry. (A cut connection may still send
    // a few resets before its GOAWAY arrives.)
    assert!(total <= allowed + 24 * 60, "cut within a wave of the budget ({total} resets sent, {allowed} allowed)");
    banned_within_5s(&edge, client, "counted as a protocol violation").await;
    edge.stop().await;
}

/// A broken chunk counts once, whether the edge reads the body or answers without it: here
/// (trigger 2) a signed-in upload with a broken chunk is read and answered 400 — one count,
/// not banned — and an unsigned one answered 401 without its body being read is the second
/// count, which bans. A well-formed chunked body on a 401 is no violation at all. Nothing
/// reached the upstream.
#[tokio::test]
async fn a_broken_chunk_counts_once_whether_or_not_the_body_is_read() {
    let up = Upstream::start("desk").await;
    let edge = edge(&up, "[protection.categories.http-protocol-violation]\ntrigger = 2\n").await;
    let client: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let exchange = |request: String| async move { raw_exchange(edge.http, request.as_bytes(), Duration::from_secs(5)).await };
    let upload = |credential: &str, body: &str| {
        format!("POST /upload HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{credential}transfer-encoding: chunked\r\n\r\n{body}")
    };
    let signed_in = format!("authorization: {}\r\n", basic("alice", "pw"));
    let broken = "5\r\nhello\r\nZZ\r\nmore\r\n0\r\n\r\n";

    let answer = exchange(upload("", "5\r\nhello\r\n0\r\n\r\n")).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let answer = exchange(upload(&signed_in, broken)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "the body is read and refused: {answer}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(edge.running().runtime.shield.check(client), None, "one broken chunk counts once (trigger 2)");
    // Counted as the guard meets it (here in the read that carried the head): answered 401
    // without reading the body, or 418 when the ban is in force before the answer.
    let answer = exchange(upload("", broken)).await;
    assert!(answer.starts_with("HTTP/1.1 401") || answer.starts_with("HTTP/1.1 418"), "{answer}");
    banned_within_5s(&edge, client, "the unread broken chunk is the second count").await;
    assert_eq!(up.hits(), 0, "nothing reached the upstream");
    let log = edge.log_once("blocking.log", "will be blocked").await;
    assert!(log.contains("request: \"- - HTTP/1.1\", host: \"-\""), "{log}");
    edge.stop().await;

    // Behind a trusted proxy the broken chunk counts against the client it forwards for (once
    // the body is read), never against the proxy.
    let extra = "[protection]\ntrusted_proxies = [\"127.0.0.1\"]\n[protection.categories.http-protocol-violation]\ntrigger = 1\n";
    let edge = crate::support::users_file_edge(&up, extra).await;
    let forwarded = format!("{signed_in}x-forwarded-for: 198.51.100.20\r\n");
    let answer = raw_exchange(edge.http, upload(&forwarded, broken).as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    banned_within_5s(&edge, "198.51.100.20".parse().unwrap(), "the forwarded-for client is counted").await;
    assert_eq!(edge.running().runtime.shield.check(client), None, "the proxy is never counted");
    edge.stop().await;
}

/// An HTTP/1.1 client that leaves in the middle of its upload (a browser closed, a network
/// dropped) is not a protocol violation: logged 499, never counted. A body whose chunked
/// framing is broken still is (400, counted: trigger 1 here bans).
#[tokio::test]
async fn an_http1_upload_cut_off_by_the_client_is_not_a_violation_but_a_broken_chunk_is() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (up, edge) = one_violation_bans().await;
    let client: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let heads = [
        "POST /upload HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100000\r\n\r\nfirst part of a form",
        "POST /upload HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n400\r\nfirst part",
    ];
    // Closed (FIN) after part of the body, twice; then reset (RST, as a socket closed with
    // unread data or SO_LINGER 0 does).
    for (head, reset) in [(heads[0], false), (heads[1], false), (heads[0], true)] {
        let mut tcp = tokio::net::TcpStream::connect(edge.http).await.unwrap();
        tcp.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if reset {
            socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO)).unwrap();
        }
        drop(tcp); // the client leaves mid-body
    }
    crate::support::eventually(Duration::from_secs(5), || edge.log("access.log").matches("POST /upload HTTP/1.1 499").count() >= 3).await;
    let log = edge.log("access.log");
    assert_eq!(log.matches("POST /upload HTTP/1.1 499").count(), 3, "{log}");
    assert_eq!(edge.running().runtime.shield.check(client), None, "a client leaving mid-upload is no violation");

    // A broken chunk: 400, and counted — also when the broken part (an empty size line)
    // arrives at the start of a read of its own (found by review: it read as end-of-stream).
    let hits = up.hits();
    let mut tcp = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    tcp.write_all(b"POST /upload HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tcp.write_all(b"\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer));
    banned_within_5s(&edge, client, "a broken chunk is a protocol violation").await;
    assert_eq!(up.hits(), hits, "the broken request did not reach the upstream");
    edge.stop().await;
}
