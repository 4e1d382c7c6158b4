//! The kernel tables at start and while running: the dynamic firewall (`[firewall]`: its rules
//! table and the sibling ban table) or, without it, the shield's ban mirror alone
//! (`protection.nftables_set`). The ban sets are written by one [`NftMirror`]; with the
//! firewall, this module also follows the registry of running listeners, replaces the rules
//! table when the set of open ports changes (a listener bound or stopped), and records every
//! applied ruleset in `firewall.log`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::config::{Config, FirewallConfig};
use crate::protect::firewall;
use crate::protect::nft::{self, NftMirror};
use crate::runtime::Runtime;
use crate::runtime::control::{ConntrackFill, FirewallControl, FirewallView, Pending, Reconfigured};
use crate::runtime::listeners::Bound;
use crate::telemetry::outbox::{Level, LogName, Outbox};

/// The addresses and ports the firewall opens for listeners bound to `addresses`: all but
/// loopback ones (not reachable from outside; the admin API on 127.0.0.1 stays closed). An
/// unspecified address opens its port on every address of its family, a specific one only
/// there (an admin API on an internal address is not opened on the external ones).
pub fn exposed_endpoints(addresses: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut endpoints: Vec<SocketAddr> = addresses.into_iter().filter(|address| !address.ip().is_loopback()).collect();
    endpoints.sort_unstable();
    endpoints.dedup();
    endpoints
}

/// What the configuration's listeners would open (for `firewall show`, which runs without an
/// edge).
pub fn configured_endpoints(config: &Config) -> Vec<SocketAddr> {
    let http = config.listeners.iter().map(|l| l.address);
    let sip = config.sip.listeners.iter().map(|l| l.address);
    let admin = config.admin.iter().map(|a| a.address);
    exposed_endpoints(http.chain(sip).chain(admin))
}

fn running_endpoints(bound: &[Bound]) -> Vec<SocketAddr> {
    exposed_endpoints(bound.iter().map(|b| b.address))
}

/// The distinct ports of `endpoints`, in order.
fn ports_of(endpoints: &[SocketAddr]) -> Vec<u16> {
    let mut ports: Vec<u16> = endpoints.iter().map(SocketAddr::port).collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The ruleset `firewall show` prints: the configuration's listeners, no bans.
pub fn show(config: &Config) -> Option<String> {
    let firewall = config.firewall.as_ref()?;
    let prefix = config.protection.ipv6_prefix;
    Some(format!("{}{}", firewall::render(firewall, prefix, &configured_endpoints(config)), firewall::render_bans(firewall, prefix, &[])))
}

/// `firewall.log` under the log directory: one line per applied ruleset and why.
#[derive(Debug, Clone)]
pub struct FirewallLog {
    path: PathBuf,
    /// Log shipping, when configured: every line is shipped too (MSGID `firewall`).
    outbox: Option<Outbox>,
}

impl FirewallLog {
    pub fn new(log_dir: &std::path::Path, outbox: Option<Outbox>) -> FirewallLog {
        FirewallLog { path: log_dir.join("firewall.log"), outbox }
    }

    /// Appends `line` with the time (best effort: a full disk must not stop the edge), and
    /// ships it.
    pub fn record(&self, line: &str) {
        let now = time::OffsetDateTime::now_utc();
        let stamp = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let line = format!("{stamp} {line}");
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(&self.path) {
            let _ = writeln!(file, "{line}");
        }
        if let Some(outbox) = &self.outbox {
            outbox.send(LogName::Firewall, Level::Notice, &line);
        }
    }
}

fn ports_text(endpoints: &[SocketAddr]) -> String {
    let ports = ports_of(endpoints);
    if ports.is_empty() { "none".to_string() } else { ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",") }
}

/// The kernel table while it runs: the writer, and with the firewall the ports it opened.
pub struct KernelTable {
    mirror: Arc<NftMirror>,
    firewall: Option<Ports>,
    /// Without the firewall: the ban mirror's own table and the ports it guards.
    mirror_only: Option<MirrorPorts>,
    /// The task that follows the listeners (stopped at shutdown).
    follower: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set at shutdown (under the ports' lock): nothing may put the tables back after that.
    stopping: std::sync::atomic::AtomicBool,
}

/// The ban mirror's table (no `[firewall]`): the listener ports its rules guard, kept in step
/// with the running listeners (a reload may add or remove one).
struct MirrorPorts {
    table: String,
    applied: tokio::sync::Mutex<Vec<u16>>,
}

/// The firewall's view of the ports it opened, kept in step with the running listeners.
struct Ports {
    /// The `[firewall]` section in force (a reload may change it, under `applied`'s lock;
    /// never its table name).
    config: arc_swap::ArcSwap<FirewallConfig>,
    log: FirewallLog,
    /// What the table in the kernel opens now (one update at a time).
    applied: tokio::sync::Mutex<Vec<SocketAddr>>,
    /// Whether both tables are in the kernel (false after `firewall remove`).
    in_kernel: std::sync::atomic::AtomicBool,
    /// Why the last apply or remove failed.
    error: std::sync::Mutex<Option<String>>,
    runtime: std::sync::Weak<Runtime>,
}

/// Puts the kernel tables in place (firewall or ban mirror) with the listeners bound so far
/// and the bans in force; `None` when neither is configured or `nft` refused (said in
/// `error.log`: the edge keeps serving, the shield still refuses banned sources itself).
pub async fn start(config: &Config, runtime: &Arc<Runtime>) -> Option<Arc<KernelTable>> {
    let ipv6_prefix = config.protection.ipv6_prefix;
    let log = FirewallLog::new(&config.server.log_dir, runtime.shipping.as_ref().map(|s| s.outbox()));
    let refused = |what: &str, error: &nft::NftError| {
        runtime.error_log.error(&format!(
            "{what} ({error}); it needs root (CAP_NET_ADMIN) and the nft tool; the edge keeps serving and the shield still refuses banned sources"
        ));
    };
    // The rules first: the listeners' ports open (the accept loops start after this).
    let mut opened = None;
    if let Some(firewall) = &config.firewall {
        if let Err(foreign) = check_ownership(&[firewall.table.clone(), firewall::bans_table(&firewall.table)]).await {
            log.record(&format!("refused table={} reason=start error={foreign}", firewall.table));
            runtime.error_log.error(&format!(
                "firewall: not applied: {foreign}; choose another firewall.table (the edge keeps serving; the shield still refuses banned sources)"
            ));
            return None;
        }
        let ports = running_endpoints(&runtime.listeners.all());
        let began = tokio::time::Instant::now();
        if let Err(error) = nft::run_nft(&firewall::render(firewall, ipv6_prefix, &ports)).await {
            log.record(&format!("failed table={} reason=start error={error}", firewall.table));
            refused("firewall: not applied", &error);
            return None;
        }
        opened = Some((ports, began.elapsed().as_millis()));
    }
    // Subscribed before the snapshot: a ban lifted in between is not missed.
    let events = runtime.events.subscribe();
    let bans = runtime.shield.mirrored_bans();
    let (table, script) = match (&config.firewall, &config.protection.nftables_table) {
        (Some(firewall), _) => (firewall::bans_table(&firewall.table), firewall::render_bans(firewall, ipv6_prefix, &bans)),
        (None, Some(table)) => (table.clone(), nft::mirror_table(table, &runtime.listeners.public_ports(), ipv6_prefix, &bans)),
        (None, None) => return None,
    };
    let began = tokio::time::Instant::now();
    // With the firewall, every batch of ban changes is a ruleset change of its ban table.
    let batches = config.firewall.as_ref().map(|_| {
        let log = log.clone();
        let record: nft::BatchLog = Arc::new(move |line: &str| log.record(line));
        record
    });
    let mirror = match NftMirror::start(&table, ipv6_prefix, &script, runtime.error_log.clone(), batches).await {
        Ok(started) => Arc::new(started),
        Err(error) => {
            if let Some(firewall) = &config.firewall {
                log.record(&format!("failed table={table} reason=start error={error}"));
                let _ = nft::run_nft(&format!("delete table inet {}\n", firewall.table)).await;
            }
            refused(
                if config.firewall.is_some() { "firewall: not applied" } else { "protection.nftables_set: kernel mirror disabled" },
                &error,
            );
            return None;
        }
    };
    let bans_ms = began.elapsed().as_millis();
    tokio::spawn(mirror.clone().follow(events, Arc::downgrade(&runtime.shield)));
    let (firewall, mirror_only) = match (&config.firewall, opened) {
        (Some(firewall), Some((ports, ports_ms))) => {
            tracing::info!("firewall applied: table inet {} on {} (open: {ports:?})", firewall.table, firewall.interface);
            for warning in half_open_warnings(firewall, conntrack_fill(), read_sysctl("net/ipv4/tcp_syncookies")) {
                runtime.error_log.warn(&warning);
            }
            log.record(&format!("applied table={} reason=start ports={} took_ms={ports_ms}", firewall.table, ports_text(&ports)));
            log.record(&format!("applied table={table} reason=start bans={} took_ms={bans_ms}", bans.len()));
            let ports = Ports {
                config: arc_swap::ArcSwap::from_pointee(firewall.clone()),
                log,
                applied: tokio::sync::Mutex::new(ports),
                in_kernel: std::sync::atomic::AtomicBool::new(true),
                error: std::sync::Mutex::new(None),
                runtime: Arc::downgrade(runtime),
            };
            (Some(ports), None)
        }
        _ => {
            tracing::info!("bans mirrored into nftables table inet {table}");
            let guarded = tokio::sync::Mutex::new(runtime.listeners.public_ports());
            (None, Some(MirrorPorts { table, applied: guarded }))
        }
    };
    let kernel = Arc::new(KernelTable {
        mirror,
        firewall,
        mirror_only,
        follower: std::sync::Mutex::new(None),
        stopping: std::sync::atomic::AtomicBool::new(false),
    });
    if kernel.firewall.is_some() {
        let control: Arc<dyn FirewallControl> = kernel.clone();
        let _ = runtime.firewall.set(control);
    }
    let follower = tokio::spawn(follow_listeners(Arc::downgrade(&kernel), runtime.clone()));
    *kernel.follower.lock().unwrap_or_else(|p| p.into_inner()) = Some(follower);
    Some(kernel)
}

impl KernelTable {
    /// Brings the open ports in line with the running listeners (`why` goes to
    /// `firewall.log`); nothing happens when they already are, or without the firewall.
    async fn update_ports(&self, runtime: &Runtime, why: &str) {
        if let Some(mirror) = &self.mirror_only {
            self.update_mirror_ports(mirror, runtime).await;
        }
        let Some(firewall) = &self.firewall else { return };
        let mut applied = firewall.applied.lock().await;
        let ports = running_endpoints(&runtime.listeners.all());
        if ports == *applied || self.stopping.load(Ordering::SeqCst) {
            return;
        }
        if !firewall.in_kernel.load(Ordering::SeqCst) {
            *applied = ports; // taken down by the operator: the next apply opens these
            return;
        }
        let opened: Vec<SocketAddr> = ports.iter().copied().filter(|p| !applied.contains(p)).collect();
        let closed: Vec<SocketAddr> = applied.iter().copied().filter(|p| !ports.contains(p)).collect();
        let began = tokio::time::Instant::now();
        let config = firewall.config.load();
        // Only the open sets change; a table that is not there (removed from outside) is put
        // back whole.
        let mut outcome = nft::run_nft(&firewall::render_open_ports(&config, &ports)).await;
        if outcome.is_err() {
            outcome = nft::run_nft(&firewall::render(&config, self.mirror.ipv6_prefix(), &ports)).await;
        }
        let took_ms = began.elapsed().as_millis();
        let table = &config.table;
        let reason = format!("reason={why} opened={} closed={}", ports_text(&opened), ports_text(&closed));
        match outcome {
            Ok(()) => {
                firewall.log.record(&format!("applied table={table} {reason} ports={} took_ms={took_ms}", ports_text(&ports)));
                *applied = ports;
            }
            Err(error) => {
                firewall.log.record(&format!("failed table={table} {reason} error={error}"));
                runtime.error_log.error(&format!("firewall: ports not updated ({reason}): {error}"));
            }
        }
    }

    /// Replaces the ban mirror's own table: `ports` guarded, IPv6 sources masked with
    /// `prefix`, every ban in force when its turn comes.
    async fn replace_mirror_table(&self, mirror: &MirrorPorts, runtime: &Runtime, prefix: u8, ports: &[u16]) -> Result<(), nft::NftError> {
        let (table, shield, guarded) = (mirror.table.clone(), Arc::downgrade(&runtime.shield), ports.to_vec());
        self.mirror
            .replace(prefix, move || {
                let bans = shield.upgrade().map(|s| s.mirrored_bans()).unwrap_or_default();
                nft::mirror_table(&table, &guarded, prefix, &bans)
            })
            .await
    }

    /// The ban mirror's table guards the ports of the listeners running now (its bans are
    /// rendered in with it, in order with the ban changes).
    async fn update_mirror_ports(&self, mirror: &MirrorPorts, runtime: &Runtime) {
        let mut applied = mirror.applied.lock().await;
        let ports = runtime.listeners.public_ports();
        if ports == *applied || self.stopping.load(Ordering::SeqCst) {
            return;
        }
        match self.replace_mirror_table(mirror, runtime, self.mirror.ipv6_prefix(), &ports).await {
            Ok(()) => *applied = ports,
            Err(error) => runtime.error_log.error(&format!("nftables mirror: listener ports not updated: {error}")),
        }
    }

    /// A reload's `protection.ipv6_prefix` for the ban mirror alone (no `[firewall]`, which
    /// takes it with its section): the table is replaced with its rule's mask and the bans in
    /// force masked alike. `Ok(false)` when there is no such mirror or the prefix is the same;
    /// on failure the running prefix stays.
    pub async fn set_mirror_prefix(&self, runtime: &Runtime, prefix: u8) -> Result<bool, String> {
        let Some(mirror) = &self.mirror_only else { return Ok(false) };
        let mut applied = mirror.applied.lock().await;
        let previous = self.mirror.ipv6_prefix();
        if previous == prefix || self.stopping.load(Ordering::SeqCst) {
            return Ok(false);
        }
        self.mirror.set_ipv6_prefix(prefix);
        let ports = runtime.listeners.public_ports();
        match self.replace_mirror_table(mirror, runtime, prefix, &ports).await {
            Ok(()) => {
                *applied = ports;
                Ok(true)
            }
            Err(error) => {
                self.mirror.set_ipv6_prefix(previous);
                Err(error.to_string())
            }
        }
    }

    /// At shutdown, once every listener stopped: closes their ports (recorded), then deletes
    /// the table.
    pub async fn shut_down(&self, runtime: &Runtime) {
        if let Some(follower) = self.follower.lock().unwrap_or_else(|p| p.into_inner()).take() {
            follower.abort();
        }
        let Some(firewall) = &self.firewall else {
            if let Some(mirror) = &self.mirror_only {
                let _applied = mirror.applied.lock().await;
                self.stopping.store(true, Ordering::SeqCst);
            }
            if let Err(error) = self.mirror.remove().await {
                runtime.error_log.error(&format!("nftables: cannot delete the ban table at shutdown: {error}"));
            }
            return;
        };
        self.update_ports(runtime, "listeners-stopped").await;
        // From here on nothing puts the tables back (an admin `apply` racing the shutdown).
        let _applied = firewall.applied.lock().await;
        self.stopping.store(true, Ordering::SeqCst);
        if !firewall.in_kernel.swap(false, Ordering::SeqCst) {
            return; // the operator took it down already
        }
        let table = &firewall.config.load().table;
        let bans = self.mirror.remove().await;
        let rules = nft::run_nft(&format!("delete table inet {table}\n")).await;
        match rules.as_ref().and(bans.as_ref()) {
            Ok(()) => firewall.log.record(&format!("removed table={table} reason=shutdown")),
            Err(error) => {
                firewall.log.record(&format!("failed table={table} reason=shutdown error={error}"));
                runtime.error_log.error(&format!("firewall: cannot delete its tables at shutdown: {error}"));
            }
        }
    }
}

/// Replaces the firewall's table whenever the running listeners' ports change, while the
/// table and the runtime live.
///
/// Every [`REASSERT_EVERY`] it also checks that both tables are still in the kernel and puts
/// them back when something else removed them (`nft flush ruleset`, a restarted nftables
/// service) while the firewall is meant to be applied.
async fn follow_listeners(kernel: std::sync::Weak<KernelTable>, runtime: Arc<Runtime>) {
    let mut changes = runtime.listeners.changes();
    let runtime = Arc::downgrade(&runtime);
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + REASSERT_EVERY, REASSERT_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let changed = tokio::select! {
            changed = changes.changed() => changed.is_ok(),
            _ = check.tick() => false,
        };
        let (Some(kernel), Some(runtime)) = (kernel.upgrade(), runtime.upgrade()) else { return };
        if changed {
            kernel.update_ports(&runtime, "listeners").await;
        } else {
            kernel.reassert().await;
        }
    }
}

/// How often the firewall checks that its tables are still in the kernel.
pub const REASSERT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl FirewallControl for KernelTable {
    fn view(&self) -> Pending<'_, FirewallView> {
        Box::pin(async move {
            let Some(firewall) = &self.firewall else {
                return FirewallView {
                    applied: false,
                    table: String::new(),
                    interface: String::new(),
                    ports: Vec::new(),
                    counters: Default::default(),
                    error: None,
                    conntrack: None,
                };
            };
            let applied = firewall.in_kernel.load(Ordering::SeqCst);
            let config = firewall.config.load();
            let mut counters = std::collections::BTreeMap::new();
            if applied {
                for table in [config.table.clone(), firewall::bans_table(&config.table)] {
                    // The ownership mark counts nothing.
                    counters.extend(read_counters(&table).await.into_iter().filter(|(name, _)| name != firewall::OWNER_MARK));
                }
            }
            FirewallView {
                applied,
                table: config.table.clone(),
                interface: config.interface.clone(),
                ports: ports_of(&firewall.applied.lock().await),
                counters,
                error: firewall.error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                conntrack: conntrack_fill(),
            }
        })
    }

    fn apply(&self) -> Pending<'_, Result<(), String>> {
        Box::pin(self.apply_because("admin-apply"))
    }

    fn remove(&self) -> Pending<'_, Result<(), String>> {
        Box::pin(self.remove_because("admin-remove"))
    }

    fn reconfigure(&self, next: Option<FirewallConfig>, ipv6_prefix: u8) -> Pending<'_, Result<Reconfigured, String>> {
        Box::pin(self.reconfigure_to(next, ipv6_prefix))
    }
}

impl KernelTable {
    /// Puts both tables back when the firewall is meant to be applied and either is gone.
    async fn reassert(&self) {
        let Some(firewall) = &self.firewall else { return };
        if !firewall.in_kernel.load(Ordering::SeqCst) {
            return;
        }
        let Some(tables) = nft::list(&["list", "tables"]).await else { return };
        let table = &firewall.config.load().table;
        if has_table(&tables, table) && has_table(&tables, &firewall::bans_table(table)) {
            return;
        }
        if let (Err(error), Some(runtime)) = (self.apply_because("reassert").await, firewall.runtime.upgrade()) {
            runtime.error_log.error(&format!("firewall: its tables were removed from outside and cannot be put back: {error}"));
        } else if let Some(runtime) = firewall.runtime.upgrade() {
            runtime.error_log.warn("firewall: its tables were removed from outside (nft flush ruleset?); put back");
        }
    }

    async fn apply_because(&self, reason: &str) -> Result<(), String> {
        let Some(firewall) = &self.firewall else { return Err("the firewall is not enabled".to_string()) };
        let mut applied = firewall.applied.lock().await;
        self.apply_locked(firewall, &mut applied, reason).await
    }

    /// Replaces both tables (the caller holds `applied`'s lock). When the ban table fails
    /// after the rules table went in while the firewall was down, the rules table is taken
    /// out again: half a firewall (a default deny that no shutdown would remove) is never
    /// left behind.
    async fn apply_locked(&self, firewall: &Ports, applied: &mut Vec<SocketAddr>, reason: &str) -> Result<(), String> {
        let Some(runtime) = firewall.runtime.upgrade() else { return Err("the edge is stopping".to_string()) };
        if self.stopping.load(Ordering::SeqCst) {
            return Err("the edge is stopping".to_string());
        }
        let config = firewall.config.load_full();
        let ports = running_endpoints(&runtime.listeners.all());
        let began = tokio::time::Instant::now();
        let prefix = self.mirror.ipv6_prefix();
        let mut outcome = nft::run_nft(&firewall::render(&config, prefix, &ports)).await;
        let rules_in = outcome.is_ok();
        if rules_in {
            let (config, shield) = (config.clone(), Arc::downgrade(&runtime.shield));
            outcome = self
                .mirror
                .replace(prefix, move || {
                    let bans = shield.upgrade().map(|s| s.mirrored_bans()).unwrap_or_default();
                    firewall::render_bans(&config, prefix, &bans)
                })
                .await;
        }
        let took_ms = began.elapsed().as_millis();
        let table = &config.table;
        let result = match outcome {
            Ok(()) => {
                firewall.in_kernel.store(true, Ordering::SeqCst);
                firewall.log.record(&format!("applied table={table} reason={reason} ports={} took_ms={took_ms}", ports_text(&ports)));
                *applied = ports;
                Ok(())
            }
            Err(error) => {
                if rules_in && !firewall.in_kernel.load(Ordering::SeqCst) {
                    let _ = nft::run_nft(&format!("delete table inet {table}\n")).await;
                }
                firewall.log.record(&format!("failed table={table} reason={reason} error={error}"));
                Err(error.to_string())
            }
        };
        *firewall.error.lock().unwrap_or_else(|p| p.into_inner()) = result.clone().err();
        result
    }

    /// A reload's `[firewall]` section: applied at once (both tables replaced) when it
    /// changed; a renamed table, or the firewall switched off, needs a restart (the running
    /// tables stay). While the operator has taken the firewall down, the new section is kept
    /// for the next `apply`.
    async fn reconfigure_to(&self, next: Option<FirewallConfig>, ipv6_prefix: u8) -> Result<Reconfigured, String> {
        let Some(firewall) = &self.firewall else { return Err("the firewall was not applied at start".to_string()) };
        let Some(next) = next else { return Err("switching [firewall] off needs a restart".to_string()) };
        let mut applied = firewall.applied.lock().await;
        let (current, current_prefix) = (firewall.config.load_full(), self.mirror.ipv6_prefix());
        if next.table != current.table {
            return Err(format!("firewall.table changed ({} to {}): it needs a restart", current.table, next.table));
        }
        if *current == next && current_prefix == ipv6_prefix {
            return Ok(Reconfigured::Unchanged);
        }
        firewall.config.store(Arc::new(next));
        self.mirror.set_ipv6_prefix(ipv6_prefix);
        if !firewall.in_kernel.load(Ordering::SeqCst) {
            return Ok(Reconfigured::Kept); // taken down by the operator: the next apply uses it
        }
        if let Err(error) = self.apply_locked(firewall, &mut applied, "reload").await {
            // The rules table may have gone in before the ban table failed: the running
            // section goes back in whole, so the kernel and status agree.
            firewall.config.store(current);
            self.mirror.set_ipv6_prefix(current_prefix);
            let restored = self.apply_locked(firewall, &mut applied, "reload-undone").await;
            return Err(match restored {
                Ok(()) => error,
                Err(again) => format!("{error}; putting the running section back failed too: {again}"),
            });
        }
        Ok(Reconfigured::Applied)
    }

    async fn remove_because(&self, reason: &str) -> Result<(), String> {
        let Some(firewall) = &self.firewall else { return Err("the firewall is not enabled".to_string()) };
        let _applied = firewall.applied.lock().await;
        let table = &firewall.config.load().table;
        let bans = self.mirror.remove().await;
        let rules = nft::run_nft(&format!("delete table inet {table}\n")).await;
        // A table already gone is what the operator asked for.
        let failure = [rules, bans].into_iter().filter_map(Result::err).map(|e| e.to_string()).find(|e| !e.contains("No such file"));
        let result = match failure {
            None => {
                firewall.in_kernel.store(false, Ordering::SeqCst);
                firewall.log.record(&format!("removed table={table} reason={reason}"));
                Ok(())
            }
            // Still counted as in the kernel: a retry, or the shutdown, deletes what is left.
            Some(error) => {
                firewall.log.record(&format!("failed table={table} reason={reason} error={error}"));
                Err(error)
            }
        };
        *firewall.error.lock().unwrap_or_else(|p| p.into_inner()) = result.clone().err();
        result
    }
}

/// Fails when one of `tables` exists and was not made by Portcullis (no [`firewall::OWNER_MARK`]
/// counter): replacing it would wipe an operator's rules. A table of ours left by a crash is
/// replaced as usual.
async fn check_ownership(tables: &[String]) -> Result<(), String> {
    let Some(existing) = nft::list(&["list", "tables"]).await else { return Ok(()) };
    for table in tables {
        if !has_table(&existing, table) {
            continue;
        }
        if !read_counters(table).await.iter().any(|(name, _)| name == firewall::OWNER_MARK) {
            return Err(format!("table inet {table} exists and was not made by Portcullis"));
        }
    }
    Ok(())
}

/// The named counters of `table` (packets), empty when `nft` cannot list them.
async fn read_counters(table: &str) -> Vec<(String, u64)> {
    let Some(listed) = nft::list(&["-j", "list", "counters", "table", "inet", table]).await else { return Vec::new() };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&listed) else { return Vec::new() };
    value["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("counter"))
        .filter_map(|c| Some((c["name"].as_str()?.to_string(), c["packets"].as_u64()?)))
        .collect()
}

/// Whether `nft list tables` output names `inet <table>`.
fn has_table(listed: &str, table: &str) -> bool {
    listed.lines().any(|line| line.trim() == format!("table inet {table}"))
}

/// A sysctl of the edge's network namespace (`path` under `/proc/sys`), when readable.
fn read_sysctl(path: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/{path}")).ok()?.trim().parse().ok()
}

/// The conntrack table's fill level in the edge's network namespace.
fn conntrack_fill() -> Option<ConntrackFill> {
    Some(ConntrackFill { entries: read_sysctl("net/netfilter/nf_conntrack_count")?, max: read_sysctl("net/netfilter/nf_conntrack_max")? })
}

/// What an operator should change so that a spoofed SYN flood cannot exhaust the host: the
/// global budget's worth of half-open entries ([`firewall::HALF_OPEN_TIMEOUT_S`] of them)
/// must fit in the conntrack table with room to spare (at most half of it), and the
/// listeners must answer a full backlog with SYN cookies.
fn half_open_warnings(config: &FirewallConfig, fill: Option<ConntrackFill>, syncookies: Option<u64>) -> Vec<String> {
    let mut warnings = Vec::new();
    let per_second = match config.global_new_connections.unit {
        crate::config::RateUnit::Second => u64::from(config.global_new_connections.count),
        crate::config::RateUnit::Minute => u64::from(config.global_new_connections.count).div_ceil(60),
    };
    let half_open = per_second * u64::from(firewall::HALF_OPEN_TIMEOUT_S);
    if let Some(fill) = fill.filter(|f| half_open > f.max / 2) {
        warnings.push(format!(
            "firewall: a spoofed SYN flood at global_new_connections ({}) leaves up to {half_open} half-open conntrack entries \
             ({} s each), more than half of net.netfilter.nf_conntrack_max ({}): raise it to at least {} or lower the budget",
            config.global_new_connections,
            firewall::HALF_OPEN_TIMEOUT_S,
            fill.max,
            half_open * 2
        ));
    }
    if syncookies == Some(0) {
        warnings.push(
            "firewall: net.ipv4.tcp_syncookies is 0: a SYN flood within the limits can fill the listeners' backlogs; set it to 1"
                .to_string(),
        );
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PacketRate, RateUnit};

    fn config(count: u32, unit: RateUnit) -> FirewallConfig {
        FirewallConfig {
            interface: "eth1".to_string(),
            table: "portcullis".to_string(),
            new_connections: PacketRate { count: 50, unit: RateUnit::Second },
            burst: 100,
            global_new_connections: PacketRate { count, unit },
            exempt: Vec::new(),
            load_balancers: Vec::new(),
            load_balancers_only: false,
            hardening: true,
        }
    }

    #[test]
    fn a_conntrack_table_too_small_for_the_global_budgets_half_open_entries_is_reported() {
        let roomy = ConntrackFill { entries: 10, max: 262_144 };
        let small = ConntrackFill { entries: 10, max: 65_536 };
        // The default budget, 5,000/s: 50,000 half-open entries at most.
        assert!(half_open_warnings(&config(5000, RateUnit::Second), Some(roomy), Some(1)).is_empty());
        let warned = half_open_warnings(&config(5000, RateUnit::Second), Some(small), Some(1));
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].contains("up to 50000 half-open") && warned[0].contains("at least 100000"), "{warned:?}");
        // Per minute counts per second (rounded up).
        assert!(half_open_warnings(&config(60_000, RateUnit::Minute), Some(small), Some(1)).is_empty());
        // Unknown fill: nothing to say about it.
        assert!(half_open_warnings(&config(5000, RateUnit::Second), None, Some(1)).is_empty());
        let cookies = half_open_warnings(&config(5000, RateUnit::Second), Some(roomy), Some(0));
        assert!(cookies.len() == 1 && cookies[0].contains("tcp_syncookies"), "{cookies:?}");
    }
}
