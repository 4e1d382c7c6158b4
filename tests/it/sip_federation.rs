//! The federation policy of the running SIP edge, with real `sipp` where a partner sends
//! load: the watch list (1,000 distinct users then 403, to new and already-seen users alike),
//! error-share flagging, the throttle close to its rate, run-time lists through the admin API
//! and the CLI, maintenance with a call in progress (`Draining (1)` then `Inactive`), the SIP
//! access-log line and metrics, and two peers on one real Redis applying each other's list
//! changes, watch list and throttle.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sip::{answering_next_hop, free_port, message_from, run_uac, sip_edge_with, sipp_available, start_uas, wait_listening};
use crate::support::client::h1;
use crate::support::external::{RedisServer, missing};
use crate::support::{ADMIN_TOKEN, RunningEdge, eventually_async};

async fn admin(edge: &RunningEdge, method: &str, path: &str) -> crate::support::client::Reply {
    h1(edge.admin, method, path, &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))], Bytes::new()).await
}

async fn admin_json(edge: &RunningEdge, path: &str) -> serde_json::Value {
    let reply = admin(edge, "GET", path).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    serde_json::from_str(&reply.body).unwrap()
}

/// One partner connection kept open: requests written, status lines read back in order.
struct Partner {
    tcp: TcpStream,
    pending: String,
}

impl Partner {
    async fn connect(sip: SocketAddr) -> Partner {
        Partner { tcp: TcpStream::connect(sip).await.unwrap(), pending: String::new() }
    }

    /// Sends `request` and returns the status code of its answer (`None`: closed, or nothing
    /// within 5 s).
    async fn ask(&mut self, request: &str) -> Option<u16> {
        self.tcp.write_all(request.as_bytes()).await.ok()?;
        self.status().await
    }

    async fn status(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(end) = self.pending.find("\r\n\r\n") {
                let head: String = self.pending.drain(..end + 4).collect();
                return head.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok();
            }
            let mut buffer = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut buffer)).await {
                Ok(Ok(n)) if n > 0 => self.pending.push_str(&String::from_utf8_lossy(&buffer[..n])),
                _ => return None,
            }
        }
    }
}

/// A MESSAGE from `domain` to local user `user`.
fn message_to(domain: &str, user: &str, call: &str) -> String {
    message_from(domain, call).replace("alice@corp.example", &format!("{user}@corp.example"))
}

#[tokio::test]
async fn a_partner_addressing_more_than_1000_users_goes_on_the_watch_list_and_is_refused() {
    if !sipp_available() {
        return missing("SIPP", "sipp (Debian's sip-tester) is not installed");
    }
    let uas_port = free_port();
    let _uas = start_uas(uas_port);
    wait_listening(uas_port).await;
    let (_up, edge, sip) = sip_edge_with(uas_port, "[federation]\ndiscovered_rate = 100000\n").await;
    let users = edge.dir.path().join("users.csv");
    let rows: String = (1..=1000).map(|n| format!("user{n};\n")).collect();
    std::fs::write(&users, format!("SEQUENTIAL\n{rows}")).unwrap();
    let users = users.to_str().unwrap().to_string();
    // A loaded CI machine with a debug build takes tens of ms per new user (a store write
    // each): a modest rate and a generous answer timeout.
    let args =
        ["-key", "fromdom", "spray.example", "-inf", &users, "-m", "1000", "-r", "100", "-recv_timeout", "60000", "-timeout", "110s"];
    run_uac("uac-message-users.xml", sip, 120, &args, "all 1,000 distinct users are served").await;
    let domains = admin_json(&edge, "/api/v1/federation/domains").await;
    let row = domains.as_array().unwrap().iter().find(|d| d["domain"] == "spray.example").expect("the domain is in the view").clone();
    assert_eq!(
        (row["state"].as_str(), row["distinct_users"].as_u64(), row["requests"].as_u64()),
        (Some("discovered"), Some(1000), Some(1000))
    );
    assert_eq!(row["responses"]["2xx"], 1000);

    let mut partner = Partner::connect(sip).await;
    assert_eq!(partner.ask(&message_to("spray.example", "user1001", "w1")).await, Some(403), "the 1,001st distinct user");
    assert_eq!(partner.ask(&message_to("spray.example", "user1", "w2")).await, Some(403), "an already-seen user too");
    let watch = admin_json(&edge, "/api/v1/federation/watch").await;
    assert_eq!((watch[0]["domain"].as_str(), watch[0]["reason"].as_str()), (Some("spray.example"), Some("distinct-users")));
    let logged = crate::support::eventually(Duration::from_secs(3), || {
        std::fs::read_to_string(edge.dir.path().join("logs/error.log")).unwrap_or_default().contains("spray.example put on the watch list")
    })
    .await;
    assert!(logged, "error.log says so");

    // Cleared by the administrator: served again, the count starts afresh.
    assert_eq!(admin(&edge, "DELETE", "/api/v1/federation/watch?domain=spray.example").await.status, 200);
    assert_eq!(admin(&edge, "DELETE", "/api/v1/federation/watch?domain=spray.example").await.status, 404, "not on it any more");
    assert_eq!(partner.ask(&message_to("spray.example", "user1", "w3")).await, Some(200));
    edge.stop().await;
}

#[tokio::test]
async fn a_partner_drawing_mostly_not_found_is_flagged_and_throttled_to_one_request_a_second() {
    let (port, _) = answering_next_hop("404 Not Found").await;
    let policy = "[federation]\nerror_min_sample = 10\nerror_share = 0.5\n";
    let (_up, edge, sip) = sip_edge_with(port, policy).await;
    let mut partner = Partner::connect(sip).await;
    for n in 0..10 {
        assert_eq!(partner.ask(&message_to("scan.example", &format!("guess{n}"), &format!("e{n}"))).await, Some(404));
    }
    let watch = admin_json(&edge, "/api/v1/federation/watch").await;
    assert_eq!((watch[0]["domain"].as_str(), watch[0]["reason"].as_str()), (Some("scan.example"), Some("error-share")));
    // Flagged: one request a second.
    let first = partner.ask(&message_to("scan.example", "x", "f1")).await;
    let second = partner.ask(&message_to("scan.example", "y", "f2")).await;
    assert_eq!((first, second), (Some(404), Some(503)), "the first of the second passes, the next is throttled");
    let domains = admin_json(&edge, "/api/v1/federation/domains").await;
    assert_eq!(domains[0]["state"], "flagged");
    assert_eq!((domains[0]["errors"].as_u64(), domains[0]["throttled"].as_u64()), (Some(11), Some(1)));
    edge.stop().await;
}

#[tokio::test]
async fn a_discovered_partner_is_throttled_close_to_its_rate_and_an_allowed_one_never() {
    let (port, _) = answering_next_hop("200 OK").await;
    let (_up, edge, sip) =
        sip_edge_with(port, "[federation]\ndiscovered_rate = 10\n[[federation.allow]]\ndomain = \"partner.example\"\n").await;
    let mut discovered = Partner::connect(sip).await;
    let mut allowed = Partner::connect(sip).await;
    let (mut passed, mut throttled, mut allowed_passed) = (0, 0, 0);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let started = tokio::time::Instant::now();
    for n in 0..100 {
        tick.tick().await;
        match discovered.ask(&message_from("new.example", &format!("t{n}"))).await {
            Some(200) => passed += 1,
            Some(503) => throttled += 1,
            other => panic!("unexpected answer {other:?}"),
        }
        allowed_passed += usize::from(allowed.ask(&message_from("partner.example", &format!("a{n}"))).await == Some(200));
    }
    let seconds = started.elapsed().as_secs_f64();
    // A burst of 10, then 10 a second.
    let expected = 10.0 + 10.0 * seconds;
    assert!(
        (passed as f64) >= expected - 5.0 && (passed as f64) <= expected + 3.0,
        "{passed} passed in {seconds:.1} s (expected ≈ {expected:.0})"
    );
    assert_eq!(passed + throttled, 100);
    assert_eq!(allowed_passed, 100, "allow-listed partners are never throttled");
    let metrics = admin(&edge, "GET", "/metrics").await.body;
    assert!(metrics.contains(&format!("portcullis_sip_requests_total{{decision=\"throttled\"}} {throttled}")), "{metrics}");
    assert!(metrics.contains("portcullis_sip_requests_total{decision=\"allowed\"} 100"), "{metrics}");
    assert!(metrics.contains(&format!("portcullis_sip_responses_total{{class=\"5xx\"}} {throttled}")), "{metrics}");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_time_lists_from_the_api_and_the_cli_apply_at_once_and_are_validated() {
    let (port, seen) = answering_next_hop("200 OK").await;
    let (_up, edge, sip) =
        sip_edge_with(port, "[federation]\ndiscovery = false\n[[federation.block]]\ndomain = \"file-blocked.example\"\n").await;
    let mut partner = Partner::connect(sip).await;
    assert_eq!(partner.ask(&message_from("new-partner.example", "l1")).await, Some(403), "discovery off");
    let cli = |args: &[&str]| {
        let url = format!("http://{}", edge.admin);
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command.args(["federation"]).args(args).args(["--admin", &url, "--token", ADMIN_TOKEN]);
        command.output().unwrap()
    };
    let added = tokio::task::block_in_place(|| cli(&["allow", "add", "New-Partner.example", "--edge", "sip.new-partner.example"]));
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    assert_eq!(partner.ask(&message_from("new-partner.example", "l2")).await, Some(200), "allowed at once");
    let list = tokio::task::block_in_place(|| cli(&["allow", "list", "--json"]));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list, serde_json::json!([{"domain": "new-partner.example", "edge": "sip.new-partner.example", "origin": "runtime"}]));
    let twice = tokio::task::block_in_place(|| cli(&["allow", "add", "new-partner.example"]));
    assert!(!twice.status.success() && String::from_utf8_lossy(&twice.stderr).contains("already on the allow list"), "{twice:?}");
    let bad = admin(&edge, "POST", "/api/v1/federation/block?domain=not%20a%20domain").await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let long = admin(&edge, "POST", &format!("/api/v1/federation/block?domain={}.example", "a".repeat(250))).await;
    assert_eq!(long.status, 400, "longer than 256 characters: {}", long.body);
    for query in ["domain=other.example&edge=", "domain=%20other.example", "domain=other.example&edge=sip.other.example%20"] {
        let refused = admin(&edge, "POST", &format!("/api/v1/federation/allow?{query}")).await;
        assert_eq!(refused.status, 400, "an empty edge or a name with spaces is not a name ({query}): {}", refused.body);
    }
    let in_file = admin(&edge, "DELETE", "/api/v1/federation/block?domain=file-blocked.example").await;
    assert_eq!(in_file.status, 409, "the file's entries change by reload: {}", in_file.body);

    // Blocked while allowed: blocked (the block list wins), 14518 in error.log, connection closed.
    let blocked = tokio::task::block_in_place(|| cli(&["block", "add", "new-partner.example"]));
    assert!(blocked.status.success(), "{}", String::from_utf8_lossy(&blocked.stderr));
    assert_eq!(partner.ask(&message_from("new-partner.example", "l3")).await, Some(403));
    assert_eq!(partner.ask(&message_from("new-partner.example", "l4")).await, None, "the connection was closed");
    let error_log = std::fs::read_to_string(edge.dir.path().join("logs/error.log")).unwrap_or_default();
    assert!(error_log.contains("warning 14518: partner domain new-partner.example is on both"), "{error_log}");
    assert!(!seen.lock().unwrap().contains("Call-ID: l3"), "nothing blocked reached the next hop");
    let domains = tokio::task::block_in_place(|| cli(&["domains"]));
    let text = String::from_utf8_lossy(&domains.stdout);
    assert!(text.lines().any(|l| l.starts_with("new-partner.example") && l.contains("blocked")), "{text}");
    edge.stop().await;
}

#[tokio::test]
async fn in_maintenance_a_call_in_progress_keeps_the_sip_service_draining_until_its_bye() {
    let (port, seen) = answering_next_hop("200 OK").await;
    let (_up, edge, sip) = sip_edge_with(port, "[[federation.allow]]\ndomain = \"partner.example\"\n").await;
    let invite = |call: &str| {
        message_from("partner.example", call)
            .replacen("MESSAGE sip:alice@corp.example", "INVITE sip:alice@corp.example", 1)
            .replace("CSeq: 1 MESSAGE", "CSeq: 1 INVITE")
    };
    let mut partner = Partner::connect(sip).await;
    assert_eq!(partner.ask(&invite("call1")).await, Some(200));
    let sip_state = || async {
        let status = admin_json(&edge, "/api/v1/status").await;
        let sip = status["services"].as_array().unwrap().iter().find(|s| s["name"] == "sip").expect("the SIP service is listed").clone();
        sip["state"].as_str().unwrap().to_string()
    };
    assert_eq!(sip_state().await, "Active");
    assert_eq!(admin(&edge, "POST", "/api/v1/maintenance?enabled=on").await.status, 200);
    assert_eq!(sip_state().await, "Draining (1)", "the call in progress");
    assert_eq!(partner.ask(&invite("call2")).await, Some(503), "no new call");
    let tagged = |call: &str| invite(call).replace("To: <sip:alice@corp.example>", "To: <sip:alice@corp.example>;tag=b1");
    assert_eq!(partner.ask(&tagged("call3")).await, Some(503), "a made-up To tag does not make a new call a re-INVITE");
    assert_eq!(partner.ask(&tagged("call1").replace("CSeq: 1 INVITE", "CSeq: 3 INVITE")).await, Some(200), "a re-INVITE of the call");
    let bye = message_from("partner.example", "call1")
        .replacen("MESSAGE sip:alice@corp.example", "BYE sip:alice@corp.example", 1)
        .replace("To: <sip:alice@corp.example>", "To: <sip:alice@corp.example>;tag=b1")
        .replace("CSeq: 1 MESSAGE", "CSeq: 2 BYE");
    assert_eq!(partner.ask(&bye).await, Some(200), "the call in progress ends normally");
    assert_eq!(sip_state().await, "Inactive (Maintenance mode)");
    let received = seen.lock().unwrap().clone();
    assert!(
        received.contains("BYE sip:alice@corp.example") && !received.contains("Call-ID: call2") && !received.contains("Call-ID: call3"),
        "{received}"
    );
    // One access-log line per final sent to the partner, the edge's own 503 included.
    let logged = eventually_async(Duration::from_secs(3), || async {
        let log = std::fs::read_to_string(edge.dir.path().join("logs/access.log")).unwrap_or_default();
        log.lines().filter(|l| l.contains(" SIP/2.0 ") && l.contains(" partner.example ")).count() >= 3
    })
    .await;
    let log = std::fs::read_to_string(edge.dir.path().join("logs/access.log")).unwrap_or_default();
    assert!(logged, "{log}");
    assert!(log.lines().any(|l| l.contains(" INVITE sip:alice@corp.example SIP/2.0 503 ") && l.contains(" sip ")), "{log}");
    edge.stop().await;
}

/// A SIP edge peer on a shared Redis.
async fn peer(name: &str, redis: &RedisServer, next_hop: u16) -> (crate::support::Upstream, RunningEdge, SocketAddr) {
    sip_edge_with(
        next_hop,
        &format!(
            "[federation]\ndiscovered_rate = 10\nmax_distinct_users = 5\n\
             [cluster]\nstore = \"redis\"\nredis_url = \"{}\"\npeer = \"{name}\"\nheartbeat = \"200ms\"\n",
            redis.url()
        ),
    )
    .await
}

#[tokio::test]
async fn two_peers_on_one_redis_share_lists_watch_list_and_throttle() {
    let Some(redis) = RedisServer::start() else { return };
    let (port_a, _) = answering_next_hop("200 OK").await;
    let (port_b, _) = answering_next_hop("200 OK").await;
    let (_up_a, a, sip_a) = peer("a", &redis, port_a).await;
    let (_up_b, b, sip_b) = peer("b", &redis, port_b).await;
    let subscribed =
        crate::support::eventually(Duration::from_secs(5), || redis.subscribers(portcullis::cluster::redis::CHANGES_CHANNEL) >= 2).await;
    assert!(subscribed, "both peers follow the store");
    let (mut on_a, mut on_b) = (Partner::connect(sip_a).await, Partner::connect(sip_b).await);

    // A block on a applies on b within a second.
    assert_eq!(admin(&a, "POST", "/api/v1/federation/block?domain=rogue.example").await.status, 200);
    let started = tokio::time::Instant::now();
    let applied = eventually_async(Duration::from_secs(1), || async {
        Partner::connect(sip_b).await.ask(&message_from("rogue.example", "r")).await == Some(403)
    })
    .await;
    assert!(applied, "b refuses rogue.example within a second (took {:?})", started.elapsed());
    let listed = admin_json(&b, "/api/v1/federation/block").await;
    assert_eq!(listed[0]["domain"], "rogue.example");

    // One throttle for the cluster: 10 a second between both peers.
    let mut passed = 0;
    let started = tokio::time::Instant::now();
    for n in 0..30 {
        let partner = if n % 2 == 0 { &mut on_a } else { &mut on_b };
        passed += usize::from(partner.ask(&message_from("burst.example", &format!("t{n}"))).await == Some(200));
    }
    // A sliding window of one second: 10 in any second, for both peers together.
    let most = 10 * (1 + started.elapsed().as_secs() as usize);
    assert!(passed >= 10 && passed <= most, "{passed} passed in {:?}: the cluster's throttle, not 10 per peer", started.elapsed());

    // Distinct users counted across peers: the 6th (max 5) is refused, on either peer.
    for n in 0..5 {
        let partner = if n % 2 == 0 { &mut on_a } else { &mut on_b };
        assert_eq!(partner.ask(&message_to("spray.example", &format!("u{n}"), &format!("s{n}"))).await, Some(200));
    }
    assert_eq!(on_b.ask(&message_to("spray.example", "u5", "s5")).await, Some(403), "the sixth user across peers");
    let refused_on_a = eventually_async(Duration::from_secs(1), || async {
        Partner::connect(sip_a).await.ask(&message_to("spray.example", "u0", "s6")).await == Some(403)
    })
    .await;
    assert!(refused_on_a, "a applies b's watch-list entry within a second");
    a.stop().await;
    b.stop().await;
}

/// A discovered partner's in-dialog requests go to the devices the inside's 2xx named (their
/// Contact): they are not more users, so a partner calling a few people is not watch-listed
/// for its ACKs, re-INVITEs and BYEs; a request to any other URI still counts.
#[tokio::test]
async fn in_dialog_requests_to_a_calls_device_are_not_counted_as_more_users() {
    let (port, _seen) = answering_next_hop("200 OK").await;
    let (_up, edge, sip) = sip_edge_with(port, "[federation]\nmax_distinct_users = 2\n").await;
    let invite = |user: &str, device: &str, call: &str| {
        message_to("partner.example", user, call)
            .replacen("MESSAGE sip:", "INVITE sip:", 1)
            .replace("CSeq: 1 MESSAGE", &format!("CSeq: 1 INVITE\r\nContact: <sip:{user}@{device};transport=tcp>"))
    };
    let in_dialog = |method: &str, user: &str, device: &str, call: &str, cseq: u32| {
        message_to("partner.example", user, call)
            .replacen(&format!("MESSAGE sip:{user}@corp.example"), &format!("{method} sip:{user}@{device};transport=tcp"), 1)
            .replace(&format!("To: <sip:{user}@corp.example>"), &format!("To: <sip:{user}@corp.example>;tag=t{call}"))
            .replace("CSeq: 1 MESSAGE", &format!("CSeq: {cseq} {method}"))
    };
    let mut partner = Partner::connect(sip).await;
    assert_eq!(partner.ask(&invite("alice", "10.9.9.1:5070", "d1")).await, Some(200));
    assert_eq!(partner.ask(&invite("carol", "10.9.9.2:5070", "d2")).await, Some(200));
    for (cseq, method) in [(2, "INFO"), (3, "INVITE")] {
        assert_eq!(partner.ask(&in_dialog(method, "alice", "10.9.9.1:5070", "d1", cseq)).await, Some(200), "{method} to alice's device");
        assert_eq!(partner.ask(&in_dialog(method, "carol", "10.9.9.2:5070", "d2", cseq)).await, Some(200), "{method} to carol's device");
    }
    assert!(admin_json(&edge, "/api/v1/federation/watch").await.as_array().unwrap().is_empty(), "two users, not six");
    // Another URI on a call's Call-ID is a third user.
    assert_eq!(partner.ask(&in_dialog("INFO", "dave", "10.9.9.3:5070", "d1", 4)).await, Some(403));
    edge.stop().await;
}

#[tokio::test]
async fn a_partner_over_ipv6_is_served_and_answered_on_its_connection() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        return missing("IPV6", "no IPv6 loopback on this machine");
    }
    let (port, seen) = answering_next_hop("200 OK").await;
    let up = crate::support::Upstream::start("web").await;
    let edge = crate::support::TestEdge::new()
        .proxy("web", "/", &[(up.addr, 1, 0)], "")
        .raw(&format!(
            "[[sip.listener]]\nname = \"partners6\"\naddress = \"[::1]:0\"\ntransport = \"tcp\"\n\
             [sip]\nnext_hop = \"sip:127.0.0.1:{port};transport=tcp\"\n[[federation.allow]]\ndomain = \"partner.example\"\n"
        ))
        .start()
        .await;
    let sip = edge
        .running()
        .runtime
        .listeners
        .all()
        .into_iter()
        .find(|b| b.protocol == portcullis::runtime::listeners::Protocol::SipTcp)
        .expect("the SIP listener runs")
        .address;
    assert!(sip.is_ipv6(), "{sip}");
    let mut partner = Partner::connect(sip).await;
    assert_eq!(partner.ask(&message_from("partner.example", "v6")).await, Some(200), "the answer comes back over IPv6");
    let received = seen.lock().unwrap().clone();
    assert!(
        received.contains(&format!("Via: SIP/2.0/TCP [::1]:{};branch=z9hG4bK", sip.port())),
        "the edge's Via brackets its IPv6 host: {received}"
    );
    assert!(received.contains("received=::1"), "the partner's address stamped on its Via: {received}");
    edge.stop().await;
}
