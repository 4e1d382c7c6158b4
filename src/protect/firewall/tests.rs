//! The firewall's ruleset: its shape (what is opened, exempt, limited, dropped, in which
//! order), and `nft -c` (the real parser, nothing applied) accepting every variant.

use std::time::Duration;

use std::net::SocketAddr;

use super::*;
use crate::config::{PacketRate, RateUnit};

/// `PORTCULLIS_REQUIRE_*`, shared with the integration tests.
use crate::cluster::redis::tests::external;

fn firewall() -> FirewallConfig {
    FirewallConfig {
        interface: "veth-e".to_string(),
        table: "pc_test".to_string(),
        new_connections: PacketRate { count: 50, unit: RateUnit::Second },
        burst: 100,
        global_new_connections: PacketRate { count: 5000, unit: RateUnit::Second },
        exempt: vec![("10.0.0.0".parse().unwrap(), 24)],
        load_balancers: vec![("10.0.0.10".parse().unwrap(), 32), ("2001:db8::10".parse().unwrap(), 128)],
        load_balancers_only: false,
        hardening: true,
    }
}

/// Listeners on every IPv4 and IPv6 address at `ports`.
fn everywhere(ports: &[u16]) -> Vec<SocketAddr> {
    ports.iter().flat_map(|p| [format!("0.0.0.0:{p}").parse().unwrap(), format!("[::]:{p}").parse().unwrap()]).collect()
}

fn bans() -> Vec<MirroredBan> {
    vec![("203.0.113.7".parse().unwrap(), 32, Duration::from_secs(600)), ("2001:db8:1::".parse().unwrap(), 64, Duration::from_secs(60))]
}

/// The line of `ruleset` that contains `needle` (its index), or a failure naming it.
fn line_of(ruleset: &str, needle: &str) -> usize {
    ruleset.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle:?} in\n{ruleset}"))
}

#[test]
fn only_the_running_listeners_ports_open_and_everything_else_new_is_dropped() {
    let ruleset = render(&firewall(), 64, &everywhere(&[443, 5061]));
    assert!(
        ruleset.contains(
            "set open4 { type ipv4_addr . inet_service; flags interval; auto-merge; elements = { 0.0.0.0/0 . 443, 0.0.0.0/0 . 5061 }; }"
        ),
        "{ruleset}"
    );
    assert!(
        ruleset
            .contains("set open6 { type ipv6_addr . inet_service; flags interval; auto-merge; elements = { ::/0 . 443, ::/0 . 5061 }; }"),
        "{ruleset}"
    );
    let closed = line_of(&ruleset, "counter name closed drop");
    let accepted = line_of(&ruleset, "ip daddr . tcp dport @open4 ct timeout set \"half_open4\" counter name accepted accept");
    assert!(accepted < closed, "the ports are admitted before the default drop");
    let none = render(&firewall(), 64, &[]);
    assert!(none.contains("set open4 { type ipv4_addr . inet_service; flags interval; auto-merge; }"), "no listener, no port: {none}");
    // A listener on one address opens its port there only (an admin API on an internal
    // address is not reachable through the external ones); IPv4 opens nothing for IPv6.
    let one = render(&firewall(), 64, &["10.0.0.1:9443".parse().unwrap()]);
    assert!(one.contains("elements = { 10.0.0.1/32 . 9443 }"), "{one}");
    assert!(one.contains("set open6 { type ipv6_addr . inet_service; flags interval; auto-merge; }"), "{one}");
}

#[test]
fn new_connections_the_host_would_forward_from_the_external_interface_are_dropped() {
    let ruleset = render(&firewall(), 64, &everywhere(&[443]));
    let chain = line_of(&ruleset, "type filter hook forward priority filter - 10;");
    let others = line_of(&ruleset, "iifname != \"veth-e\" accept");
    let replies = chain + line_of(&ruleset.lines().skip(chain).collect::<Vec<_>>().join("\n"), "ct state established,related accept");
    let dropped = line_of(&ruleset, "counter name forwarded drop");
    assert!(chain < replies && replies < dropped && others < dropped, "{ruleset}");
    let soft = render(&FirewallConfig { hardening: false, ..firewall() }, 64, &[]);
    assert!(soft.contains("counter name forwarded drop"), "default deny, not hardening: {soft}");
}

#[test]
fn a_change_of_the_running_listeners_rewrites_the_open_sets_alone() {
    let script =
        render_open_ports(&firewall(), &["0.0.0.0:443".parse().unwrap(), "[::]:443".parse().unwrap(), "10.0.0.1:9443".parse().unwrap()]);
    assert_eq!(
        script,
        "flush set inet pc_test open4\nadd element inet pc_test open4 { 0.0.0.0/0 . 443, 10.0.0.1/32 . 9443 }\n\
         flush set inet pc_test open6\nadd element inet pc_test open6 { ::/0 . 443 }\n"
    );
    assert_eq!(
        render_open_ports(&firewall(), &[]),
        "flush set inet pc_test open4\nflush set inet pc_test open6\n",
        "no listener: nothing open"
    );
}

#[test]
fn the_table_is_replaced_as_a_whole_and_no_other_table_is_named() {
    let ruleset = render(&firewall(), 64, &everywhere(&[443]));
    assert!(ruleset.starts_with("table inet pc_test {}\ndelete table inet pc_test\ntable inet pc_test {"), "{ruleset}");
    for line in ruleset.lines().filter(|l| l.contains("table ") || l.contains(" inet ")) {
        assert!(line.contains("inet pc_test"), "a statement outside our table: {line}");
    }
}

#[test]
fn limits_run_in_order_exempt_then_per_source_then_the_global_budget() {
    let ruleset = render(&firewall(), 64, &everywhere(&[443]));
    let exempt = line_of(&ruleset, "ip daddr . tcp dport @open4 ip saddr @exempt4 accept");
    let per_source = line_of(&ruleset, "add @meter4 { ip saddr . tcp dport limit rate 50/second burst 100 packets } add @tracked4");
    let per_prefix = line_of(&ruleset, "add @meter6 { ip6 saddr & ffff:ffff:ffff:ffff:: . tcp dport limit rate 50/second");
    let global = line_of(&ruleset, "limit name global_new counter name rate_global drop");
    assert!(ruleset.contains("limit global_new { rate over 5000/second burst 5000 packets }"), "one budget for both families: {ruleset}");
    let tracked = line_of(&ruleset, "ip saddr . tcp dport @tracked4 counter name rate_per_source drop");
    // The meter is only ever updated, never looked up: a lookup in a set whose elements carry
    // a limit runs the limit again (each SYN would cost two tokens: half the rate).
    for line in ruleset.lines().filter(|l| l.contains("@meter")) {
        assert!(line.contains("add @meter4 {") || line.contains("add @meter6 {"), "a lookup in the meter: {line}");
    }
    assert!(exempt < per_source && per_source < tracked && tracked < per_prefix && per_prefix < global, "{ruleset}");
    // All before conntrack (what they drop gets no conntrack entry), and for connection
    // attempts to this host only.
    let chain = line_of(&ruleset, "type filter hook prerouting priority raw + 10;");
    let syn_only = line_of(&ruleset, "tcp flags & (syn|ack) != syn accept");
    let local_only = line_of(&ruleset, "fib daddr type != local accept");
    let input = line_of(&ruleset, "type filter hook input priority filter - 10;");
    assert!(chain < syn_only && syn_only < local_only && local_only < exempt && global < input, "{ruleset}");
    // RSTs are limited per source, not with one budget for everyone.
    assert!(ruleset.contains("tcp flags & rst == rst add @rst4 { ip saddr limit rate over 10/second burst 20 packets }"), "{ruleset}");
    // The load balancers are exempt too.
    assert!(
        ruleset.contains("set exempt4 { type ipv4_addr; flags interval; auto-merge; elements = { 10.0.0.0/24, 10.0.0.10/32 }; }"),
        "{ruleset}"
    );
    assert!(ruleset.contains("set exempt6 { type ipv6_addr; flags interval; auto-merge; elements = { 2001:db8::10/128 }; }"), "{ruleset}");
    assert!(!ruleset.contains("not_load_balancer drop"), "load_balancers_only is off");
}

#[test]
fn an_admitted_connection_keeps_a_half_open_conntrack_entry_for_seconds_not_a_minute() {
    let ruleset = render(&firewall(), 64, &everywhere(&[443]));
    let t = HALF_OPEN_TIMEOUT_S;
    for (name, family) in [("half_open4", "ip"), ("half_open6", "ip6")] {
        let object = format!("ct timeout {name} {{ protocol tcp; l3proto {family}; policy = {{ syn_sent: {t}, syn_recv: {t} }}; }}");
        assert!(ruleset.contains(&object), "{object} in {ruleset}");
    }
    // Set where conntrack has made the entry and not confirmed it yet: in the input chain (in
    // `new_connections`, before conntrack, the kernel ignores it: checked on this machine).
    let input = line_of(&ruleset, "type filter hook input priority filter - 10;");
    let v4 = line_of(&ruleset, "ip daddr . tcp dport @open4 ct timeout set \"half_open4\" counter name accepted accept");
    let v6 = line_of(&ruleset, "ip6 daddr . tcp dport @open6 ct timeout set \"half_open6\" counter name accepted accept");
    assert!(input < v4 && input < v6, "{ruleset}");
}

#[test]
fn load_balancers_only_drops_every_other_source_before_any_accept() {
    let ruleset = render(&FirewallConfig { load_balancers_only: true, ..firewall() }, 64, &everywhere(&[443]));
    let only4 = line_of(&ruleset, "ip daddr . tcp dport @open4 ip saddr != @lb4 counter name not_load_balancer drop");
    let only6 = line_of(&ruleset, "ip6 daddr . tcp dport @open6 ip6 saddr != @lb6 counter name not_load_balancer drop");
    let first_accept = line_of(&ruleset, "counter name accepted accept");
    assert!(only4 < first_accept && only6 < first_accept, "{ruleset}");
}

#[test]
fn hardening_sits_where_it_can_see_the_packets() {
    let ruleset = render(&firewall(), 64, &everywhere(&[443]));
    // Fragments before conntrack reassembles them (-400).
    let fragments = line_of(&ruleset, "type filter hook prerouting priority -450;");
    assert!(line_of(&ruleset, "ip frag-off & 0x3fff != 0 counter name fragments drop") > fragments);
    // RST and ICMP limits before the conntrack accept: in the raw prerouting chain.
    let raw = line_of(&ruleset, "type filter hook prerouting priority raw;");
    let input = line_of(&ruleset, "type filter hook input priority filter - 10;");
    for rule in ["counter name rst_rate drop", "counter name icmp_echo drop", "counter name mss drop", "counter name tcp_syn_fin drop"] {
        let at = line_of(&ruleset, rule);
        assert!(raw < at && at < input, "{rule} belongs in the raw chain");
    }
    // Neighbour discovery and PMTU pass before anything can drop them.
    let nd = line_of(&ruleset, "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert");
    assert!(nd < line_of(&ruleset, "ct state invalid counter name invalid drop"));
    assert!(ruleset.contains("packet-too-big"));
    // An exempt source must arrive where its route is (a forged load balancer skips limits).
    assert!(ruleset.contains("ip saddr @exempt4 fib saddr . iif oif missing counter name spoofed drop"), "{ruleset}");
    // Both tables carry the mark that tells them from an operator's table of the same name.
    assert!(ruleset.contains(&format!("counter {OWNER_MARK} {{}}")), "{ruleset}");
    assert!(render_bans(&firewall(), 64, &[]).contains(&format!("counter {OWNER_MARK} {{}}")));
    // Spoofed sources, except what the operator exempted.
    assert!(ruleset.contains("ip saddr != @exempt4 ip saddr @spoofed4 counter name spoofed drop"));
    assert!(ruleset.contains("10.0.0.0/8") && ruleset.contains("fc00::/7"));

    let soft = render(&FirewallConfig { hardening: false, ..firewall() }, 64, &everywhere(&[443]));
    for gone in ["priority -450", "priority raw;", "counter name invalid drop", "new_without_syn drop"] {
        assert!(!soft.contains(gone), "hardening = false keeps no {gone}");
    }
    assert!(soft.contains("counter name closed drop"), "default deny stays without hardening");
    assert!(soft.contains("counter name rate_global drop"), "the limits stay without hardening");
}

#[test]
fn bans_live_in_the_sibling_table_and_are_dropped_before_the_rules() {
    let rules = render(&firewall(), 64, &everywhere(&[443]));
    assert!(!rules.contains("banned"), "a replacement of the rules never re-sends the bans: {rules}");
    let bans = render_bans(&firewall(), 64, &bans());
    assert!(bans.starts_with("table inet pc_test_bans {}\ndelete table inet pc_test_bans\ntable inet pc_test_bans {"), "{bans}");
    assert!(bans.contains("type filter hook input priority filter - 20;"), "before the rules' filter - 10: {bans}");
    assert!(bans.contains("iifname != \"veth-e\" accept"), "{bans}");
    assert!(bans.contains("add element inet pc_test_bans banned4 { 203.0.113.7 timeout 600s }"), "{bans}");
    assert!(bans.contains("add element inet pc_test_bans banned6 { 2001:db8:1:: timeout 60s }"), "{bans}");
    assert!(bans.contains("ip6 saddr & ffff:ffff:ffff:ffff:: @banned6 counter name banned drop"), "{bans}");
    for line in bans.lines().filter(|l| l.contains(" inet ")) {
        assert!(line.contains("inet pc_test_bans"), "a statement outside the ban table: {line}");
    }
}

/// `nft -c` (check only, applies nothing) on every variant, and on the ban mirror's own
/// table. Needs `nft` and CAP_NET_ADMIN (CI is root); skipped otherwise unless
/// `PORTCULLIS_REQUIRE_NFT` is set.
#[test]
fn nft_accepts_every_variant() {
    let probe = std::process::Command::new("nft").args(["-c", "-f", "-"]).stdin(std::process::Stdio::piped()).output();
    let usable = probe.as_ref().is_ok_and(|o| o.status.success());
    if !usable {
        external::missing("NFT", "nft -c is not usable here (not installed, or no CAP_NET_ADMIN)");
        return;
    }
    let variants = [
        render(&firewall(), 64, &everywhere(&[443, 5061])),
        render(&FirewallConfig { load_balancers_only: true, ..firewall() }, 48, &everywhere(&[443])),
        render(&FirewallConfig { hardening: false, exempt: vec![], load_balancers: vec![], ..firewall() }, 128, &everywhere(&[])),
        render(
            &FirewallConfig { new_connections: PacketRate { count: 600, unit: RateUnit::Minute }, ..firewall() },
            64,
            &everywhere(&[80]),
        ),
        // The open sets rewritten in a table that exists (checked in one transaction with it).
        format!("{}{}", render(&firewall(), 64, &everywhere(&[443])), render_open_ports(&firewall(), &everywhere(&[443, 5061]))),
        render_bans(&firewall(), 64, &bans()),
        render_bans(&firewall(), 48, &[]),
        crate::protect::nft::mirror_table("pc_test", &[443], 64, &bans()),
    ];
    for ruleset in variants {
        let mut child = std::process::Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(ruleset.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "nft -c refused:\n{}\n---\n{ruleset}", String::from_utf8_lossy(&out.stderr));
    }
}
