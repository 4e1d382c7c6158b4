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
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::clock::unix_ms;
use crate::cluster::{BanRecord, StateStore};
use crate::config::{Category, CategorySettings, Exemption, ProtectionConfig};
use crate::event::{Actor, Event, EventBus, RequestSummary};
use crate::telemetry::logging::{ErrorLog, LineBudget};
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
    error_log: ErrorLog,
    metrics: Arc<Metrics>,
    /// Bans, unbans and exemption changes are published here (`blocking.log`, `error.log`
    /// and the kernel mirror subscribe).
    events: EventBus,
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

/// Whether `ip` is inside one of `networks` (`network/prefix` pairs).
pub fn in_any_network(ip: IpAddr, networks: &[(IpAddr, u8)]) -> bool {
    networks.iter().any(|(network, prefix)| in_network(ip, *network, *prefix))
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
    /// A shield publishing its bans, unbans and exemption changes on `events`.
    pub fn new(
        config: ProtectionConfig,
        store: Arc<dyn StateStore>,
        events: EventBus,
        error_log: ErrorLog,
        metrics: Arc<Metrics>,
    ) -> Shield {
        Shield {
            config: ArcSwap::from_pointee(config),
            runtime_exemptions: RwLock::new(Vec::new()),
            bans: RwLock::new(HashMap::new()),
            counters: Mutex::new(HashMap::new()),
            already_logged: Mutex::new(HashMap::new()),
            already_logged_budget: LineBudget::new(MAX_ALREADY_BLOCKED_LINES_PER_SECOND),
            store,
            error_log,
            metrics,
            events,
            unsynced: Arc::default(),
            unsynced_events: Mutex::default(),
            admissions: Arc::default(),
        }
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

    /// The bans in force, as the kernel mirror takes them.
    pub fn mirrored_bans(&self) -> Vec<nft::MirroredBan> {
        let now = unix_ms();
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
            if ban.until_ms <= unix_ms() {
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
        self.events.publish(Event::ExemptionAdded {
            network: format!("{}/{}", exemption.address, exemption.prefix_length),
            categories: exemption.categories.iter().map(|c| c.as_str().to_string()).collect(),
        });
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
            self.events.publish(Event::ExemptionRemoved { network: format!("{}/{}", e.address, e.prefix_length) });
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
            self.ban(client, source, category.as_str(), settings.ban, Actor::Trigger, Some(request));
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
                pending.push((key, unix_ms(), settings.window));
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
                self.ban(client, source, category.as_str(), settings.ban, Actor::Trigger, Some(request));
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

    /// Puts a ban another peer made into memory and says so (the kernel mirror follows).
    fn remember(&self, source: IpAddr, ban: Ban) {
        let until_ms = ban.until_ms;
        self.keep(source, ban);
        self.events.publish(Event::BanInForce { source, prefix: self.prefix_of(source), until_ms });
    }

    /// Puts a ban into memory. When the table is full, expired bans go first; a ban that
    /// still does not fit is kept by the store only.
    fn keep(&self, source: IpAddr, ban: Ban) {
        {
            let mut bans = self.bans.write().unwrap_or_else(|p| p.into_inner());
            if bans.len() >= MAX_BANS {
                let now = unix_ms();
                bans.retain(|_, b| b.until_ms > now);
            }
            if bans.len() < MAX_BANS {
                bans.insert(source, ban);
            }
            self.metrics.banned_sources(bans.len());
        }
    }

    /// Takes a ban out of memory and says so (the kernel mirror follows); true when memory
    /// had it.
    fn forget(&self, source: IpAddr, by: Option<Actor>) -> bool {
        self.events.publish(Event::BanLifted { source, prefix: self.prefix_of(source), by });
        let mut bans = self.bans.write().unwrap_or_else(|p| p.into_inner());
        let removed = bans.remove(&source).is_some();
        self.metrics.banned_sources(bans.len());
        removed
    }

    fn is_banned(&self, source: IpAddr) -> bool {
        self.bans.read().unwrap_or_else(|p| p.into_inner()).get(&source).is_some_and(|b| b.until_ms > unix_ms())
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

    fn ban(&self, client: IpAddr, source: IpAddr, category: &str, duration: Duration, by: Actor, request: Option<RequestLine<'_>>) {
        let since_ms = unix_ms();
        let until_ms = since_ms.saturating_add(crate::clock::millis(duration));
        let ban = Ban { source: source.to_string(), category: category.to_string(), since_ms, until_ms, hits: 0 };
        // One event says both "banned here" (the logs) and "in force" (the kernel mirror).
        self.keep(source, ban.clone());
        self.metrics.ban(category);
        self.events.publish(Event::Banned {
            client: client.to_canonical(),
            source,
            prefix: self.prefix_of(source),
            until_ms,
            category: category.to_string(),
            minutes: duration.as_secs().div_ceil(60),
            by,
            request: request.map(|r| RequestSummary {
                method: r.method.to_string(),
                path: r.path.to_string(),
                protocol: r.protocol.to_string(),
                host: r.host.to_string(),
            }),
        });
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

    /// Bans the source of `ip` for `duration` by hand (category `manual`; the operator's
    /// `blocked ban`); written to the store and `blocking.log` like any ban.
    pub fn ban_manually(&self, ip: IpAddr, duration: Duration) {
        let source = source_of(ip, self.config.load().ipv6_prefix);
        self.ban(ip, source, MANUAL_CATEGORY, duration, Actor::Administrator, None);
    }

    /// Lifts the ban on the source of `ip`; true when there was one.
    pub async fn unban(&self, ip: IpAddr) -> bool {
        let source = source_of(ip, self.config.load().ipv6_prefix);
        let stored = self.store.unban(&source.to_string()).await.unwrap_or(false);
        let removed = self.bans.read().unwrap_or_else(|p| p.into_inner()).contains_key(&source);
        if removed || stored {
            self.forget(source, Some(Actor::Administrator));
        }
        removed || stored
    }

    /// Bans in force, longest-standing first.
    pub fn list(&self) -> Vec<Ban> {
        let now = unix_ms();
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

pub mod blocking_log;
pub mod firewall;
pub mod nft;
mod sync;
#[cfg(test)]
mod tests;
