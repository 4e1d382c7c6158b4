//! The shield (DESIGN §3): automated intrusion protection by category, brute-force
//! lockout, exemptions, persistent bans, and a `blocking.log` a stock fail2ban filter reads.
//!
//! Events (an authentication failure, a protocol violation…) are counted per source and
//! category in an exact sliding window; the `trigger`-th event inside `window` bans the
//! source for `ban`, effective on its very next request (the answer is `blocked_status`,
//! 418 by default, before any other work). IPv6 sources are counted and banned per
//! `ipv6_prefix` (/64 by default) so one host cannot rotate through its own subnet.
//! Exempt networks are never counted in their categories.
//!
//! Bans live in memory for the hot path and in the state store with an absolute expiry, so
//! they survive restarts (loaded at start). Memory is bounded: at most
//! [`MAX_COUNTED_SOURCES`] counters (oldest evicted first) and [`MAX_BANS`] bans; a counter
//! eviction never touches a ban, so a spray of fresh sources cannot unban anyone.
//!
//! Threat model: credential stuffing and scanning from the internet; spoofed
//! `X-Forwarded-For` (ignored: the source is the TCP peer).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::cluster::{BanRecord, StateStore};
use crate::config::{Category, CategorySettings, Exemption, ProtectionConfig};
use crate::telemetry::access_log::MAX_LOGGED_PATH;
use crate::telemetry::logging::{ErrorLog, LineBudget, escaped, nginx_time};
use crate::telemetry::metrics::Metrics;

/// Most (source, category) counters kept; the oldest are evicted first.
pub const MAX_COUNTED_SOURCES: usize = 100_000;
/// Most bans kept in memory.
pub const MAX_BANS: usize = 1_000_000;
/// `<ip> :: IP is already blocked.` is written at most once per source per this interval.
pub const ALREADY_BLOCKED_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// …and at most this many such lines per second in all, so a flood from many banned sources
/// cannot turn into a disk flood (the `hits` of each ban still count every refusal).
pub const MAX_ALREADY_BLOCKED_LINES_PER_SECOND: u64 = 20;

/// The request that triggered an event (for `blocking.log`).
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub host: &'a str,
}

/// A ban in force.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ban {
    /// The banned source (an IPv4 address, or the first address of an IPv6 prefix).
    pub source: String,
    pub category: String,
    pub since_ms: u64,
    pub until_ms: u64,
    /// Requests refused since the ban.
    pub hits: u64,
}

struct Counter {
    events: VecDeque<Instant>,
    last: Instant,
}

/// Counts events, bans sources, answers "is this source blocked?".
pub struct Shield {
    config: ArcSwap<ProtectionConfig>,
    /// Exemptions added through the admin API (persisted in the store).
    runtime_exemptions: RwLock<Vec<Exemption>>,
    bans: RwLock<HashMap<IpAddr, Ban>>,
    counters: Mutex<HashMap<(IpAddr, Category), Counter>>,
    already_logged: Mutex<HashMap<IpAddr, Instant>>,
    already_logged_budget: LineBudget,
    store: Arc<dyn StateStore>,
    blocking_log: Option<Mutex<File>>,
    error_log: ErrorLog,
    metrics: Arc<Metrics>,
    server_name: String,
    /// The nftables mirror, when `protection.nftables_set` is on and `nft` works.
    mirror: OnceLock<nft::NftMirror>,
    /// Bans the store could not take yet (written by the reconciler when it answers again).
    unsynced: Arc<Mutex<Vec<BanRecord>>>,
    /// Failure events a shared store could not count yet: (window key, Unix ms, window).
    unsynced_events: Mutex<Vec<(String, u64, Duration)>>,
    /// Per-source admission to credential checks (see [`Shield::admit`]).
    admissions: Arc<Mutex<HashMap<IpAddr, Arc<tokio::sync::Mutex<()>>>>>,
}

/// A source's turn to have one credential checked; the next waits until it is dropped.
pub struct Admission {
    admissions: Arc<Mutex<HashMap<IpAddr, Arc<tokio::sync::Mutex<()>>>>>,
    source: IpAddr,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        drop(self.turn.take());
        let mut admissions = self.admissions.lock().unwrap_or_else(|p| p.into_inner());
        // Only the table and this admission hold the lock: nobody waits, forget the source.
        if Arc::strong_count(&self.lock) == 2 {
            admissions.remove(&self.source);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The source a client address is counted and banned as.
pub fn source_of(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let prefix = u32::from(ipv6_prefix.min(128));
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
    }
}

/// Whether `ip` is inside `network/prefix`.
pub fn in_network(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (ip.to_canonical(), network.to_canonical()) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let p = u32::from(prefix.min(32));
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let p = u32::from(prefix.min(128));
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl Shield {
    /// A shield writing `blocking.log` into `log_dir` (when given).
    pub fn new(
        config: ProtectionConfig,
        store: Arc<dyn StateStore>,
        log_dir: Option<&Path>,
        error_log: ErrorLog,
        metrics: Arc<Metrics>,
        server_name: &str,
    ) -> std::io::Result<Shield> {
        let blocking_log = match log_dir {
            Some(dir) => Some(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(dir.join("blocking.log"))?)),
            None => None,
        };
        Ok(Shield {
            config: ArcSwap::from_pointee(config),
            runtime_exemptions: RwLock::new(Vec::new()),
            bans: RwLock::new(HashMap::new()),
            counters: Mutex::new(HashMap::new()),
            already_logged: Mutex::new(HashMap::new()),
            already_logged_budget: LineBudget::new(MAX_ALREADY_BLOCKED_LINES_PER_SECOND),
            store,
            blocking_log,
            error_log,
            metrics,
            server_name: server_name.to_string(),
            mirror: OnceLock::new(),
            unsynced: Arc::default(),
            unsynced_events: Mutex::default(),
            admissions: Arc::default(),
        })
    }

    /// Waits for `client`'s turn to have one credential checked, when its failures are
    /// counted in `category` (otherwise `None`: nothing to wait for). Checks from one source
    /// run one at a time, so a refusal is counted — and the ban made — before the next guess
    /// is looked at, however many connections or streams the source opens (the caller checks
    /// the ban again once admitted).
    pub async fn admit(&self, client: IpAddr, category: Category) -> Option<Admission> {
        let (source, _) = self.counted(client, category)?;
        let lock = {
            let mut admissions = self.admissions.lock().unwrap_or_else(|p| p.into_inner());
            admissions.entry(source).or_default().clone()
        };
        let turn = lock.clone().lock_owned().await;
        Some(Admission { admissions: self.admissions.clone(), source, turn: Some(turn), lock })
    }

    /// Applies new protection settings (reload); bans stay.
    pub fn reconfigure(&self, config: ProtectionConfig) {
        self.config.store(Arc::new(config));
    }

    /// Loads the bans in force and the runtime exemptions from the state store (start-up, and
    /// after a shared store came back); false when the store did not answer.
    pub async fn load(&self) -> bool {
        let Ok(members) = self.store.set_members(EXEMPTIONS_KEY).await else { return false };
        let parsed: Vec<Exemption> = members.iter().filter_map(|m| decode_exemption(m)).collect();
        *self.runtime_exemptions.write().unwrap_or_else(|p| p.into_inner()) = parsed;
        let Ok(records) = self.store.bans().await else { return false };
        let mut bans = self.bans.write().unwrap_or_else(|p| p.into_inner());
        for r in records {
            if let Ok(ip) = r.subject.parse::<IpAddr>() {
                let hits = bans.get(&ip).map_or(0, |b| b.hits);
                bans.insert(ip, Ban { source: r.subject, category: r.category, since_ms: r.since_ms, until_ms: r.until_ms, hits });
            }
        }
        self.metrics.banned_sources(bans.len());
        true
    }

    /// Mirrors every later ban and unban into nftables (see [`nft`]).
    pub fn attach_mirror(&self, mirror: nft::NftMirror) {
        let _ = self.mirror.set(mirror);
    }

    /// The kernel mirror, when one is attached.
    pub fn mirror(&self) -> Option<&nft::NftMirror> {
        self.mirror.get()
    }

    /// The bans in force, as the kernel mirror takes them.
    pub fn mirrored_bans(&self) -> Vec<nft::MirroredBan> {
        let now = now_ms();
        let bans = self.bans.read().unwrap_or_else(|p| p.into_inner());
        bans.iter()
            .filter(|(_, b)| b.until_ms > now)
            .map(|(ip, b)| (*ip, self.prefix_of(*ip), Duration::from_millis(b.until_ms - now)))
            .collect()
    }

    /// The status to answer `client` with when it is banned (`None`: not banned). Also
    /// writes `<ip> :: IP is already blocked.` to `error.log`, at most once a minute per source.
    pub fn check(&self, client: IpAddr) -> Option<u16> {
        let config = self.config.load();
        let source = source_of(client, config.ipv6_prefix);
        {
            let bans = self.bans.read().unwrap_or_else(|p| p.into_inner());
            let ban = bans.get(&source)?;
            if ban.until_ms <= now_ms() {
                return None;
            }
        }
        if let Some(ban) = self.bans.write().unwrap_or_else(|p| p.into_inner()).get_mut(&source) {
            ban.hits += 1;
        }
        let mut logged = self.already_logged.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if logged.get(&source).is_none_or(|at| now.duration_since(*at) >= ALREADY_BLOCKED_LOG_INTERVAL)
            && self.already_logged_budget.allow()
        {
            // The budget keeps this map below 60 s × the per-second allowance entries.
            if logged.len() >= MAX_COUNTED_SOURCES {
                logged.retain(|_, at| now.duration_since(*at) < ALREADY_BLOCKED_LOG_INTERVAL);
            }
            logged.insert(source, now);
            self.error_log.warn(&format!("{} :: IP is already blocked.", client.to_canonical()));
        }
        Some(config.blocked_status)
    }

    fn exempt(&self, config: &ProtectionConfig, client: IpAddr, category: Category) -> bool {
        let matches = |e: &Exemption| e.categories.contains(&category) && in_network(client, e.address, e.prefix_length);
        config.exemptions.iter().any(matches) || self.runtime_exemptions.read().unwrap_or_else(|p| p.into_inner()).iter().any(matches)
    }

    /// Every exemption: from the configuration file and added at run time.
    pub fn exemptions(&self) -> Vec<(Exemption, &'static str)> {
        let mut out: Vec<(Exemption, &'static str)> = self.config.load().exemptions.iter().cloned().map(|e| (e, "config")).collect();
        out.extend(self.runtime_exemptions.read().unwrap_or_else(|p| p.into_inner()).iter().cloned().map(|e| (e, "api")));
        out
    }

    /// Adds (or replaces) a runtime exemption; persisted in the store.
    pub async fn add_exemption(&self, exemption: Exemption) -> Result<(), crate::cluster::StoreError> {
        self.del_exemption(exemption.address, exemption.prefix_length).await?;
        self.store.set_add(EXEMPTIONS_KEY, &encode_exemption(&exemption), MAX_RUNTIME_EXEMPTIONS).await?;
        self.error_log.warn(&format!(
            "exemption added: {}/{} for {}",
            exemption.address,
            exemption.prefix_length,
            names(&exemption.categories)
        ));
        self.runtime_exemptions.write().unwrap_or_else(|p| p.into_inner()).push(exemption);
        Ok(())
    }

    /// Removes a runtime exemption; true when there was one.
    pub async fn del_exemption(&self, address: IpAddr, prefix_length: u8) -> Result<bool, crate::cluster::StoreError> {
        let removed: Vec<Exemption> = {
            let mut list = self.runtime_exemptions.write().unwrap_or_else(|p| p.into_inner());
            let (gone, kept): (Vec<Exemption>, Vec<Exemption>) =
                list.drain(..).partition(|e| e.address == address && e.prefix_length == prefix_length);
            *list = kept;
            gone
        };
        for e in &removed {
            self.store.set_remove(EXEMPTIONS_KEY, &encode_exemption(e)).await?;
        }
        Ok(!removed.is_empty())
    }

    /// Counts one event of `category` for `client`; bans it when the event is the
    /// `trigger`-th within `window`. Returns true when this event banned the source.
    ///
    /// With a store shared by several peers the window is the store's (one exact count for
    /// the cluster, on the store's clock); if the store cannot answer, this peer counts alone
    /// until it can.
    pub async fn record(&self, client: IpAddr, category: Category, request: RequestLine<'_>) -> bool {
        let Some((source, settings)) = self.counted(client, category) else { return false };
        let reached = match self.count_shared(source, category, &settings).await {
            Some(reached) => reached && !self.is_banned(source),
            None => self.count_here(source, category, &settings),
        };
        if reached {
            self.ban(client, source, category.as_str(), settings.ban, request);
        }
        reached
    }

    /// Counts the event in a shared store's window; `None` when the store is not shared or
    /// did not answer (then the event is kept to be merged into it later).
    async fn count_shared(&self, source: IpAddr, category: Category, settings: &CategorySettings) -> Option<bool> {
        if !self.store.shared() {
            return None;
        }
        let key = format!("shield:{category}:{source}");
        let Ok(count) = self.store.record_event(&key, settings.window).await else {
            // Counted here for now; merged into the shared window when the store is back.
            let mut pending = self.unsynced_events.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() < MAX_UNSYNCED_EVENTS {
                pending.push((key, now_ms(), settings.window));
            }
            return None;
        };
        let reached = count >= u64::from(settings.trigger);
        if reached {
            // The ban starts the count afresh, as the local counter does: after an unban one
            // more failure must not ban again.
            let _ = self.store.clear_events(&key).await;
        }
        Some(reached)
    }

    /// Counts the event in this peer's memory; true at the `trigger`-th within the window.
    fn count_here(&self, source: IpAddr, category: Category, settings: &CategorySettings) -> bool {
        let reached = self.count_locally(source, category, settings.trigger, settings.window);
        if reached && self.store.shared() {
            // The ban (reconciled later) covers these events: merging them would re-ban the
            // source at its next failure after an unban.
            let key = format!("shield:{category}:{source}");
            self.unsynced_events.lock().unwrap_or_else(|p| p.into_inner()).retain(|(k, _, _)| *k != key);
        }
        reached
    }

    /// [`Shield::record`] from code that cannot wait (the framing guard's hook): counted at
    /// once in memory, or — with a shared store — in a task of its own.
    pub fn record_detached(self: &Arc<Self>, client: IpAddr, category: Category, request: RequestLine<'_>) {
        if !self.store.shared() {
            if let Some((source, settings)) = self.counted(client, category)
                && self.count_here(source, category, &settings)
            {
                self.ban(client, source, category.as_str(), settings.ban, request);
            }
            return;
        }
        let shield = self.clone();
        let (method, path, protocol, host) =
            (request.method.to_string(), request.path.to_string(), request.protocol.to_string(), request.host.to_string());
        tokio::spawn(async move {
            let line = RequestLine { method: &method, path: &path, protocol: &protocol, host: &host };
            shield.record(client, category, line).await;
        });
    }

    /// The source and settings an event of `category` from `client` is counted with, unless
    /// the category is off or the client exempt.
    fn counted(&self, client: IpAddr, category: Category) -> Option<(IpAddr, CategorySettings)> {
        let config = self.config.load();
        let settings = config.categories.get(&category)?;
        if !settings.enabled || self.exempt(&config, client, category) {
            return None;
        }
        Some((source_of(client, config.ipv6_prefix), settings.clone()))
    }

    /// The prefix length a banned source stands for (IPv4: the address; IPv6: `ipv6_prefix`).
    fn prefix_of(&self, source: IpAddr) -> u8 {
        if source.is_ipv4() { 32 } else { self.config.load().ipv6_prefix }
    }

    /// Puts a ban into memory (and the kernel mirror). When the table is full, expired bans
    /// go first; a ban that still does not fit is kept by the store only.
    fn remember(&self, source: IpAddr, ban: Ban) {
        let remaining = Duration::from_millis(ban.until_ms.saturating_sub(now_ms()));
        {
            let mut bans = self.bans.write().unwrap_or_else(|p| p.into_inner());
            if bans.len() >= MAX_BANS {
                let now = now_ms();
                bans.retain(|_, b| b.until_ms > now);
            }
            if bans.len() < MAX_BANS {
                bans.insert(source, ban);
            }
            self.metrics.banned_sources(bans.len());
        }
        if let Some(mirror) = self.mirror.get() {
            mirror.ban(source, self.prefix_of(source), remaining);
        }
    }

    /// Takes a ban out of memory (and the kernel mirror); true when memory had it.
    fn forget(&self, source: IpAddr) -> bool {
        if let Some(mirror) = self.mirror.get() {
            mirror.unban(source, self.prefix_of(source));
        }
        let mut bans = self.bans.write().unwrap_or_else(|p| p.into_inner());
        let removed = bans.remove(&source).is_some();
        self.metrics.banned_sources(bans.len());
        removed
    }

    fn is_banned(&self, source: IpAddr) -> bool {
        self.bans.read().unwrap_or_else(|p| p.into_inner()).get(&source).is_some_and(|b| b.until_ms > now_ms())
    }

    /// This peer's own exact window for (source, category); true at the `trigger`-th event.
    fn count_locally(&self, source: IpAddr, category: Category, trigger: u32, window: Duration) -> bool {
        let now = Instant::now();
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let key = (source, category);
        if !counters.contains_key(&key) && counters.len() >= MAX_COUNTED_SOURCES {
            // Evict the least recently active tenth in one pass (amortized O(1) per event
            // under a spray); bans live in another table and are never touched.
            let mut ages: Vec<(Instant, (IpAddr, Category))> = counters.iter().map(|(k, c)| (c.last, *k)).collect();
            let cut = MAX_COUNTED_SOURCES / 10;
            ages.select_nth_unstable_by_key(cut, |(last, _)| *last);
            for (_, old) in ages.into_iter().take(cut) {
                counters.remove(&old);
            }
        }
        let counter = counters.entry(key).or_insert_with(|| Counter { events: VecDeque::new(), last: now });
        counter.last = now;
        while counter.events.front().is_some_and(|t| now.duration_since(*t) >= window) {
            counter.events.pop_front();
        }
        counter.events.push_back(now);
        let reached = counter.events.len() >= trigger as usize;
        if reached {
            counters.remove(&key);
        }
        reached
    }

    fn ban(&self, client: IpAddr, source: IpAddr, category: &str, duration: Duration, request: RequestLine<'_>) {
        let since_ms = now_ms();
        let until_ms = since_ms.saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        let ban = Ban { source: source.to_string(), category: category.to_string(), since_ms, until_ms, hits: 0 };
        self.remember(source, ban.clone());
        self.metrics.ban(category);
        let minutes = duration.as_secs().div_ceil(60);
        let ip = client.to_canonical();
        let line = format!(
            "{} [emerg] {}#0: {ip} will be blocked for {minutes} minutes for exceeding retry limit., client: {ip}, server: {}, request: \"{} {} {}\", host: \"{}\"\n",
            nginx_time(SystemTime::now()),
            std::process::id(),
            self.server_name,
            escaped(request.method),
            escaped(request.path).max(MAX_LOGGED_PATH),
            escaped(request.protocol),
            escaped(request.host),
        );
        if let Some(log) = &self.blocking_log
            && let Ok(mut file) = log.lock()
        {
            let _ = file.write_all(line.as_bytes());
        }
        self.error_log.warn(&format!("{ip} banned for {minutes} minutes ({category})"));
        let record =
            BanRecord { subject: ban.source, category: ban.category, since_ms, until_ms, reason: format!("{category} trigger reached") };
        let store = self.store.clone();
        let unsynced = self.unsynced.clone();
        tokio::spawn(async move {
            if let Err(error) = store.ban(record.clone()).await {
                tracing::warn!("cannot persist ban of {} yet: {error}", record.subject);
                let mut pending = unsynced.lock().unwrap_or_else(|p| p.into_inner());
                if pending.len() < MAX_UNSYNCED_BANS {
                    pending.push(record);
                }
            }
        });
    }

    /// Writes bans the store could not take (it was down) once it answers again; runs while
    /// the shield lives. Nothing banned while degraded is lost.
    pub fn spawn_reconciler(self: &Arc<Self>) {
        let shield = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RECONCILE_INTERVAL).await;
                let Some(shield) = shield.upgrade() else { return };
                let events: Vec<(String, u64, Duration)> =
                    std::mem::take(&mut *shield.unsynced_events.lock().unwrap_or_else(|p| p.into_inner()));
                let mut kept_events = Vec::new();
                let mut merged = 0usize;
                for (key, at, window) in events {
                    if at.saturating_add(u64::try_from(window.as_millis()).unwrap_or(u64::MAX)) <= now_ms() {
                        continue; // out of its window: nothing to merge
                    }
                    match shield.store.merge_event(&key, at, window).await {
                        Ok(_) => merged += 1,
                        Err(_) => kept_events.push((key, at, window)),
                    }
                }
                if merged > 0 {
                    shield
                        .error_log
                        .warn(&format!("state store reachable again: {merged} failure event(s) counted meanwhile merged into it"));
                }
                shield.unsynced_events.lock().unwrap_or_else(|p| p.into_inner()).extend(kept_events);
                let pending: Vec<BanRecord> = std::mem::take(&mut *shield.unsynced.lock().unwrap_or_else(|p| p.into_inner()));
                if pending.is_empty() {
                    continue;
                }
                let (mut written, mut left) = (0usize, Vec::new());
                for record in pending {
                    if record.until_ms <= now_ms() {
                        continue;
                    }
                    match shield.store.ban(record.clone()).await {
                        Ok(()) => written += 1,
                        Err(_) => left.push(record),
                    }
                }
                if written > 0 {
                    shield.error_log.warn(&format!("state store reachable again: {written} ban(s) made meanwhile written to it"));
                }
                shield.unsynced.lock().unwrap_or_else(|p| p.into_inner()).extend(left);
            }
        });
    }

    /// Applies a change another peer made in the shared store (or this one made through it):
    /// bans and unbans reach this peer's memory (and kernel mirror), exemptions are re-read.
    /// False when the store could not be read (the caller re-reads everything later).
    pub async fn apply_change(&self, change: &crate::cluster::Change) -> bool {
        use crate::cluster::Change;
        match change {
            Change::Banned(subject) => {
                let Ok(ip) = subject.parse::<IpAddr>() else { return true };
                let record = match self.store.ban_lookup(subject).await {
                    Ok(Some(record)) => record,
                    Ok(None) => return true,
                    Err(_) => return false,
                };
                let hits = {
                    let bans = self.bans.read().unwrap_or_else(|p| p.into_inner());
                    match bans.get(&ip) {
                        Some(b) if b.until_ms == record.until_ms => return true, // known already
                        known => known.map_or(0, |b| b.hits),
                    }
                };
                let ban =
                    Ban { source: record.subject, category: record.category, since_ms: record.since_ms, until_ms: record.until_ms, hits };
                self.remember(ip, ban);
            }
            Change::Unbanned(subject) => {
                if let Ok(ip) = subject.parse::<IpAddr>() {
                    self.forget(ip);
                }
            }
            Change::SetChanged(key) if key == EXEMPTIONS_KEY => match self.store.set_members(EXEMPTIONS_KEY).await {
                Ok(members) => {
                    *self.runtime_exemptions.write().unwrap_or_else(|p| p.into_inner()) =
                        members.iter().filter_map(|m| decode_exemption(m)).collect();
                }
                Err(_) => return false,
            },
            Change::Resync => return self.load().await,
            _ => {}
        }
        true
    }

    /// Bans the source of `ip` for `duration` by hand (category `manual`; the operator's
    /// `blocked ban`); written to the store and `blocking.log` like any ban.
    pub fn ban_manually(&self, ip: IpAddr, duration: Duration) {
        let source = source_of(ip, self.config.load().ipv6_prefix);
        let line = RequestLine { method: "-", path: "-", protocol: "-", host: "-" };
        self.ban(ip, source, MANUAL_CATEGORY, duration, line);
    }

    /// Lifts the ban on the source of `ip`; true when there was one.
    pub async fn unban(&self, ip: IpAddr) -> bool {
        let source = source_of(ip, self.config.load().ipv6_prefix);
        let removed = self.forget(source);
        let stored = self.store.unban(&source.to_string()).await.unwrap_or(false);
        if removed || stored {
            self.error_log.warn(&format!("{source} unbanned by the administrator"));
        }
        removed || stored
    }

    /// Bans in force, longest-standing first.
    pub fn list(&self) -> Vec<Ban> {
        let now = now_ms();
        let bans = self.bans.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Ban> = bans.values().filter(|b| b.until_ms > now).cloned().collect();
        out.sort_by_key(|b| b.since_ms);
        out
    }
}

/// Category of bans set by hand.
pub const MANUAL_CATEGORY: &str = "manual";
/// Longest manual ban.
pub const MAX_MANUAL_BAN: Duration = Duration::from_secs(365 * 24 * 3600);

/// Store set holding runtime exemptions.
pub const EXEMPTIONS_KEY: &str = "protect:exemptions";
/// Most bans waiting to be written to an unreachable store.
pub const MAX_UNSYNCED_BANS: usize = 100_000;
/// Most failure events waiting to be merged into an unreachable shared store.
pub const MAX_UNSYNCED_EVENTS: usize = 100_000;
/// How often bans made while the store was unreachable are retried.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// Most runtime exemptions.
pub const MAX_RUNTIME_EXEMPTIONS: usize = 10_000;

/// `a,b`: category names as exemptions are stored and logged.
fn names(categories: &[Category]) -> String {
    categories.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",")
}

fn encode_exemption(e: &Exemption) -> String {
    format!("{}/{}|{}", e.address, e.prefix_length, names(&e.categories))
}

/// A stored exemption; `None` when it is malformed or names a category this peer does not
/// know (one written by a newer peer): it is left in the store, untouched.
fn decode_exemption(text: &str) -> Option<Exemption> {
    let (net, categories) = text.split_once('|')?;
    let (address, prefix) = net.rsplit_once('/')?;
    Some(Exemption {
        address: address.parse().ok()?,
        prefix_length: prefix.parse().ok()?,
        categories: categories.split(',').filter(|c| !c.is_empty()).map(str::parse).collect::<Result<_, _>>().ok()?,
    })
}

pub mod nft;
#[cfg(test)]
mod tests;
