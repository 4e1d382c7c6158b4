//! Log shipping through a network partition, and the firewall's log shipped, in a network
//! namespace this test creates (root, `nft`, `curl` and rsyslog; skipped otherwise, a failure
//! with `PORTCULLIS_REQUIRE_NFT=1` as in CI). The edge (the real binary) and a real `rsyslogd`
//! both run inside it, on its own 127.0.0.1, so that `nft` can cut the link between them.
//!
//! RFC 5425 has no acknowledgements: a line counts as delivered once the connection stayed up
//! for the delivery grace after it. Cut off by the network, a connection stays "up" for
//! minutes of retransmissions, so the edge must not take that for delivery: the server's
//! TCP must have acknowledged what was sent, or the kernel ends the connection first
//! (`TCP_USER_TIMEOUT`, shorter than the grace). The test cuts the link while lines are
//! written, waits past the grace, kills the server (the unacknowledged bytes die with it),
//! heals the link and starts a new server: every line must arrive.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use super::rsyslog::{self, Listener, Pki, Rsyslog};
use super::{all_arrive, counts, parse, request_numbers, ship_section};
use crate::support::netns::Netns;
use crate::support::{ADMIN_TOKEN, eventually};

const HTTP: &str = "127.0.0.1:18090";
const ADMIN: &str = "127.0.0.1:18091";
const TABLE: &str = "pc_ship_fw";

/// The namespace, with the edge and the partition table in it; removed on drop.
struct Namespace {
    netns: Netns,
    edge: Option<Child>,
}

impl std::ops::Deref for Namespace {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.netns
    }
}

impl Namespace {
    fn create() -> Namespace {
        let ns = Namespace { netns: Netns::create("pc-ship"), edge: None };
        // The firewall's external interface (nothing comes in on it here).
        ns.run(&["ip", "link", "add", "ext0", "type", "veth", "peer", "name", "ext1"]);
        ns.run(&["ip", "addr", "add", "192.0.2.1/24", "dev", "ext0"]);
        ns.run(&["ip", "link", "set", "ext0", "up"]);
        ns.run(&["ip", "link", "set", "ext1", "up"]);
        ns
    }

    fn start_edge(&mut self, config: &Path) {
        self.edge = Some(crate::support::spawn_in_netns(
            &self.name,
            &[env!("CARGO_BIN_EXE_portcullis"), "serve", "--config", config.to_str().unwrap()],
        ));
        let up = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            self.exec(&["curl", "-s", "-o", "/dev/null", &format!("http://{ADMIN}/health")]).status.success()
        });
        assert!(up, "the edge did not start in the namespace");
    }

    /// `/r/<from>` … `/r/<to>` through the edge (one access-log line each).
    fn requests(&self, from: u64, to: u64) {
        let url = format!("http://{HTTP}/r/[{from}-{to}]");
        self.run(&["curl", "-s", "-o", "/dev/null", "--max-time", "30", &url]);
    }

    /// Drops every packet to and from `port` (both directions cross `output` on loopback).
    fn cut(&self, port: u16) {
        let rules = format!(
            "table inet pc_partition {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  tcp dport {port} drop\n  tcp sport {port} drop\n }}\n}}\n"
        );
        let file = std::env::temp_dir().join(format!("pc-partition-{}.nft", std::process::id()));
        std::fs::write(&file, rules).unwrap();
        self.run(&["nft", "-f", file.to_str().unwrap()]);
        let _ = std::fs::remove_file(file);
    }

    fn heal(&self) {
        self.run(&["nft", "delete", "table", "inet", "pc_partition"]);
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(mut child) = self.edge.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn can_run() -> bool {
    crate::support::netns::can_run("the log-shipping partition test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_written_while_the_network_is_cut_are_not_lost_with_the_server_and_firewall_lines_are_shipped() {
    if !can_run() || !rsyslog::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut ns = Namespace::create();
    let mut server = Rsyslog::start_in(&dir.path().join("rs"), &pki, Listener::MutualTls, Some(&ns.name));
    let edge_dir = dir.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();
    let config = edge_dir.join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nname = \"localhost\"\nstate_dir = \"{d}/state\"\nlog_dir = \"{d}/logs\"\n\
             [[listener]]\nname = \"http\"\naddress = \"{HTTP}\"\ntls = false\n\
             [admin]\naddress = \"{ADMIN}\"\ntoken = \"{ADMIN_TOKEN}\"\n\
             [[service]]\nname = \"web\"\n[[service.upstream]]\naddress = \"127.0.0.1:1\"\n[[route]]\npath = \"/\"\nservice = \"web\"\n\
             [firewall]\nenabled = true\ninterface = \"ext0\"\ntable = \"{TABLE}\"\n{ship}",
            d = edge_dir.display(),
            ship = ship_section(&server, "tls", &pki.ca, Some((&pki.client_cert, &pki.client_key)), "")
        ),
    )
    .unwrap();
    ns.start_edge(&config);

    // Shipping works, and the firewall's start is among what was shipped.
    ns.requests(0, 49);
    assert!(all_arrive(&server, 50, Duration::from_secs(30)).await, "{}", server.output());
    let shipped_firewall = eventually(Duration::from_secs(10), || {
        server.received().iter().filter_map(|l| parse(l)).any(|r| r.msgid == "firewall" && r.pri == "85" && r.msg.contains(TABLE))
    })
    .await;
    let logged = std::fs::read_to_string(edge_dir.join("logs/firewall.log")).unwrap_or_default();
    assert!(shipped_firewall, "firewall.log has {logged:?}; received {:?}", server.received());

    // The link is cut while 50 more lines are written; well past the delivery grace the
    // server dies (with whatever its TCP got), the link heals, a new server starts.
    ns.cut(server.address.port());
    ns.requests(50, 99);
    tokio::time::sleep(Duration::from_secs(10)).await;
    server.stop(true);
    ns.heal();
    server.restart();
    let arrived = all_arrive(&server, 100, Duration::from_secs(60)).await;
    let have = counts(&request_numbers(&server));
    let missing: Vec<u64> = (0..100).filter(|i| !have.contains_key(i)).collect();
    assert!(arrived, "lost across the partition: {missing:?}");
}
