//! The dynamic firewall (`[firewall]`): the nftables tables Portcullis owns — the rules table
//! `<table>`, rendered by one pure function from the configuration and the ports of the
//! running listeners and applied as one `nft -f` transaction that replaces it whole, and its
//! sibling `<table>_bans` holding the shield's kernel ban sets (`banned4`, `banned6`), which
//! [`super::nft::NftMirror`] fills at start and then changes element by element. Tables it
//! does not own are never named. Keeping the bans apart keeps a replacement of the rules
//! small: with 100,000 bans in one table a replacement re-sent every element (190–450 ms
//! measured); apart, it stays near 20 ms.
//!
//! On the external interface only: new connections are admitted to running listeners' ports
//! alone (everything else is dropped silently: no RST, no ICMP error), per source and port
//! through a token bucket, behind it a global budget so a per-source meter filled by a
//! random-source flood never fails open; exempt prefixes and load balancers are never
//! limited, and `load_balancers_only` admits no one else. Hardening drops fragments (before
//! conntrack reassembles them, priority -450), spoofed private sources, impossible TCP flag
//! combinations and uncommon MSS values, and limits RSTs (before conntrack: an RST without a
//! connection is "invalid" and would never reach a limit after it), then drops invalid
//! conntrack state and new connections that do not start with a SYN. IPv4 echo is dropped;
//! ICMPv6 neighbour discovery and packet-too-big always pass (IPv6 breaks without them). New
//! connections the host would forward from the external interface (DNAT, published container
//! ports) are dropped as well.
//!
//! Every drop has a named counter (`nft list counters`), read by status.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::nft::{MirroredBan, bans_script, ipv6_mask};

/// The sibling table that holds the ban sets of the firewall's `table`.
pub fn bans_table(table: &str) -> String {
    format!("{table}_bans")
}
use crate::config::FirewallConfig;

/// IPv4 sources that never arrive from the internet (RFC 6890 and friends).
pub const SPOOFED_V4: [&str; 9] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
];
/// IPv6 sources that never arrive from the internet (link-local only outside neighbour
/// discovery, which is ICMPv6 and exempt from this rule).
pub const SPOOFED_V6: [&str; 4] = ["::1/128", "fc00::/7", "fe80::/10", "ff00::/8"];

/// The named counters, one per reason a packet is dropped, plus `accepted`.
pub const COUNTERS: [&str; 14] = [
    "fragments",
    "spoofed",
    "tcp_null",
    "tcp_syn_fin",
    "tcp_syn_rst",
    "tcp_xmas",
    "tcp_fin_no_ack",
    "mss",
    "rst_rate",
    "icmp_echo",
    "invalid",
    "new_without_syn",
    "not_load_balancer",
    "rate_per_source",
];
/// Counters beside [`COUNTERS`]: the global budget, the closed ports, new connections the
/// host would forward (DNAT, published container ports), what was admitted, and the ICMPv6
/// that always passes (neighbour discovery, packet-too-big and other errors).
pub const MORE_COUNTERS: [&str; 5] = ["rate_global", "closed", "forwarded", "accepted", "icmpv6_kept"];

/// A counter both tables carry so a start can tell its own tables from an operator's table of
/// the same name (which it must never replace).
pub const OWNER_MARK: &str = "portcullis_owned";

/// Seconds a half-open connection (SYN seen, handshake not completed) that the firewall
/// admitted may keep its conntrack entry, instead of the kernel's 120 s (SYN_SENT) and 60 s
/// (SYN_RECV): a spoofed SYN is never completed, so this bounds what a flood that gets past
/// the limits leaves in the conntrack table to about ten seconds' worth of it. A real client
/// answers within a round trip; the listener's SYN-ACK retransmissions (after 1, 3 and 7 s)
/// still fall within it.
pub const HALF_OPEN_TIMEOUT_S: u32 = 10;

/// Entries of each per-source meter (`meter4`, `meter6`); a full meter adds no entry, which
/// is why the global budget stands behind it.
pub const METER_SIZE: u32 = 65_536;

/// The whole script that replaces `config.table` with the rules that open `endpoints` (the
/// running listeners' bound addresses: an unspecified address opens the port on every
/// address of its family, a specific one on that address only; IPv6 sources are limited per
/// prefix of `ipv6_prefix` bits).
pub fn render(config: &FirewallConfig, ipv6_prefix: u8, endpoints: &[SocketAddr]) -> String {
    let table = &config.table;
    let interface = &config.interface;
    let mask = ipv6_mask(ipv6_prefix);
    let (exempt4, exempt6) = split(config.exempt.iter().chain(&config.load_balancers));
    let (lb4, lb6) = split(config.load_balancers.iter());
    let mut s = String::new();
    // `table … {}` then `delete` makes the first run and every later one alike (nft 1.0 has
    // no `destroy`); everything below is one transaction.
    let _ = writeln!(s, "table inet {table} {{}}\ndelete table inet {table}\ntable inet {table} {{");
    for counter in COUNTERS.iter().chain(&MORE_COUNTERS).chain(&[OWNER_MARK]) {
        let _ = writeln!(s, "\tcounter {counter} {{}}");
    }
    let open = |v4: bool| open_elements(endpoints, v4);
    for (name, family) in [("half_open4", "ip"), ("half_open6", "ip6")] {
        let t = HALF_OPEN_TIMEOUT_S;
        let _ = writeln!(s, "\tct timeout {name} {{ protocol tcp; l3proto {family}; policy = {{ syn_sent: {t}, syn_recv: {t} }}; }}");
    }
    let _ = writeln!(s, "\tset open4 {{ type ipv4_addr . inet_service; flags interval; auto-merge; {}}}", elements(open(true)));
    let _ = writeln!(s, "\tset open6 {{ type ipv6_addr . inet_service; flags interval; auto-merge; {}}}", elements(open(false)));
    let global = config.global_new_connections;
    let _ = writeln!(s, "\tlimit global_new {{ rate over {global} burst {} packets }}", config.global_new_connections.count);
    for (name, kind, networks) in
        [("exempt4", "ipv4_addr", &exempt4), ("exempt6", "ipv6_addr", &exempt6), ("lb4", "ipv4_addr", &lb4), ("lb6", "ipv6_addr", &lb6)]
    {
        let _ = writeln!(s, "\tset {name} {{ type {kind}; flags interval; auto-merge; {}}}", elements(networks.iter().cloned()));
    }
    let _ = writeln!(
        s,
        "\tset spoofed4 {{ type ipv4_addr; flags interval; auto-merge; {}}}",
        elements(SPOOFED_V4.iter().map(|n| n.to_string()))
    );
    let _ = writeln!(
        s,
        "\tset spoofed6 {{ type ipv6_addr; flags interval; auto-merge; {}}}",
        elements(SPOOFED_V6.iter().map(|n| n.to_string()))
    );
    let _ = writeln!(s, "\tset meter4 {{ type ipv4_addr . inet_service; flags dynamic, timeout; timeout 60s; size {METER_SIZE}; }}");
    let _ = writeln!(s, "\tset meter6 {{ type ipv6_addr . inet_service; flags dynamic, timeout; timeout 60s; size {METER_SIZE}; }}");
    let _ = writeln!(s, "\tset tracked4 {{ type ipv4_addr . inet_service; flags dynamic, timeout; timeout 60s; size {METER_SIZE}; }}");
    let _ = writeln!(s, "\tset tracked6 {{ type ipv6_addr . inet_service; flags dynamic, timeout; timeout 60s; size {METER_SIZE}; }}");
    let _ = writeln!(s, "\tset rst4 {{ type ipv4_addr; flags dynamic, timeout; timeout 60s; size {METER_SIZE}; }}");
    let _ = writeln!(s, "\tset rst6 {{ type ipv6_addr; flags dynamic, timeout; timeout 60s; size {METER_SIZE}; }}");

    if config.hardening {
        // Conntrack reassembles fragments at -400: only before it are they visible.
        let _ = writeln!(s, "\tchain fragments {{\n\t\ttype filter hook prerouting priority -450; policy accept;");
        let _ = writeln!(s, "\t\tiifname \"{interface}\" ip frag-off & 0x3fff != 0 counter name fragments drop");
        let _ = writeln!(s, "\t\tiifname \"{interface}\" exthdr frag exists counter name fragments drop\n\t}}");
        let _ = writeln!(s, "\tchain packets {{\n\t\ttype filter hook prerouting priority raw; policy accept;");
        let _ = writeln!(s, "\t\tiifname != \"{interface}\" accept");
        // An exempt source (a load balancer) must arrive where the routes say it lives: a
        // forged one on the external interface would skip every limit.
        let _ = writeln!(s, "\t\tip saddr @exempt4 fib saddr . iif oif missing counter name spoofed drop");
        let _ = writeln!(s, "\t\tip6 saddr @exempt6 fib saddr . iif oif missing counter name spoofed drop");
        let _ = writeln!(s, "\t\tip saddr != @exempt4 ip saddr @spoofed4 counter name spoofed drop");
        let _ = writeln!(s, "\t\tmeta l4proto != ipv6-icmp ip6 saddr != @exempt6 ip6 saddr @spoofed6 counter name spoofed drop");
        for (rule, counter) in [
            ("tcp flags & (fin|syn|rst|psh|ack|urg) == 0x0", "tcp_null"),
            ("tcp flags & (fin|syn) == (fin|syn)", "tcp_syn_fin"),
            ("tcp flags & (syn|rst) == (syn|rst)", "tcp_syn_rst"),
            ("tcp flags & (fin|psh|urg) == (fin|psh|urg)", "tcp_xmas"),
            ("tcp flags & (fin|ack) == fin", "tcp_fin_no_ack"),
            // Every real TCP stack sends an MSS option on its SYN; flood tools often do not
            // (the seed's `tcpmss ! --mss 536:65535` drops both).
            ("tcp flags & (syn|ack) == syn tcp option maxseg missing", "mss"),
            ("tcp flags & (syn|ack) == syn tcp option maxseg size 1-535", "mss"),
            ("tcp flags & (syn|ack) == syn tcp option maxseg size 65496-65535", "mss"),
            // Per source: one budget for everyone would drop real connections' RSTs on a busy edge.
            ("tcp flags & rst == rst add @rst4 { ip saddr limit rate over 10/second burst 20 packets }", "rst_rate"),
            ("tcp flags & rst == rst add @rst6 { ip6 saddr limit rate over 10/second burst 20 packets }", "rst_rate"),
            ("icmp type echo-request", "icmp_echo"),
        ] {
            let _ = writeln!(s, "\t\t{rule} counter name {counter} drop");
        }
        let _ = writeln!(s, "\t}}");
    }

    // Connection attempts (a SYN) to an open port are judged before conntrack: what a limit
    // drops never gets a conntrack entry, so a flood costs the kernel as little as it can and
    // cannot fill the conntrack table. Only SYNs to this host's own addresses.
    let (open4, open6) = ("ip daddr . tcp dport @open4", "ip6 daddr . tcp dport @open6");
    let _ = writeln!(s, "\tchain new_connections {{\n\t\ttype filter hook prerouting priority raw + 10; policy accept;");
    let _ = writeln!(s, "\t\tiifname != \"{interface}\" accept");
    let _ = writeln!(s, "\t\tmeta l4proto != tcp accept");
    // Every SYN without ACK opens a connection, whatever else it carries: Linux takes a
    // SYN+FIN or SYN+RST to a listener as a SYN (hardening drops those earlier; without it
    // they must still meet the limits).
    let _ = writeln!(s, "\t\ttcp flags & (syn|ack) != syn accept");
    let _ = writeln!(s, "\t\tfib daddr type != local accept");
    if config.load_balancers_only {
        let _ = writeln!(s, "\t\t{open4} ip saddr != @lb4 counter name not_load_balancer drop");
        let _ = writeln!(s, "\t\t{open6} ip6 saddr != @lb6 counter name not_load_balancer drop");
    }
    let _ = writeln!(s, "\t\t{open4} ip saddr @exempt4 accept");
    let _ = writeln!(s, "\t\t{open6} ip6 saddr @exempt6 accept");
    let (rate, burst) = (config.new_connections, config.burst);
    // A source the meter tracks is judged by its own bucket alone; only sources the meter
    // has no room for (a random-source flood filled it) share the global budget. So a small
    // spoofed flood costs real users nothing, and a full meter still never fails open.
    // Within its bucket: admitted, and remembered in `tracked` (only when the meter holds
    // its bucket: a full meter ends the rule before). Over it: `tracked` knows it, dropped.
    // (A lookup in the meter itself would spend a token of the bucket again: the per-source
    // rate would be half the one configured.)
    let (key4, key6) = ("ip saddr . tcp dport".to_string(), format!("ip6 saddr & {mask} . tcp dport"));
    for (open, meter, tracked, key) in [(open4, "meter4", "tracked4", &key4), (open6, "meter6", "tracked6", &key6)] {
        let _ =
            writeln!(s, "\t\t{open} add @{meter} {{ {key} limit rate {rate} burst {burst} packets }} add @{tracked} {{ {key} }} accept");
        let _ = writeln!(s, "\t\t{open} {key} @{tracked} counter name rate_per_source drop");
    }
    for open in [open4, open6] {
        let _ = writeln!(s, "\t\t{open} limit name global_new counter name rate_global drop");
    }
    let _ = writeln!(s, "\t}}");

    let _ = writeln!(s, "\tchain input {{\n\t\ttype filter hook input priority filter - 10; policy accept;");
    let _ = writeln!(s, "\t\tiifname != \"{interface}\" accept");
    let _ = writeln!(
        s,
        "\t\ticmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, nd-router-solicit, mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report, packet-too-big, destination-unreachable, time-exceeded, parameter-problem }} counter name icmpv6_kept accept"
    );
    if config.hardening {
        let _ = writeln!(s, "\t\tct state invalid counter name invalid drop");
    }
    let _ = writeln!(s, "\t\tct state established,related accept");
    if config.hardening {
        let _ = writeln!(s, "\t\ttcp flags & (fin|syn|rst|ack) != syn ct state new counter name new_without_syn drop");
    }
    // Every rule below is for new connections to an open address and port, per family; the
    // limits were applied before conntrack (chain `new_connections`).
    let (open4, open6) = ("ip daddr . tcp dport @open4", "ip6 daddr . tcp dport @open6");
    if config.load_balancers_only {
        let _ = writeln!(s, "\t\t{open4} ip saddr != @lb4 counter name not_load_balancer drop");
        let _ = writeln!(s, "\t\t{open6} ip6 saddr != @lb6 counter name not_load_balancer drop");
    }
    // The admitted connection's conntrack entry gets the short half-open timeouts (only an
    // entry not yet confirmed takes them, which is why this is here, after conntrack, and
    // not in `new_connections`).
    for (open, timeout) in [(open4, "half_open4"), (open6, "half_open6")] {
        let _ = writeln!(s, "\t\t{open} ct timeout set \"{timeout}\" counter name accepted accept");
    }
    if !config.hardening {
        let _ = writeln!(s, "\t\tmeta l4proto icmp accept");
    }
    let _ = writeln!(s, "\t\tcounter name closed drop\n\t}}");
    // Default deny holds for connections the host would forward too (a DNAT, a published
    // container port never reaches `input`); the replies to connections opened from inside
    // still come back.
    let _ = writeln!(s, "\tchain forward {{\n\t\ttype filter hook forward priority filter - 10; policy accept;");
    let _ = writeln!(s, "\t\tiifname != \"{interface}\" accept");
    let _ = writeln!(s, "\t\tct state established,related accept");
    let _ = writeln!(s, "\t\tcounter name forwarded drop\n\t}}\n}}");
    s
}

/// The elements of `open4` (`v4`) or `open6` for `endpoints`: an unspecified address opens
/// its port on every address of its family, a specific one on that address only.
fn open_elements(endpoints: &[SocketAddr], v4: bool) -> impl Iterator<Item = String> + '_ {
    endpoints.iter().filter(move |e| e.is_ipv4() == v4).map(move |e| match e.ip() {
        ip if ip.is_unspecified() => format!("{ip}/0 . {}", e.port()),
        ip => format!("{ip}/{} . {}", if v4 { 32 } else { 128 }, e.port()),
    })
}

/// The script that makes `config.table`'s open ports exactly `endpoints`, in one transaction,
/// touching nothing else of the table: when only the running listeners changed, the
/// per-source buckets, the counters and the conntrack entries' timeout policy stay as they
/// are, and the change costs a few elements instead of a whole table (replacing it during a
/// flood also frees the full meters and detaches the timeout policy from every conntrack
/// entry: 35 ms before a flood, 160 ms right after one, measured). Fails when the table is
/// not there (the caller then replaces it whole).
pub fn render_open_ports(config: &FirewallConfig, endpoints: &[SocketAddr]) -> String {
    let table = &config.table;
    let mut s = String::new();
    for (set, v4) in [("open4", true), ("open6", false)] {
        let _ = writeln!(s, "flush set inet {table} {set}");
        let list: Vec<String> = open_elements(endpoints, v4).collect();
        if !list.is_empty() {
            let _ = writeln!(s, "add element inet {table} {set} {{ {} }}", list.join(", "));
        }
    }
    s
}

/// The whole script that replaces the ban table of `config.table` with `bans` in it: new
/// connections (a SYN) from a banned source on the external interface are dropped before the
/// rules table sees them (priority `filter - 20`), whatever the port.
pub fn render_bans(config: &FirewallConfig, ipv6_prefix: u8, bans: &[MirroredBan]) -> String {
    let table = bans_table(&config.table);
    let interface = &config.interface;
    let mask = ipv6_mask(ipv6_prefix);
    let size = super::MAX_BANS;
    let mut s = format!(
        "table inet {table} {{}}\ndelete table inet {table}\ntable inet {table} {{\n\
         \tcounter banned {{}}\n\tcounter {OWNER_MARK} {{}}\n\
         \tset banned4 {{ type ipv4_addr; flags timeout; size {size}; }}\n\
         \tset banned6 {{ type ipv6_addr; flags timeout; size {size}; }}\n\
         \tchain input {{\n\t\ttype filter hook input priority filter - 20; policy accept;\n\
         \t\tiifname != \"{interface}\" accept\n\
         \t\ttcp flags & (syn | ack) == syn ip saddr @banned4 counter name banned drop\n\
         \t\ttcp flags & (syn | ack) == syn ip6 saddr & {mask} @banned6 counter name banned drop\n\t}}\n}}\n"
    );
    s.push_str(&bans_script(&table, ipv6_prefix, bans));
    s
}

/// `elements = { a, b }; ` or nothing for an empty set.
fn elements(items: impl Iterator<Item = String>) -> String {
    let list: Vec<String> = items.collect();
    if list.is_empty() { String::new() } else { format!("elements = {{ {} }}; ", list.join(", ")) }
}

/// IPv4 and IPv6 networks as nft writes them.
fn split<'a>(networks: impl Iterator<Item = &'a (IpAddr, u8)>) -> (Vec<String>, Vec<String>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (address, prefix) in networks {
        match address {
            IpAddr::V4(_) => v4.push(format!("{address}/{prefix}")),
            IpAddr::V6(_) => v6.push(format!("{address}/{prefix}")),
        }
    }
    (v4, v6)
}

#[cfg(test)]
mod tests;
