//! `[firewall]`: the external interface, the table's name, the new-connection rates, the
//! exempt and load-balancer networks and the hardening switch. Off (`None`) unless
//! `enabled = true`; when on, the shield's kernel ban sets live in its table, so a
//! `protection.nftables_table` naming another table is an error (one owner, one place).

use std::net::IpAddr;

use super::super::file::FirewallFile;
use super::super::{FirewallConfig, PacketRate, ProtectionConfig, RateUnit};
use super::Checker;
use super::protection::valid_table_name;

/// Per-source new connections per second and port when `new_connections` is not set.
pub(super) const DEFAULT_NEW_CONNECTIONS: PacketRate = PacketRate { count: 50, unit: RateUnit::Second };
/// Bucket size when `burst` is not set.
pub(super) const DEFAULT_BURST: u32 = 100;
/// The global budget behind the per-source meter when `global_new_connections` is not set.
pub(super) const DEFAULT_GLOBAL_NEW_CONNECTIONS: PacketRate = PacketRate { count: 5000, unit: RateUnit::Second };

pub(super) fn resolve_firewall(c: &mut Checker<'_>, raw: FirewallFile, protection: &ProtectionConfig) -> Option<FirewallConfig> {
    if !raw.enabled.unwrap_or(false) {
        return None;
    }
    let interface = match raw.interface {
        Some(name) if valid_interface_name(&name) => name,
        Some(name) => {
            c.err("firewall.interface", format!("{name:?} is not an interface name"), "use the external interface's name, e.g. \"eth1\"");
            name
        }
        None => {
            c.err("firewall.interface", "missing", "name the external interface the rules apply to, e.g. interface = \"eth1\"");
            String::new()
        }
    };
    let table = raw.table.unwrap_or_else(|| "portcullis".to_string());
    // `<table>_bans` is its sibling: both must be valid names.
    if !valid_table_name(&table) || table.len() > 27 {
        c.err("firewall.table", format!("{table:?} is not a usable table name"), "use letters, digits and _ (at most 27)");
    }
    if let Some(mirror) = &protection.nftables_table
        && *mirror != table
    {
        c.err(
            "protection.nftables_table",
            format!("{mirror:?} differs from firewall.table {table:?}"),
            "with [firewall] on, the ban sets live in its table: remove protection.nftables_table or make them equal",
        );
    }
    let new_connections = rate(c, "firewall.new_connections", raw.new_connections.as_deref(), DEFAULT_NEW_CONNECTIONS);
    let global_new_connections =
        rate(c, "firewall.global_new_connections", raw.global_new_connections.as_deref(), DEFAULT_GLOBAL_NEW_CONNECTIONS);
    let burst = c.bounded("firewall.burst", raw.burst, u64::from(DEFAULT_BURST), 1, 1_000_000) as u32;
    let exempt = networks(c, "firewall.exempt", &raw.exempt);
    let load_balancers = networks(c, "firewall.load_balancers", &raw.load_balancers);
    let load_balancers_only = raw.load_balancers_only.unwrap_or(false);
    if load_balancers_only && load_balancers.is_empty() {
        c.err(
            "firewall.load_balancers_only",
            "true without load_balancers would admit no one",
            "list the load balancers' addresses in firewall.load_balancers",
        );
    }
    Some(FirewallConfig {
        interface,
        table,
        new_connections,
        burst,
        global_new_connections,
        exempt,
        load_balancers,
        load_balancers_only,
        hardening: raw.hardening.unwrap_or(true),
    })
}

/// Linux interface names: 1–15 bytes, no `/`, whitespace or quotes (they go into nft text).
fn valid_interface_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 15 && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// "N/second" or "N/minute", N from 1 to 1,000,000.
fn rate(c: &mut Checker<'_>, path: &str, text: Option<&str>, default: PacketRate) -> PacketRate {
    let Some(text) = text else { return default };
    let parsed = text.split_once('/').and_then(|(count, unit)| {
        let count = count.trim().parse::<u32>().ok().filter(|n| (1..=1_000_000).contains(n))?;
        let unit = match unit.trim() {
            "second" => RateUnit::Second,
            "minute" => RateUnit::Minute,
            _ => return None,
        };
        Some(PacketRate { count, unit })
    });
    parsed.unwrap_or_else(|| {
        c.err(path, format!("{text:?} is not a rate"), "write \"50/second\" or \"600/minute\" (1 to 1000000)");
        default
    })
}

/// Addresses or CIDRs; the host bits of a network must be zero (what nft accepts).
fn networks(c: &mut Checker<'_>, path: &str, texts: &[String]) -> Vec<(IpAddr, u8)> {
    let mut out = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let (address, prefix) = text.split_once('/').map_or((text.as_str(), None), |(a, p)| (a, Some(p)));
        let parsed = address.trim().parse::<IpAddr>().ok().and_then(|ip| {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            };
            (network_of(ip, prefix) == ip).then_some((ip, prefix))
        });
        match parsed {
            Some(network) => out.push(network),
            None => c.err(
                format!("{path}[{i}]"),
                format!("{text:?} is not an address or a network"),
                "write \"192.0.2.10\" or \"10.0.0.0/24\" (host bits zero)",
            ),
        }
    }
    out
}

/// The first address of `ip`'s network of `prefix` bits.
fn network_of(ip: IpAddr, prefix: u8) -> IpAddr {
    let keep = |width: u32| if prefix == 0 { 0 } else { u128::MAX << (width - u32::from(prefix).min(width)) };
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(std::net::Ipv4Addr::from((u128::from(u32::from(v4)) & keep(32)) as u32)),
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & keep(128))),
    }
}
