//! The SIP edge's outward direction with real parts: the internal next hop (a `sipp` on the
//! connection the edge opened to it) sends a MESSAGE and an INVITE/ACK/BYE call to a partner
//! (another `sipp`) through the edge, and every answer comes back; a blocked domain gets 403
//! and the partner nothing. The edge's own answers to the inside (483, 416, 403 with discovery
//! off), and what a partner cannot do: make the edge send a request anywhere but the next hop
//! (a forged Route) or relay a response it did not ask for (a forged Via).

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::sip::{SCENARIOS, free_port, sip_listener, sipp_available, wait_listening};
use crate::support::external::missing;
use crate::support::{RunningEdge, TestEdge, Upstream, raw_exchange};

/// Runs `sipp` with `args` (at most 60 s), in the background; its output when it ends.
fn sipp(args: Vec<String>) -> tokio::task::JoinHandle<Output> {
    tokio::task::spawn_blocking(move || Command::new("timeout").arg("60").arg("sipp").args(args).stdin(Stdio::null()).output().unwrap())
}

fn args(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// An edge with a TCP SIP listener forwarding to `127.0.0.1:next_hop`, and `extra` TOML.
async fn edge(next_hop: u16, extra: &str) -> (Upstream, RunningEdge, std::net::SocketAddr) {
    let up = Upstream::start("web").await;
    let edge = TestEdge::new()
        .proxy("web", "/", &[(up.addr, 1, 0)], "")
        .raw(&format!("{}[sip]\nnext_hop = \"sip:127.0.0.1:{next_hop};transport=tcp\"\n{extra}", sip_listener("partners", "127.0.0.1:0")))
        .start()
        .await;
    let sip = edge
        .running()
        .runtime
        .listeners
        .all()
        .into_iter()
        .find(|b| b.protocol == portcullis::runtime::listeners::Protocol::SipTcp)
        .unwrap()
        .address;
    (up, edge, sip)
}

/// An OPTIONS from a partner of `domain` (Call-ID `call`).
fn options_from(domain: &str, call: &str) -> String {
    format!(
        "OPTIONS sip:alice@corp.example SIP/2.0\r\nVia: SIP/2.0/TCP {domain};branch=z9hG4bK{call}\r\nMax-Forwards: 70\r\n\
         From: <sip:bob@{domain}>;tag=1\r\nTo: <sip:alice@corp.example>\r\nCall-ID: {call}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The received messages of a `sipp -trace_msg` log that start with `start_line`.
fn received<'a>(log: &'a str, start_line: &str) -> Vec<&'a str> {
    log.split("message received")
        .filter_map(|block| block.split_once("\n\n").map(|(_, m)| m.trim_start()))
        .filter(|m| m.starts_with(start_line))
        .collect()
}

fn first_header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(": ")))
}

#[tokio::test]
async fn the_inside_sends_a_message_and_a_call_to_a_partner_and_a_blocked_domain_gets_403() {
    if !sipp_available() {
        return missing("SIPP", "sipp (Debian's sip-tester) is not installed");
    }
    let dir = tempfile::tempdir().unwrap();
    let (partner_port, hop_port) = (free_port(), free_port());
    let partner_log = dir.path().join("partner.log");
    let partner = sipp(
        args(&format!("-sf {SCENARIOS}/partner-uas.xml -i 127.0.0.1 -p {partner_port} -t t1 -m 1 -nd -nostdin -timeout 40s -trace_msg"))
            .into_iter()
            .chain(["-message_file".to_string(), partner_log.display().to_string()])
            .collect(),
    );
    let next_hop = sipp(args(&format!(
        "-sf {SCENARIOS}/nexthop-uac-outward.xml -i 127.0.0.1 -p {hop_port} -t t1 -m 1 -key partner_port {partner_port} \
         -recv_timeout 10000 -nd -nostdin -timeout 40s"
    )));
    wait_listening(partner_port).await;
    wait_listening(hop_port).await;
    let (_up, edge, sip) =
        edge(hop_port, "[[federation.allow]]\ndomain = \"partner.example\"\n[[federation.block]]\ndomain = \"spam.example\"\n").await;
    // A partner's OPTIONS opens the next hop's "call"; its 200 comes back through the edge.
    let answer = raw_exchange(sip, options_from("partner.example", "trigger-1").as_bytes(), Duration::from_secs(2)).await;
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
    let inside = tokio::time::timeout(Duration::from_secs(60), next_hop).await.unwrap().unwrap();
    let partner = tokio::time::timeout(Duration::from_secs(60), partner).await.unwrap().unwrap();
    let tail = |o: &Output| String::from_utf8_lossy(&o.stdout).lines().rev().take(30).collect::<Vec<_>>().join("\n");
    assert_eq!(inside.status.code(), Some(0), "the inside got 200 to MESSAGE, INVITE and BYE and 403 to spam.example\n{}", tail(&inside));
    assert_eq!(partner.status.code(), Some(0), "the partner got MESSAGE, INVITE, ACK and BYE\n{}", tail(&partner));
    // What the partner received: the edge's Via on top (its TCP listener), one hop less, the
    // edge's Record-Route on the INVITE, and nothing for spam.example.
    let log = std::fs::read_to_string(&partner_log).unwrap();
    let edge_via = format!("SIP/2.0/TCP {sip};branch=z9hG4bK.pc.");
    let message = received(&log, "MESSAGE sip:bob@partner.example SIP/2.0");
    assert_eq!(message.len(), 1, "{log}");
    assert!(first_header(message[0], "Via").is_some_and(|via| via.starts_with(&edge_via)), "{}", message[0]);
    assert_eq!(first_header(message[0], "Max-Forwards"), Some("69"), "{}", message[0]);
    let invite = received(&log, "INVITE sip:bob@partner.example SIP/2.0");
    assert_eq!(invite.len(), 1, "{log}");
    assert_eq!(first_header(invite[0], "Record-Route"), Some(format!("<sip:{sip};transport=tcp;lr>").as_str()), "{}", invite[0]);
    let bye = received(&log, "BYE sip:bob@127.0.0.1:");
    assert_eq!(bye.len(), 1, "the BYE went to the partner's Contact: {log}");
    assert!(first_header(bye[0], "Route").is_none(), "the edge took its own Route entry off: {}", bye[0]);
    assert!(!log.contains("spam.example"), "nothing for the blocked domain reached the partner: {log}");
    edge.stop().await;
}

/// A next hop on loopback the edge connects to; the accepted connection (the inside's end).
pub async fn inside() -> (u16, tokio::sync::oneshot::Receiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Ok((tcp, _)) = listener.accept().await {
            let _ = tx.send(tcp);
        }
    });
    (port, rx)
}

/// Sends `request` on the inside's connection and returns the status line of the first
/// response to Call-ID `call` (answers to others skipped).
pub async fn ask(tcp: &mut TcpStream, request: &str, call: &str) -> String {
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut buffer)).await.expect("an answer in time").unwrap();
        assert!(n > 0, "closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
        if let Some(found) = seen.split("SIP/2.0 ").skip(1).find(|m| m.contains(&format!("Call-ID: {call}\r\n"))) {
            return format!("SIP/2.0 {}", found.lines().next().unwrap_or_default());
        }
    }
}

pub fn outward(uri: &str, call: &str, extra: &str) -> String {
    format!(
        "MESSAGE {uri} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK{call}\r\n{extra}\
         From: <sip:alice@corp.example>;tag=a\r\nTo: <sip:bob@partner.example>\r\nCall-ID: {call}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn the_edge_answers_the_inside_itself_when_a_request_may_or_can_not_go_out() {
    let (port, accepted) = inside().await;
    let (_up, edge, sip) = edge(
        port,
        "local_domains = [\"corp.example\"]\n[federation]\ndiscovery = false\n[[federation.allow]]\ndomain = \"partner.example\"\n\
         [[federation.allow]]\ndomain = \"localhost\"\n",
    )
    .await;
    let mut tcp = tokio::time::timeout(Duration::from_secs(10), accepted).await.expect("the edge opens its next-hop connection").unwrap();
    let closed = crate::support::closed_port().await.port();
    assert_eq!(ask(&mut tcp, &outward("sip:bob@partner.example", "z1", "Max-Forwards: 0\r\n"), "z1").await, "SIP/2.0 483 Too Many Hops");
    assert_eq!(ask(&mut tcp, &outward("tel:+15551234", "z2", "Max-Forwards: 70\r\n"), "z2").await, "SIP/2.0 416 Unsupported URI Scheme");
    let no_domain = outward("sip:bob@192.0.2.1", "z5", "").replace("To: <sip:bob@partner.example>", "To: <sip:bob@198.51.100.1>");
    assert_eq!(ask(&mut tcp, &no_domain, "z5").await, "SIP/2.0 403 Forbidden", "no partner domain");
    assert_eq!(
        ask(
            &mut tcp,
            &outward("sip:bob@stranger.example", "z3", "").replace("To: <sip:bob@partner.example>", "To: <sip:bob@stranger.example>"),
            "z3"
        )
        .await,
        "SIP/2.0 403 Forbidden",
        "discovery off: only allow-listed partners"
    );
    let route = format!("Route: <sip:127.0.0.1:{closed};transport=tcp;lr>\r\n");
    assert_eq!(
        ask(&mut tcp, &outward("sip:bob@partner.example", "z4", &route), "z4").await,
        "SIP/2.0 503 Service Unavailable",
        "the partner does not answer"
    );
    // Sent to the edge itself, the request comes back in with the edge's Via: a loop, and the
    // 482 comes back to the inside.
    // Addressed to the edge itself: 482, and an OPTIONS keep-alive is answered by the edge.
    assert_eq!(ask(&mut tcp, &outward(&format!("sip:bob@{sip}"), "z6", ""), "z6").await, "SIP/2.0 482 Loop Detected");
    let options = outward(&format!("sip:{sip}"), "z7", "").replace("MESSAGE sip:", "OPTIONS sip:").replace("1 MESSAGE", "1 OPTIONS");
    assert_eq!(ask(&mut tcp, &options, "z7").await, "SIP/2.0 200 OK");
    // Sent to the edge under another name, the request comes back in with the edge's Via:
    // the loop is caught on its way in, and the 482 reaches the inside.
    let loop_back = outward(&format!("sip:bob@localhost:{}", sip.port()), "z8", "");
    assert_eq!(ask(&mut tcp, &loop_back, "z8").await, "SIP/2.0 482 Loop Detected");
    edge.stop().await;
}

#[tokio::test]
async fn a_partner_can_make_the_edge_send_only_to_the_next_hop_never_elsewhere() {
    // Somewhere a partner would like the edge to send to.
    let victim = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let victim_port = victim.local_addr().unwrap().port();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = reached.clone();
    tokio::spawn(async move {
        while let Ok((_tcp, _)) = victim.accept().await {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let (port, seen) = crate::sip::answering_next_hop("200 OK").await;
    let (_up, edge, sip) = edge(port, "[[federation.allow]]\ndomain = \"partner.example\"\n").await;
    // A request whose Route and Request-URI name the victim goes to the next hop.
    let forged_route = options_from("partner.example", "h1")
        .replace("OPTIONS sip:alice@corp.example", &format!("OPTIONS sip:alice@127.0.0.1:{victim_port}"))
        .replace("Max-Forwards: 70\r\n", &format!("Max-Forwards: 70\r\nRoute: <sip:127.0.0.1:{victim_port};transport=tcp;lr>\r\n"));
    let answer = raw_exchange(sip, forged_route.as_bytes(), Duration::from_secs(2)).await;
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "answered by the next hop: {answer}");
    // Responses with the edge's Via on top that the edge did not seal: dropped.
    for (n, pc) in ["", ";pc=1", ";pc=o0123456789abcdef0123"].into_iter().enumerate() {
        let forged = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP {sip};branch=z9hG4bK.pc.1.2{pc}\r\nVia: SIP/2.0/TCP 127.0.0.1:{victim_port};branch=z9hG4bKv\r\n\
             From: <sip:a@corp.example>;tag=1\r\nTo: <sip:b@partner.example>;tag=2\r\nCall-ID: forged-{n}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
        );
        let answer = raw_exchange(sip, forged.as_bytes(), Duration::from_millis(500)).await;
        assert_eq!(answer, "", "no answer to a response");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_next_hop = seen.lock().unwrap().clone();
    assert!(at_next_hop.contains("Call-ID: h1\r\n"), "{at_next_hop}");
    assert!(!at_next_hop.contains("forged-"), "a forged response never reaches the inside: {at_next_hop}");
    assert!(!reached.load(std::sync::atomic::Ordering::SeqCst), "the edge never connected to the victim");
    edge.stop().await;
}

/// A partner on loopback that keeps the head of the first request it receives: its port,
/// and the head once it arrived.
async fn partner_capturing_one_request() -> (u16, tokio::sync::oneshot::Receiver<String>) {
    let partner = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = partner.local_addr().unwrap().port();
    let (tx, received) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        let Ok((mut tcp, _)) = partner.accept().await else { return };
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
    });
    (port, received)
}

/// After a reload moved the SIP listener (the old name removed, a new one added), requests
/// toward partners carry the new listener in their Via: the old port is closed, and a
/// partner answering or calling back there would never reach the edge (found by review: the
/// first listener at start was still used).
#[tokio::test]
async fn after_a_reload_moved_the_listener_requests_to_partners_name_the_new_one() {
    let (partner_port, received) = partner_capturing_one_request().await;
    let (port, accepted) = inside().await;
    let (_up, edge, old) = edge(port, "[[federation.allow]]\ndomain = \"partner.example\"\n").await;
    let mut tcp = tokio::time::timeout(Duration::from_secs(10), accepted).await.expect("the edge opens its next-hop connection").unwrap();
    let base = std::fs::read_to_string(&edge.config_path).unwrap();
    let old_block = sip_listener("partners", "127.0.0.1:0");
    assert!(base.contains(&old_block), "{base}");
    let new_port = free_port();
    let new_block = sip_listener("moved", &format!("127.0.0.1:{new_port}"));
    let reply = edge.reload_with(&format!("{}{new_block}", base.replace(&old_block, ""))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    let (request, via) = through_to_partner(&mut tcp, partner_port, received, "m1").await;
    assert!(via.starts_with(&format!("SIP/2.0/TCP 127.0.0.1:{new_port};")), "the running listener in the Via: {request}");
    assert!(!request.contains(&format!("127.0.0.1:{};", old.port())), "the removed listener is named nowhere: {request}");
    edge.stop().await;
}

/// A port in 20000–32767 (under Linux's default ephemeral range, 32768–60999) that binds on
/// `0.0.0.0` and on `[::]` right now.
fn dual_stack_port() -> u16 {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() ^ std::process::id();
    (0..1000u32)
        .map(|i| 20000 + ((seed.wrapping_add(i.wrapping_mul(7919))) % 12768) as u16)
        .find(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok() && std::net::TcpListener::bind(("::", *p)).is_ok())
        .expect("a port free on both families")
}

/// Sends a request for `sip:bob@partner.example` (Call-ID `call_id`) from the inside over
/// `tcp`, routed to the capturing partner on `partner_port`; what the partner received, and
/// its first Via.
async fn through_to_partner(
    tcp: &mut tokio::net::TcpStream,
    partner_port: u16,
    received: tokio::sync::oneshot::Receiver<String>,
    call_id: &str,
) -> (String, String) {
    let route = format!("Route: <sip:127.0.0.1:{partner_port};transport=tcp;lr>\r\n");
    tcp.write_all(outward("sip:bob@partner.example", call_id, &route).as_bytes()).await.unwrap();
    let request = tokio::time::timeout(Duration::from_secs(10), received).await.expect("the partner got the request").unwrap();
    let via = first_header(&request, "Via").unwrap_or_default().to_string();
    (request, via)
}

/// Listeners on `0.0.0.0` and `[::]` of one port share one identity in Via (the server's
/// name): a reload that removes one of the two leaves the other serving, and requests toward
/// partners still go out naming it (found by review: removing the IPv6 twin made every
/// outward request a 503).
#[tokio::test]
async fn removing_one_of_two_dual_stack_listeners_keeps_requests_to_partners_flowing() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        return; // no IPv6 loopback here
    }
    let (partner_port, received) = partner_capturing_one_request().await;
    let (port, accepted) = inside().await;
    let (_up, edge, _old) = edge(port, "[[federation.allow]]\ndomain = \"partner.example\"\n").await;
    let mut tcp = tokio::time::timeout(Duration::from_secs(10), accepted).await.expect("the edge opens its next-hop connection").unwrap();
    let base = std::fs::read_to_string(&edge.config_path).unwrap();
    let without_old = base.replace(&sip_listener("partners", "127.0.0.1:0"), "");
    // A port free on both families, below the kernel's ephemeral range: a wildcard listener
    // cannot share its port with any socket, and the client sockets of tests running beside
    // this one take ephemeral ports (another test may still take it first: try again).
    let mut p = 0;
    for _ in 0..5 {
        p = dual_stack_port();
        let both = format!("{without_old}{}{}", sip_listener("v4", &format!("0.0.0.0:{p}")), sip_listener("v6", &format!("[::]:{p}")));
        if edge.reload_with(&both).await.status == 200 {
            break;
        }
        p = 0;
    }
    assert_ne!(p, 0, "no port free on both families");
    let reply = edge.reload_with(&format!("{without_old}{}", sip_listener("v4", &format!("0.0.0.0:{p}")))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (request, via) = through_to_partner(&mut tcp, partner_port, received, "d1").await;
    assert!(via.starts_with(&format!("SIP/2.0/TCP localhost:{p};")), "the remaining listener's identity: {request}");
    edge.stop().await;
}
