//! `[protection]`: the shield's answer status and IPv6 prefix, every category's settings
//! (defaults filled in), exemptions, trusted proxies, and the nftables mirror's table.

use super::super::file::ProtectionFile;
use super::super::{Category, CategorySettings, Exemption, ProtectionConfig, UnknownCategory};
use super::Checker;

pub(super) fn resolve_protection(c: &mut Checker<'_>, raw: &ProtectionFile) -> ProtectionConfig {
    let blocked_status = c.bounded("protection.blocked_status", raw.blocked_status, 418, 400, 599) as u16;
    let ipv6_prefix = c.bounded("protection.ipv6_prefix", raw.ipv6_prefix, 64, 1, 128) as u8;
    let mut categories: std::collections::BTreeMap<Category, CategorySettings> =
        Category::ALL.into_iter().map(|category| (category, category.default_settings())).collect();
    for (name, cat) in &raw.categories {
        let path = format!("protection.categories.{name}");
        let Ok(category) = name.parse::<Category>() else {
            c.err(&path, "unknown category", format!("use one of {}", category_names()));
            continue;
        };
        let default = categories[&category].clone();
        let settings = CategorySettings {
            enabled: cat.enabled.unwrap_or(default.enabled),
            trigger: c.bounded(&format!("{path}.trigger"), cat.trigger, u64::from(default.trigger), 1, 100_000) as u32,
            window: c.duration(&format!("{path}.window"), cat.window.as_ref(), default.window),
            ban: c.duration(&format!("{path}.ban"), cat.ban.as_ref(), default.ban),
        };
        categories.insert(category, settings);
    }
    let mut exemptions = Vec::new();
    for (i, e) in raw.exemption.iter().enumerate() {
        let path = format!("protection.exemption[{i}]");
        let ip = e.address.as_deref().and_then(|a| a.parse::<std::net::IpAddr>().ok());
        let parsed: Vec<Result<Category, UnknownCategory>> = e.categories.iter().map(|name| name.parse()).collect();
        match ip {
            None => c.err(
                format!("{path}.address"),
                format!("{:?} is not an IP address", e.address.clone().unwrap_or_default()),
                "write an address such as \"203.0.113.0\"",
            ),
            Some(ip) => {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let prefix_length = c.bounded(&format!("{path}.prefix_length"), e.prefix_length, max, 0, max) as u8;
                let categories = parsed.iter().filter_map(|p| p.as_ref().ok().copied()).collect();
                exemptions.push(Exemption { address: ip, prefix_length, categories });
            }
        }
        for (j, unknown) in parsed.into_iter().enumerate().filter_map(|(j, p)| p.err().map(|u| (j, u))) {
            c.err(format!("{path}.categories[{j}]"), unknown.to_string(), format!("use one of {}", category_names()));
        }
    }
    let mut trusted_proxies = Vec::new();
    for (i, text) in raw.trusted_proxies.iter().enumerate() {
        let (addr, prefix) = text.split_once('/').map_or((text.as_str(), None), |(a, p)| (a, Some(p)));
        let parsed = addr.parse::<std::net::IpAddr>().ok().and_then(|ip| {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            };
            Some((ip, prefix))
        });
        match parsed {
            Some(net) => trusted_proxies.push(net),
            None => c.err(
                format!("protection.trusted_proxies[{i}]"),
                format!("{text:?} is not an address or CIDR"),
                "write \"192.0.2.10\" or \"10.0.0.0/8\"",
            ),
        }
    }
    let table = raw.nftables_table.clone().unwrap_or_else(|| "portcullis".to_string());
    if !valid_table_name(&table) {
        c.err("protection.nftables_table", format!("{table:?} is not a usable table name"), "use letters, digits and _ (at most 32)");
    }
    let nftables_table = raw.nftables_set.unwrap_or(false).then_some(table);
    let close_banned_tls = match raw.banned_tls.as_deref() {
        None | Some("answer") => false,
        Some("close") => true,
        Some(other) => {
            c.err(
                "protection.banned_tls",
                format!("{other:?} is not a choice"),
                "use \"answer\" (418 after the handshake, default) or \"close\"",
            );
            false
        }
    };
    ProtectionConfig { blocked_status, ipv6_prefix, categories, exemptions, trusted_proxies, nftables_table, close_banned_tls }
}

/// Whether `name` can name the nftables table bans are mirrored into (letters, digits, `_`;
/// at most 32): it is written into `nft` scripts.
pub(super) fn valid_table_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 32 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Every category's name, for hints: "a, b, c".
fn category_names() -> String {
    Category::ALL.map(Category::as_str).join(", ")
}
