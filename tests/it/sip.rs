//! The SIP edge over real sockets with real `sipp` (Debian `sip-tester`): a partner UAC sends
//! MESSAGEs through the edge to a UAS standing in for the internal next hop, and every one
//! completes; garbage and oversized messages get their answer and a closed connection; with
//! the next hop down, 503 + `Retry-After`. Skipped with a message without `sipp`
//! (`PORTCULLIS_REQUIRE_SIPP=1`, set by `.ci/run`, fails instead).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portcullis::runtime::listeners::Protocol;

use crate::support::external::missing;
use crate::support::{RunningEdge, TestEdge, Upstream, raw_exchange};

pub const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/sip");

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `sipp` process, killed when dropped.
pub struct Sipp(pub Child);

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn sipp_available() -> bool {
    Command::new("sipp").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// The UAS answering MESSAGE with 200 on `port` (the internal next hop); it lives at most
/// 180 s (an edge's start may wait for a memory-measuring test), and is killed when dropped.
pub(crate) fn start_uas(port: u16) -> Sipp {
    let child = Command::new("timeout")
        .args(["180", "sipp", "-sf", &format!("{SCENARIOS}/uas-message.xml"), "-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "t1", "-nd", "-nostdin", "-timeout", "170s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Sipp(child)
}

/// Runs a sipp UAC (scenario `scenario` under `tests/it/sip/`) against `target` from a fresh
/// loopback port, for at most `seconds`, with `args` (calls, rate, timeouts, keys), and
/// asserts it exits 0 — every call completed — with `what` and sipp's last screen otherwise.
pub async fn run_uac(scenario: &str, target: SocketAddr, seconds: u64, args: &[&str], what: &str) {
    let mut command = Command::new("timeout");
    command.args([&seconds.to_string(), "sipp", "-sf", &format!("{SCENARIOS}/{scenario}"), &target.to_string(), "-i", "127.0.0.1"]);
    command.args(["-p", &free_port().to_string(), "-t", "t1", "-nd", "-nostdin"]).args(args);
    let uac = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    assert_eq!(
        uac.status.code(),
        Some(0),
        "{what}\n{}",
        String::from_utf8_lossy(&uac.stdout).lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
}

pub async fn wait_listening(port: u16) {
    let ready = crate::support::eventually_async(Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    assert!(ready, "sipp UAS did not listen on {port}");
}

/// A `[[sip.listener]]` block over TCP.
pub fn sip_listener(name: &str, address: &str) -> String {
    format!("[[sip.listener]]\nname = \"{name}\"\naddress = \"{address}\"\ntransport = \"tcp\"\n")
}

async fn sip_edge(next_hop_port: u16) -> (Upstream, RunningEdge, SocketAddr) {
    sip_edge_with(next_hop_port, "").await
}

pub(crate) async fn sip_edge_with(next_hop_port: u16, extra: &str) -> (Upstream, RunningEdge, SocketAddr) {
    sip_edge_server(next_hop_port, "", extra).await
}

/// [`sip_edge_with`], with `[server]` keys.
async fn sip_edge_server(next_hop_port: u16, server: &str, extra: &str) -> (Upstream, RunningEdge, SocketAddr) {
    let up = Upstream::start("web").await;
    let edge = TestEdge::new()
        .server(server)
        .proxy("web", "/", &[(up.addr, 1, 0)], "")
        .raw(&format!(
            "{}[sip]\nnext_hop = \"sip:127.0.0.1:{next_hop_port};transport=tcp\"\nmax_message_bytes = 4096\n{extra}",
            sip_listener("partners", "127.0.0.1:0")
        ))
        .start()
        .await;
    let sip =
        edge.running().runtime.listeners.all().into_iter().find(|b| b.protocol == Protocol::SipTcp).expect("the SIP listener runs").address;
    (up, edge, sip)
}

#[tokio::test]
async fn partner_messages_reach_the_next_hop_and_every_answer_comes_back() {
    if !sipp_available() {
        return missing("SIPP", "sipp (Debian's sip-tester) is not installed");
    }
    let uas_port = free_port();
    let _uas = start_uas(uas_port);
    wait_listening(uas_port).await;
    // An allow-listed partner: never throttled, so 50 MESSAGEs at 100/s all go through.
    let (_up, edge, sip) = sip_edge_with(uas_port, "[[federation.allow]]\ndomain = \"partner.example\"\n").await;
    let args = ["-s", "alice", "-key", "fromdom", "partner.example", "-m", "50", "-r", "100", "-recv_timeout", "5000", "-timeout", "30s"];
    let what = "sipp exit 0 = every MESSAGE got its 200 (only a 200 completes a call) through the edge";
    run_uac("uac-message-200.xml", sip, 60, &args, what).await;
    edge.stop().await;
}

#[tokio::test]
async fn garbage_and_oversized_messages_get_their_answer_and_a_closed_connection() {
    let (_up, edge, sip) = sip_edge(free_port()).await;
    let garbage = raw_exchange(sip, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", Duration::from_secs(3)).await;
    assert_eq!(garbage, "SIP/2.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "answered and closed");
    let huge = format!(
        "MESSAGE sip:a@corp.example SIP/2.0\r\nVia: SIP/2.0/TCP p.example;branch=z9hG4bK1\r\nFrom: <sip:b@p.example>;tag=1\r\n\
         To: <sip:a@corp.example>\r\nCall-ID: c1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 9000\r\n\r\n{}",
        "x".repeat(9000)
    );
    let answer = raw_exchange(sip, huge.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(answer, "SIP/2.0 513 Message Too Large\r\nContent-Length: 0\r\n\r\n");
    // Each counted as a `sip-protocol-violation`: at the fifth the source is banned, and a
    // banned source's SIP connections are closed at accept (no answer at all).
    for _ in 0..3 {
        raw_exchange(sip, b"\x00\x01garbage\r\n\r\n", Duration::from_secs(3)).await;
    }
    assert!(edge.running().runtime.shield.check("127.0.0.1".parse().unwrap()).is_some(), "five violations ban the source");
    let banned = raw_exchange(sip, b"OPTIONS sip:x SIP/2.0\r\n\r\n", Duration::from_secs(3)).await;
    assert_eq!(banned, "", "closed at accept");
    edge.stop().await;
}

#[tokio::test]
async fn with_the_next_hop_down_a_request_gets_503_with_retry_after() {
    let (_up, edge, sip) = sip_edge(crate::support::closed_port().await.port()).await;
    let message = "MESSAGE sip:a@corp.example SIP/2.0\r\nVia: SIP/2.0/TCP p.example;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
                   From: <sip:b@p.example>;tag=1\r\nTo: <sip:a@corp.example>\r\nCall-ID: c1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    let answer = raw_exchange(sip, message.as_bytes(), Duration::from_secs(5)).await;
    // The request's own Via (with the `received`/`rport` a server stamps, RFC 3261 §18.2.1,
    // RFC 3581), not the edge's.
    assert!(answer.starts_with("SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/TCP p.example;branch=z9hG4bK1"), "{answer}");
    assert_eq!(answer.matches("Via:").count(), 1, "only the partner's Via: {answer}");
    assert!(answer.contains("Call-ID: c1\r\nCSeq: 1 MESSAGE\r\nRetry-After: 30\r\n"), "{answer}");
    edge.stop().await;
}

/// A MESSAGE from `domain` (Call-ID `call`).
pub(crate) fn message_from(domain: &str, call: &str) -> String {
    format!(
        "MESSAGE sip:alice@corp.example SIP/2.0\r\nVia: SIP/2.0/TCP {domain};branch=z9hG4bK{call}\r\nMax-Forwards: 70\r\n\
         From: <sip:bob@{domain}>;tag=1\r\nTo: <sip:alice@corp.example>\r\nCall-ID: {call}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn the_federation_lists_decide_before_anything_is_forwarded() {
    let policy = "[federation]\ndiscovery = false\n[[federation.allow]]\ndomain = \"partner.example\"\n\
                  [[federation.block]]\ndomain = \"spam.example\"\n";
    let (_up, edge, sip) = sip_edge_with(crate::support::closed_port().await.port(), policy).await;
    let statuses = |answer: &str| answer.lines().filter(|l| l.starts_with("SIP/2.0 ")).map(str::to_string).collect::<Vec<_>>();
    // Blocked: 403, and the connection is closed (the second request gets no answer).
    let two = format!("{}{}", message_from("spam.example", "s1"), message_from("spam.example", "s2"));
    let answer = raw_exchange(sip, two.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(statuses(&answer), vec!["SIP/2.0 403 Forbidden"], "{answer}");
    // The blocked domain dressed up as the allowed one (a display name, a quoted parameter, a
    // trailing dot, an upper-case scheme): what the next hop reads as the sender is
    // spam.example, so it is blocked too (403 and closed), never forwarded.
    for (n, from) in [
        "\"sip:bob@partner.example (Bob)\" <sip:bob@spam.example>;tag=1",
        "<sips:bob@spam.example>;tag=1;x=\"sip:a@partner.example\"",
        "<sip:bob@spam.example.>;tag=1",
        "<SIP:bob@spam.example>;tag=1;x=\"sip:a@partner.example\"",
    ]
    .into_iter()
    .enumerate()
    {
        let disguised =
            message_from("spam.example", &format!("d{n}")).replace("From: <sip:bob@spam.example>;tag=1", &format!("From: {from}"));
        let two = format!("{disguised}{}", message_from("partner.example", &format!("e{n}")));
        let answer = raw_exchange(sip, two.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(statuses(&answer), vec!["SIP/2.0 403 Forbidden"], "{from}: {answer}");
    }
    // Discovery off: a stranger gets 403 for each request, on a connection that stays.
    let two = format!("{}{}", message_from("stranger.example", "t1"), message_from("stranger.example", "t2"));
    let answer = raw_exchange(sip, two.as_bytes(), Duration::from_secs(2)).await;
    assert_eq!(statuses(&answer), vec!["SIP/2.0 403 Forbidden", "SIP/2.0 403 Forbidden"], "{answer}");
    // The allowed partner is forwarded (the next hop is down here: 503, not 403).
    let answer = raw_exchange(sip, message_from("partner.example", "p1").as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(statuses(&answer), vec!["SIP/2.0 503 Service Unavailable"], "{answer}");
    edge.stop().await;
}

/// A next hop on loopback that answers every request with `status` (copying its Via, From,
/// To, Call-ID, CSeq, Contact and Expires, as a registrar confirming bindings does) and keeps
/// what it received.
pub async fn answering_next_hop(status: &'static str) -> (u16, std::sync::Arc<std::sync::Mutex<String>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let Ok((mut tcp, _)) = listener.accept().await else { return };
        let mut pending = String::new();
        let mut buffer = [0u8; 8192];
        while let Ok(n) = tcp.read(&mut buffer).await {
            if n == 0 {
                return;
            }
            pending.push_str(&String::from_utf8_lossy(&buffer[..n]));
            log.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..n]));
            while let Some(end) = pending.find("\r\n\r\n") {
                let head: String = pending.drain(..end + 4).collect();
                let copied: String = head
                    .lines()
                    .filter(|l| ["Via:", "From:", "To:", "Call-ID:", "CSeq:", "Contact:", "Expires:"].iter().any(|h| l.starts_with(h)))
                    .map(|l| format!("{l}\r\n"))
                    .collect();
                let response = format!("SIP/2.0 {status}\r\n{copied}Content-Length: 0\r\n\r\n");
                if tcp.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    });
    (port, seen)
}

#[tokio::test]
async fn in_maintenance_new_requests_get_503_and_dialogs_continue() {
    let (port, seen) = answering_next_hop("200 OK").await;
    let (_up, edge, sip) = sip_edge(port).await;
    let admin = format!("Bearer {}", crate::support::ADMIN_TOKEN);
    let on =
        crate::support::client::h1(edge.admin, "POST", "/api/v1/maintenance?enabled=on", &[("authorization", &admin)], bytes::Bytes::new())
            .await;
    assert_eq!(on.status, 200);
    let new = raw_exchange(sip, message_from("partner.example", "m1").as_bytes(), Duration::from_secs(2)).await;
    assert!(new.starts_with("SIP/2.0 503 Service Unavailable\r\n") && new.contains("Retry-After: 120\r\n"), "{new}");
    let in_dialog = message_from("partner.example", "m2").replace("To: <sip:alice@corp.example>", "To: <sip:alice@corp.example>;tag=x");
    let answer = raw_exchange(sip, in_dialog.as_bytes(), Duration::from_secs(2)).await;
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "a request inside a dialog continues: {answer}");
    let received = seen.lock().unwrap().clone();
    assert!(
        received.contains("Call-ID: m2") && !received.contains("Call-ID: m1"),
        "only the in-dialog request reached the next hop: {received}"
    );
    edge.stop().await;
}

#[tokio::test]
async fn refused_credentials_from_the_inside_count_against_the_partner() {
    let (port, _) = answering_next_hop("401 Unauthorized").await;
    let (_up, edge, sip) = sip_edge(port).await;
    let register = |n: u32| {
        message_from("partner.example", &format!("r{n}"))
            .replacen("MESSAGE sip:alice@corp.example", "REGISTER sip:corp.example", 1)
            .replace("CSeq: 1 MESSAGE", "CSeq: 1 REGISTER")
    };
    for n in 0..5 {
        let answer = raw_exchange(sip, register(n).as_bytes(), Duration::from_secs(2)).await;
        assert!(answer.starts_with("SIP/2.0 401 Unauthorized\r\n"), "{answer}");
    }
    let banned =
        crate::support::eventually(Duration::from_secs(5), || edge.running().runtime.shield.check("127.0.0.1".parse().unwrap()).is_some())
            .await;
    assert!(banned, "five 401s to REGISTER within the window ban the partner (sip-auth-failure)");
    edge.stop().await;
}

#[tokio::test]
async fn registrations_confirmed_by_the_registrar_are_counted_with_their_peak() {
    let (port, _) = answering_next_hop("200 OK").await;
    let (_up, edge, sip) = sip_edge(port).await;
    let register = |call: &str, extra: &str| {
        message_from("corp.example", call)
            .replacen("MESSAGE sip:alice@corp.example", "REGISTER sip:corp.example", 1)
            .replace("CSeq: 1 MESSAGE", "CSeq: 1 REGISTER")
            .replace("Content-Length: 0", &format!("{extra}Content-Length: 0"))
    };
    let counts = || async {
        let admin = format!("Bearer {}", crate::support::ADMIN_TOKEN);
        let reply =
            crate::support::client::h1(edge.admin, "GET", "/api/v1/status", &[("authorization", &admin)], bytes::Bytes::new()).await;
        let status: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        (status["counts"]["sip_registrations"].clone(), status["counts"]["sip_registrations_peak"].clone())
    };
    let answer =
        raw_exchange(sip, register("g1", "Contact: <sip:alice@192.0.2.7:5060>;expires=600\r\n").as_bytes(), Duration::from_secs(2)).await;
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
    assert_eq!(counts().await, (serde_json::json!(1), serde_json::json!(1)));
    let answer =
        raw_exchange(sip, register("g2", "Contact: <sip:alice@192.0.2.7:5060>\r\nExpires: 0\r\n").as_bytes(), Duration::from_secs(2)).await;
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
    assert_eq!(counts().await, (serde_json::json!(0), serde_json::json!(1)), "Expires: 0 removes it; the peak stays");
    edge.stop().await;
}

#[tokio::test]
async fn a_partner_that_never_reads_its_answers_is_cut_off_after_the_idle_timeout() {
    use tokio::io::AsyncWriteExt;
    // Every request is refused (403, the connection kept): the edge owes an answer to each.
    let (_up, edge, sip) =
        sip_edge_server(crate::support::closed_port().await.port(), "idle_timeout = \"2s\"", "[federation]\ndiscovery = false\n").await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(sip).await.unwrap();
    let started = tokio::time::Instant::now();
    // Keep sending, never read: the answers fill the socket, then the edge's backlog, then the
    // edge waits to write; it must give up after the idle timeout, not hold the connection.
    let sending = async {
        for n in 0u64.. {
            if tcp.write_all(message_from("stranger.example", &format!("n{n}")).as_bytes()).await.is_err() {
                return n;
            }
        }
        unreachable!()
    };
    let sent = tokio::time::timeout(Duration::from_secs(30), sending).await.expect("the edge never gave up on the connection");
    assert!(sent > 300, "only {sent} requests went out before the connection ended");
    assert!(started.elapsed() < Duration::from_secs(25), "closed only after {:?}", started.elapsed());
    edge.stop().await;
}

#[tokio::test]
async fn a_sender_trickling_a_message_that_never_ends_is_cut_off_after_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // idle_timeout is long; each trickled byte would restart it, so only the message timeout
    // (header_read_timeout) can end this connection.
    let (_up, edge, sip) =
        sip_edge_server(crate::support::closed_port().await.port(), "header_read_timeout = \"2s\"\nidle_timeout = \"60s\"", "").await;
    let mut tcp = tokio::net::TcpStream::connect(sip).await.unwrap();
    tcp.write_all(b"MESSAGE sip:alice@corp.example SIP/2.0\r\nX-Pad: ").await.unwrap();
    let started = tokio::time::Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if tcp.write_all(b"a").await.is_err() {
            closed = true;
            break;
        }
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(10), tcp.read(&mut byte)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "still open after {:?} of a message that never ends", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(5), "closed only after {:?}", started.elapsed());
    edge.stop().await;
}

#[tokio::test]
async fn a_next_hop_that_stops_reading_gets_partners_503_not_a_stalled_edge() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The next hop accepts and then never reads a byte.
    let hop = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hop_port = hop.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = hop.accept().await {
            held.push(tcp);
        }
    });
    let (_up, edge, sip) = sip_edge_with(hop_port, "[[federation.allow]]\ndomain = \"partner.example\"\n").await;
    // One partner sends far more than the socket buffers and the edge's queue hold.
    let body = "x".repeat(3500);
    let flood: Vec<u8> = (0..6000)
        .flat_map(|i| {
            message_from("partner.example", &format!("f{i}"))
                .replace("Content-Length: 0\r\n\r\n", &format!("Content-Length: {}\r\n\r\n{body}", body.len()))
                .into_bytes()
        })
        .collect();
    let (mut flood_read, mut flood_write) = tokio::net::TcpStream::connect(sip).await.unwrap().into_split();
    let flooding = tokio::spawn(async move {
        let _ = flood_write.write_all(&flood).await;
        flood_write
    });
    let draining = tokio::spawn(async move {
        let mut sink = vec![0u8; 64 * 1024];
        while let Ok(n) = flood_read.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Another partner is answered (503: the next hop is not keeping up), not left hanging.
    let answer = raw_exchange(sip, message_from("partner.example", "other").as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("SIP/2.0 503 Service Unavailable\r\n"), "the other partner got: {answer:?}");
    flooding.abort();
    draining.abort();
    held.abort();
    edge.stop().await;
}

#[tokio::test]
async fn one_source_cannot_take_every_sip_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_up, edge, sip) = sip_edge(crate::support::closed_port().await.port()).await;
    let connect_from = |source: &'static str| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((source.parse::<std::net::IpAddr>().unwrap(), 0).into()).unwrap();
        socket.connect(sip).await.unwrap()
    };
    let mut held = Vec::new();
    for _ in 0..portcullis::sip::edge::MAX_CONNECTIONS_PER_SOURCE {
        held.push(connect_from("127.0.0.2").await);
    }
    // The next one from the same address is closed at accept…
    let mut over = connect_from("127.0.0.2").await;
    let _ = over.write_all(message_from("partner.example", "o1").as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), over.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "over its share: closed without an answer: {:?}", String::from_utf8_lossy(&answer));
    // …while another source is served (the next hop is down here: 503).
    let mut other = connect_from("127.0.0.3").await;
    other.write_all(message_from("partner.example", "o2").as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), other.read(&mut answer)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("SIP/2.0 503 "), "{}", String::from_utf8_lossy(&answer[..n]));
    // Closing the held connections gives the source its share back.
    drop(held);
    let freed = crate::support::eventually_async(Duration::from_secs(5), || async {
        let mut again = connect_from("127.0.0.2").await;
        let _ = again.write_all(message_from("partner.example", "o3").as_bytes()).await;
        let mut answer = vec![0u8; 2048];
        matches!(tokio::time::timeout(Duration::from_secs(2), again.read(&mut answer)).await, Ok(Ok(n)) if n > 0)
    })
    .await;
    assert!(freed, "the source's connections are counted down as they close");
    edge.stop().await;
}

/// A reload adds a SIP listener (a new name: bound, registered, served — a partner's
/// MESSAGEs through it reach the next hop and every answer comes back) and removes one (it
/// stops accepting; its port closes). A listener that cannot bind fails the whole reload.
#[tokio::test]
async fn a_reload_adds_and_removes_sip_listeners() {
    if !sipp_available() {
        return missing("SIPP", "sipp (Debian's sip-tester) is not installed");
    }
    let uas_port = free_port();
    let _uas = start_uas(uas_port);
    wait_listening(uas_port).await;
    let (_up, edge, first) = sip_edge_with(uas_port, "[[federation.allow]]\ndomain = \"partner.example\"\n").await;
    let base = std::fs::read_to_string(&edge.config_path).unwrap();
    let second_port = free_port();
    let second_block = sip_listener("second", &format!("127.0.0.1:{second_port}"));
    let reply = edge.reload_with(&format!("{base}{second_block}")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let second: SocketAddr = format!("127.0.0.1:{second_port}").parse().unwrap();
    let args = ["-s", "alice", "-key", "fromdom", "partner.example", "-m", "10", "-r", "50", "-recv_timeout", "5000", "-timeout", "20s"];
    run_uac("uac-message-200.xml", second, 30, &args, "every MESSAGE through the added listener got its 200").await;
    let registered = |port: u16| edge.running().runtime.listeners.all().iter().any(|b| b.address.port() == port);
    assert!(registered(second_port), "the added listener is registered (the firewall opens its port)");

    // The first one removed: it stops accepting and leaves the registry; the second serves on.
    let first_block = sip_listener("partners", "127.0.0.1:0");
    assert!(base.contains(&first_block), "{base}");
    let reply = edge.reload_with(&format!("{}{second_block}", base.replace(&first_block, ""))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let closed =
        crate::support::eventually_async(Duration::from_secs(2), || async move { tokio::net::TcpStream::connect(first).await.is_err() })
            .await;
    assert!(closed, "the removed listener's port closes");
    assert!(!registered(first.port()), "and leaves the registry");
    run_uac("uac-message-200.xml", second, 30, &args, "the remaining listener still serves").await;

    // A port in use: the whole reload is refused, nothing of it applied.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let clash = sip_listener("clash", &format!("127.0.0.1:{held_port}"));
    let third_port = free_port();
    let third = sip_listener("third", &format!("127.0.0.1:{third_port}"));
    let reply = edge.reload_with(&format!("{}{second_block}{third}{clash}", base.replace(&first_block, ""))).await;
    assert_eq!(reply.status, 400, "a SIP listener that cannot bind fails the reload: {}", reply.body);
    assert!(reply.body.contains("sip.listener \\\"clash\\\": cannot bind"), "{}", reply.body);
    assert!(!registered(third_port) && tokio::net::TcpStream::connect(("127.0.0.1", third_port)).await.is_err(), "nothing of it applied");
    let log = edge.log_once("error.log", "sip.listener \"partners\" removed by the reload").await;
    assert!(log.contains("sip.listener \"second\" added by the reload on 127.0.0.1:"), "{log}");
    drop(held);
    edge.stop().await;
}
