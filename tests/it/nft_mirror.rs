//! The nftables kernel mirror, for real: the `portcullis` binary runs inside a network
//! namespace this test creates (`ip netns`), clients are `curl` processes inside it bound to
//! chosen source addresses, and the kernel sets are read back with `nft`. Needs root and
//! `nft`; skipped with a message otherwise (`PORTCULLIS_REQUIRE_NFT=1` turns the skip into a
//! failure, as `.ci/run` does).

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use crate::support::netns::Netns;
use crate::support::{ADMIN_TOKEN, argon2_hash};

const EDGE_V4: &str = "127.0.0.1:18080";
const EDGE_V6: &str = "[::1]:18082";
const ADMIN: &str = "127.0.0.1:18081";

/// A network namespace (and the edge inside it) removed on drop, even when an assertion fails.
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
        let ns = Namespace { netns: Netns::create("pc-nft"), edge: None };
        for address in ["2001:db8::5/64", "2001:db8::6/64", "2001:db8:1::7/64", "2001:db8:0:5::8/64"] {
            ns.run(&["ip", "-6", "addr", "add", address, "dev", "lo", "nodad"]);
        }
        ns
    }

    /// The HTTP status a `curl` from `source` gets ("000" when no answer within 10 s: an
    /// answer is expected, and checking a password takes a while on a loaded machine).
    fn status_from(&self, source: &str, url: &str, user: &str) -> String {
        self.status_within(source, url, user, 10)
    }

    /// The HTTP status a `curl` from `source` gets within `seconds` ("000" when none: a
    /// source the kernel drops gets no answer at all).
    fn status_within(&self, source: &str, url: &str, user: &str, seconds: u32) -> String {
        let max_time = seconds.to_string();
        let curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", &max_time];
        let out = self.exec(&[&curl[..], &["--interface", source, "-u", user, url]].concat());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start_edge(&mut self, config: &Path) {
        let child =
            crate::support::spawn_in_netns(&self.name, &[env!("CARGO_BIN_EXE_portcullis"), "serve", "--config", config.to_str().unwrap()]);
        self.edge = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if self.status_within("127.0.0.1", &format!("http://{EDGE_V4}/"), "nobody:x", 5) == "401" {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("edge did not answer inside the namespace within 30 s");
    }

    /// SIGTERM and wait (a clean shutdown deletes the table).
    fn stop_edge(&mut self) {
        if let Some(child) = self.edge.take() {
            crate::support::stop_with_sigterm(child, Duration::from_secs(5));
        }
    }

    fn set(&self, name: &str) -> String {
        let out = self.exec(&["nft", "list", "set", "inet", "portcullis", name]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for_set(&self, name: &str, predicate: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        for _ in 0..100 {
            last = self.set(name);
            if predicate(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("set {name} never reached the expected state:\n{last}");
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
    crate::support::netns::can_run("the nftables mirror test")
}

#[test]
fn bans_reach_the_kernel_set_and_unbans_and_restarts_keep_it_in_step() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(&users, format!("[users]\nalice = \"{}\"\n", argon2_hash("pw"))).unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nname = \"localhost\"\nstate_dir = \"{d}/state\"\nlog_dir = \"{d}/logs\"\n\
             [[listener]]\nname = \"v4\"\naddress = \"{EDGE_V4}\"\n[[listener]]\nname = \"v6\"\naddress = \"{EDGE_V6}\"\n\
             [admin]\naddress = \"{ADMIN}\"\ntoken = \"{ADMIN_TOKEN}\"\n\
             [[service]]\nname = \"desk\"\nauth = \"basic\"\n[[service.upstream]]\naddress = \"127.0.0.1:9\"\n\
             [[route]]\npath = \"/\"\nservice = \"desk\"\n[auth.basic]\nusers_file = \"{u}\"\n\
             [protection]\nnftables_set = true\n[protection.categories.http-auth-failure]\ntrigger = 3\nban = \"10m\"\n",
            d = dir.path().display(),
            u = users.display(),
        ),
    )
    .unwrap();
    let mut ns = Namespace::create();
    ns.start_edge(&config);
    let v4 = format!("http://{EDGE_V4}/");
    let v6 = format!("http://{EDGE_V6}/");

    // The table exists, protects exactly the listener ports, and starts empty.
    let table = ns.run(&["nft", "list", "table", "inet", "portcullis"]);
    assert!(table.contains("elements = { 18080, 18082 }"), "{table}");
    assert!(!ns.set("banned4").contains("elements"), "{}", ns.set("banned4"));
    // A listener a reload adds is guarded too (and one it removes no longer is).
    let original = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, original.replace("[admin]", "[[listener]]\nname = \"extra\"\naddress = \"127.0.0.1:18083\"\n[admin]")).unwrap();
    let reload = ns.exec(&[env!("CARGO_BIN_EXE_portcullis"), "reload", "--config", config.to_str().unwrap()]);
    assert!(reload.status.success(), "{}", String::from_utf8_lossy(&reload.stderr));
    ns.wait_for_set("ports", |s| s.contains("18083"));
    std::fs::write(&config, &original).unwrap();
    let reload = ns.exec(&[env!("CARGO_BIN_EXE_portcullis"), "reload", "--config", config.to_str().unwrap()]);
    assert!(reload.status.success(), "{}", String::from_utf8_lossy(&reload.stderr));
    ns.wait_for_set("ports", |s| !s.contains("18083") && s.contains("18080"));

    // Three failures from 127.0.0.2 ban it; the kernel then drops its packets (no answer at
    // all), while a neighbour still reaches the edge.
    for _ in 0..3 {
        assert_eq!(ns.status_from("127.0.0.2", &v4, "mallory:guess"), "401");
    }
    let banned = ns.wait_for_set("banned4", |s| s.contains("127.0.0.2"));
    assert!(banned.contains("timeout 10m"), "{banned}");
    assert_eq!(ns.status_within("127.0.0.2", &v4, "alice:pw", 2), "000", "kernel drops the banned source");
    assert_eq!(ns.status_from("127.0.0.3", &v4, "alice:pw"), "502", "others still reach the edge (no upstream behind it)");

    // IPv6: banned per /64 in the kernel too, so the neighbour in the same /64 is dropped,
    // another /64 is not.
    for _ in 0..3 {
        assert_eq!(ns.status_from("2001:db8::5", &v6, "mallory:guess"), "401");
    }
    // Stored as the prefix's first address; the rule masks the source to its /64.
    ns.wait_for_set("banned6", |s| s.contains("{ 2001:db8:: "));
    assert_eq!(ns.status_within("2001:db8::6", &v6, "alice:pw", 2), "000");
    assert_eq!(ns.status_from("2001:db8:1::7", &v6, "alice:pw"), "502");

    // `blocked unblock` removes the element at once.
    let unblock = ns.exec(&[env!("CARGO_BIN_EXE_portcullis"), "blocked", "unblock", "127.0.0.2", "--config", config.to_str().unwrap()]);
    assert!(unblock.status.success(), "{}", String::from_utf8_lossy(&unblock.stderr));
    ns.wait_for_set("banned4", |s| !s.contains("127.0.0.2"));
    assert_eq!(ns.status_from("127.0.0.2", &v4, "alice:pw"), "502");
    // An IPv6 ban is lifted in the kernel too (once refused by nft on an interval set).
    let unblock = ns.exec(&[env!("CARGO_BIN_EXE_portcullis"), "blocked", "unblock", "2001:db8::", "--config", config.to_str().unwrap()]);
    assert!(unblock.status.success(), "{}", String::from_utf8_lossy(&unblock.stderr));
    ns.wait_for_set("banned6", |s| !s.contains("2001:db8::"));
    assert_eq!(ns.status_from("2001:db8::6", &v6, "alice:pw"), "502", "the lifted /64 reaches the edge again");
    for _ in 0..3 {
        assert_eq!(ns.status_from("2001:db8::5", &v6, "mallory:guess"), "401");
    }
    ns.wait_for_set("banned6", |s| s.contains("{ 2001:db8:: "));

    // A reload that changes protection.ipv6_prefix reaches the kernel at once: the rule masks
    // sources per /48, so the ban in force covers its whole /48 (another /64 of it is dropped
    // too), and another /48 still gets in.
    assert_eq!(ns.status_from("2001:db8:0:5::8", &v6, "alice:pw"), "502", "per /64, another /64 is not banned");
    std::fs::write(&config, original.replace("[protection]\n", "[protection]\nipv6_prefix = 48\n")).unwrap();
    let reload = ns.exec(&[env!("CARGO_BIN_EXE_portcullis"), "reload", "--config", config.to_str().unwrap()]);
    assert!(reload.status.success(), "{}", String::from_utf8_lossy(&reload.stderr));
    let chain = || ns.run(&["nft", "list", "chain", "inet", "portcullis", "input"]);
    let per_48 = (0..100).any(|_| {
        chain().contains("ip6 saddr & ffff:ffff:ffff:: == @banned6") || {
            std::thread::sleep(Duration::from_millis(50));
            false
        }
    });
    assert!(per_48, "the mirror's rule masks per /48: {}", chain());
    assert!(ns.set("banned6").contains("{ 2001:db8:: "), "the ban in force is kept: {}", ns.set("banned6"));
    assert_eq!(ns.status_within("2001:db8:0:5::8", &v6, "alice:pw", 2), "000", "the banned /48 is dropped whole");
    assert_eq!(ns.status_from("2001:db8:1::7", &v6, "alice:pw"), "502", "another /48 still gets in");
    let errors = std::fs::read_to_string(dir.path().join("logs/error.log")).unwrap();
    assert!(errors.contains("the kernel ban mirror now bans IPv6 sources per /48"), "{errors}");

    // A clean stop deletes the table; a restart rebuilds it from the persisted bans.
    ns.stop_edge();
    let gone = ns.exec(&["nft", "list", "table", "inet", "portcullis"]);
    assert!(!gone.status.success(), "table left behind after shutdown");
    ns.start_edge(&config);
    let restored = ns.set("banned6");
    assert!(restored.contains("{ 2001:db8:: "), "{restored}");
    assert!(!ns.set("banned4").contains("127.0.0.2"), "an unbanned source stays unbanned");
    // Tables Portcullis does not own are never touched.
    ns.run(&["nft", "add", "table", "inet", "operator"]);
    ns.stop_edge();
    assert!(ns.run(&["nft", "list", "tables"]).contains("table inet operator"));
}
