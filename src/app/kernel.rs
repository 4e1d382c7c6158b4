//! The kernel table at start and while running: the dynamic firewall (`[firewall]`) or, without
//! it, the shield's ban mirror alone (`protection.nftables_set`). Both are one nftables table
//! written by one [`NftMirror`]; with the firewall, this module also follows the registry of
//! running listeners and replaces the table when the set of open ports changes (a listener
//! bound or stopped), and records every applied ruleset in `firewall.log`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, FirewallConfig};
use crate::protect::firewall;
use crate::protect::nft::{self, NftMirror};
use crate::runtime::Runtime;
use crate::runtime::listeners::{Bound, Protocol};

/// The ports the firewall opens for `listeners`: every listener's, the admin API's only when
/// it is not bound to loopback (then it is reachable from outside).
pub fn exposed_ports(listeners: impl IntoIterator<Item = (SocketAddr, bool)>) -> Vec<u16> {
    let mut ports: Vec<u16> =
        listeners.into_iter().filter(|(address, admin)| !admin || !address.ip().is_loopback()).map(|(address, _)| address.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The ports the configuration's listeners would open (for `firewall show`, which runs
/// without an edge).
pub fn configured_ports(config: &Config) -> Vec<u16> {
    let http = config.listeners.iter().map(|l| (l.address, false));
    let sip = config.sip.listeners.iter().map(|l| (l.address, false));
    let admin = config.admin.iter().map(|a| (a.address, true));
    exposed_ports(http.chain(sip).chain(admin))
}

fn running_ports(bound: &[Bound]) -> Vec<u16> {
    exposed_ports(bound.iter().map(|b| (b.address, b.protocol == Protocol::Admin)))
}

/// The ruleset `firewall show` prints: the configuration's listeners, no bans.
pub fn show(config: &Config) -> Option<String> {
    let firewall = config.firewall.as_ref()?;
    Some(firewall::render(firewall, config.protection.ipv6_prefix, &configured_ports(config), &[]))
}

/// `firewall.log` under the log directory: one line per applied ruleset and why.
#[derive(Debug, Clone)]
pub struct FirewallLog {
    path: PathBuf,
}

impl FirewallLog {
    pub fn new(log_dir: &std::path::Path) -> FirewallLog {
        FirewallLog { path: log_dir.join("firewall.log") }
    }

    /// Appends `line` with the time (best effort: a full disk must not stop the edge).
    pub fn record(&self, line: &str) {
        let now = time::OffsetDateTime::now_utc();
        let stamp = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(&self.path) {
            let _ = writeln!(file, "{stamp} {line}");
        }
    }
}

fn ports_text(ports: &[u16]) -> String {
    if ports.is_empty() { "none".to_string() } else { ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",") }
}

/// Puts the kernel table in place (firewall or ban mirror) with the listeners bound so far
/// and the bans in force; `None` when neither is configured or `nft` refused (said in
/// `error.log`: the edge keeps serving, the shield still refuses banned sources itself).
pub async fn start(config: &Config, runtime: &Arc<Runtime>) -> Option<Arc<NftMirror>> {
    let ipv6_prefix = config.protection.ipv6_prefix;
    let bans = runtime.shield.mirrored_bans();
    let (table, script, ports) = match (&config.firewall, &config.protection.nftables_table) {
        (Some(firewall), _) => {
            let ports = running_ports(&runtime.listeners.all());
            (firewall.table.clone(), firewall::render(firewall, ipv6_prefix, &ports, &bans), ports)
        }
        (None, Some(table)) => {
            let ports = runtime.listeners.public_ports();
            (table.clone(), nft::mirror_table(table, &ports, ipv6_prefix, &bans), ports)
        }
        (None, None) => return None,
    };
    let events = runtime.events.subscribe();
    let log = FirewallLog::new(&config.server.log_dir);
    let began = tokio::time::Instant::now();
    let outcome = NftMirror::start(&table, &script, runtime.error_log.clone()).await;
    let took_ms = began.elapsed().as_millis();
    match outcome {
        Ok(started) => {
            let started = Arc::new(started);
            tokio::spawn(started.clone().follow(events, Arc::downgrade(&runtime.shield)));
            if let Some(firewall) = &config.firewall {
                tracing::info!("firewall applied: table inet {table} on {} (ports {ports:?})", firewall.interface);
                log.record(&format!(
                    "applied table={table} reason=start ports={} bans={} took_ms={took_ms}",
                    ports_text(&ports),
                    bans.len()
                ));
                tokio::spawn(follow_listeners(started.clone(), firewall.clone(), ipv6_prefix, runtime.clone(), ports, log));
            } else {
                tracing::info!("bans mirrored into nftables table inet {table} (ports {ports:?})");
            }
            Some(started)
        }
        Err(error) => {
            let what = if config.firewall.is_some() {
                log.record(&format!("failed table={table} reason=start error={error}"));
                "firewall: not applied"
            } else {
                "protection.nftables_set: kernel mirror disabled"
            };
            runtime.error_log.error(&format!(
                "{what} ({error}); it needs root (CAP_NET_ADMIN) and the nft tool; the edge keeps serving and the shield still refuses banned sources"
            ));
            None
        }
    }
}

/// Replaces the firewall's table whenever the running listeners' ports change, until the
/// runtime is gone.
async fn follow_listeners(
    table: Arc<NftMirror>,
    firewall: FirewallConfig,
    ipv6_prefix: u8,
    runtime: Arc<Runtime>,
    mut applied: Vec<u16>,
    log: FirewallLog,
) {
    let mut changes = runtime.listeners.changes();
    let runtime = Arc::downgrade(&runtime);
    while changes.changed().await.is_ok() {
        let Some(current) = runtime.upgrade() else { return };
        let ports = running_ports(&current.listeners.all());
        if ports == applied {
            continue;
        }
        let opened: Vec<u16> = ports.iter().copied().filter(|p| !applied.contains(p)).collect();
        let closed: Vec<u16> = applied.iter().copied().filter(|p| !ports.contains(p)).collect();
        let shield = Arc::downgrade(&current.shield);
        let (rendered_ports, rendered_firewall) = (ports.clone(), firewall.clone());
        let began = tokio::time::Instant::now();
        let outcome = table
            .replace(move || {
                let bans = shield.upgrade().map(|s| s.mirrored_bans()).unwrap_or_default();
                firewall::render(&rendered_firewall, ipv6_prefix, &rendered_ports, &bans)
            })
            .await;
        let took_ms = began.elapsed().as_millis();
        let reason = format!("opened={} closed={}", ports_text(&opened), ports_text(&closed));
        match outcome {
            Ok(()) => {
                log.record(&format!(
                    "applied table={} reason=listeners {reason} ports={} took_ms={took_ms}",
                    firewall.table,
                    ports_text(&ports)
                ));
                applied = ports;
            }
            Err(error) => {
                log.record(&format!("failed table={} reason=listeners {reason} error={error}", firewall.table));
                current.error_log.error(&format!("firewall: ports not updated ({reason}): {error}"));
            }
        }
    }
}
