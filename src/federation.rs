//! The federation policy of the SIP edge (DESIGN §4) and the state it decides on, shared by
//! every peer through the state store.
//!
//! - The partner domain of a request is the host of its From URI (lower case, trailing dot
//!   dropped; longer than 256 characters or empty: refused). The block list wins (403, the
//!   connection closes); the organisation's own domains are not partners; allow-listed
//!   partners pass unthrottled; discovered partners pass throttled to `discovered_rate` per
//!   domain (503 + `Retry-After` beyond it), or get 403 when discovery is off.
//! - **Watch list.** A discovered domain goes on it when the requests forwarded for it have
//!   addressed more than `max_distinct_users` distinct local URIs (a capped set in the store:
//!   further requests, to new or already-seen users, get 403), or when the share of
//!   404/480/484/604 among the finals to its requests exceeds `error_share` over at least
//!   `error_min_sample` finals within [`ERROR_WINDOW`] (flagged: throttled to
//!   [`FLAGGED_RATE`] request per second). The administrator can leave it, allow or block the
//!   domain, or clear it.
//! - **In the store** (key layout below): the lists changed at run time, the watch list, the
//!   distinct-user sets with their cap and — when the store is shared by a cluster — the
//!   throttle windows (an exact sliding window: [`StateStore::admit_event`]) and the error
//!   windows. Every peer follows the store's change notifications and re-reads the lists
//!   within a round trip. With the embedded store (one peer) the throttle and error counts
//!   stay in memory: the same numbers without a disk write per request.
//! - **Domains view**: first/last seen, requests, throttled, refused, responses by class and
//!   errors, per domain, as this peer saw them (distinct users come from the shared set).
//!
//! Keys: `federation:allow` (set of `domain` or `domain edge`), `federation:block` (set),
//! `federation:watch` (set of `domain reason since_ms`), `federation:users:<domain>` (capped
//! counting set, forgotten after [`USERS_IDLE`] without a request), windows `federation:rate:<domain>`, `federation:finals:<domain>`,
//! `federation:errors:<domain>`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::clock::unix_ms;
use crate::cluster::{Change, MAX_EVENTS_PER_WINDOW, SetAdd, StateStore, StoreError};
use crate::config::sip::{FederationConfig, partner_domain};
use crate::event::{Event, EventBus};

#[cfg(test)]
mod tests;

/// Most partner domains with statistics and a local throttle kept; the least recently seen
/// tenth goes when a spray of invented domains reaches it.
pub const MAX_TRACKED_DOMAINS: usize = 100_000;
/// Most (domain, user) pairs remembered as already counted (a cache of the store's sets).
pub const MAX_CACHED_USERS: usize = 200_000;
/// Most entries of each list changed at run time (allow, block, watch).
pub const MAX_RUNTIME_ENTRIES: usize = 10_000;
/// The window over which the error share of a domain is measured.
pub const ERROR_WINDOW: Duration = Duration::from_secs(3600);
/// Most distinct discovered domains one source address (an IPv6 /64) may speak for within
/// [`SOURCE_WINDOW`]: an unauthenticated sender rotating invented From domains would
/// otherwise get a fresh throttle and user cap with each one.
pub const MAX_DISCOVERED_DOMAINS_PER_SOURCE: usize = 16;
/// The window of [`MAX_DISCOVERED_DOMAINS_PER_SOURCE`].
pub const SOURCE_WINDOW: Duration = Duration::from_secs(3600);
/// Most source addresses tracked for it; the stalest tenth goes beyond.
pub const MAX_TRACKED_SOURCES: usize = 100_000;
/// Requests per second a domain flagged for its error share may still send.
pub const FLAGGED_RATE: u32 = 1;
/// A discovered domain's distinct-user count is forgotten after this long without a request
/// counted (its watch-list entry stays): a spray of invented From domains must not leave a
/// set in the store for each of them for ever.
pub const USERS_IDLE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often a peer with an embedded store purges what expired.
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// User URIs longer than this are counted by their SHA-256 (a long URI must neither be
/// refused by the store nor escape the count).
const MAX_USER_KEY: usize = 128;

const ALLOW_KEY: &str = "federation:allow";
const BLOCK_KEY: &str = "federation:block";
const WATCH_KEY: &str = "federation:watch";

/// What the policy says about a request from a partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// From one of the organisation's own domains: not a partner.
    Local,
    /// An allow-listed partner.
    Allowed,
    /// A discovered partner within its rate.
    Discovered,
    /// Blocked: 403 and the connection is closed.
    Blocked,
    /// Not accepted (discovery off, or no usable From host): 403.
    Refused,
    /// On the watch list for addressing too many distinct users: 403.
    Watched,
    /// Over its rate: 503 with `Retry-After` (seconds).
    Throttled { retry_after_secs: u64 },
}

impl Decision {
    /// The metric label and access-log word.
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Local => "local",
            Decision::Allowed => "allowed",
            Decision::Discovered => "discovered",
            Decision::Blocked => "blocked",
            Decision::Refused => "refused",
            Decision::Watched => "watched",
            Decision::Throttled { .. } => "throttled",
        }
    }
}

/// Why a domain is on the watch list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WatchReason {
    /// It addressed more than `max_distinct_users` distinct local URIs: refused (403).
    DistinctUsers,
    /// Its share of 404/480/484/604 finals exceeded `error_share`: throttled to 1/s.
    ErrorShare,
}

impl WatchReason {
    fn as_str(self) -> &'static str {
        match self {
            WatchReason::DistinctUsers => "distinct-users",
            WatchReason::ErrorShare => "error-share",
        }
    }

    fn parse(text: &str) -> Option<WatchReason> {
        match text {
            "distinct-users" => Some(WatchReason::DistinctUsers),
            "error-share" => Some(WatchReason::ErrorShare),
            _ => None,
        }
    }
}

/// One watch-list entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchEntry {
    pub domain: String,
    pub reason: WatchReason,
    /// Unix ms when it was put on the list.
    pub since_ms: u64,
}

impl WatchEntry {
    fn member(&self) -> String {
        format!("{} {} {}", self.domain, self.reason.as_str(), self.since_ms)
    }

    fn parse(member: &str) -> Option<WatchEntry> {
        let mut parts = member.split(' ');
        let (domain, reason, since) = (parts.next()?, parts.next()?, parts.next()?);
        Some(WatchEntry { domain: domain.to_string(), reason: WatchReason::parse(reason)?, since_ms: since.parse().ok()? })
    }
}

/// Where a list entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The configuration file (changed by editing it and reloading).
    File,
    /// The admin API / CLI (kept in the state store).
    Runtime,
}

/// A list entry as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListEntry {
    pub domain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge: Option<String>,
    pub origin: Origin,
}

/// Responses seen for a domain's requests, by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ResponseClasses {
    #[serde(rename = "2xx")]
    pub success: u64,
    #[serde(rename = "3xx")]
    pub redirect: u64,
    #[serde(rename = "4xx")]
    pub client_error: u64,
    #[serde(rename = "5xx")]
    pub server_error: u64,
    #[serde(rename = "6xx")]
    pub global_failure: u64,
}

/// One row of the domains view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainView {
    pub domain: String,
    /// `allowed`, `blocked`, `discovered`, `watched` (refused: too many users), `flagged`
    /// (throttled for its error share), or `refused` (discovery off).
    pub state: &'static str,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub requests: u64,
    pub throttled: u64,
    pub refused: u64,
    pub responses: ResponseClasses,
    /// Finals 404/480/484/604.
    pub errors: u64,
    pub distinct_users: u64,
}

/// Why a list change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("{0:?} is not a domain name (a DNS name of at most 256 characters, e.g. \"partner.example\")")]
    InvalidDomain(String),
    #[error("{domain} is on the {list} list of the configuration file: change it there and reload")]
    InFile { domain: String, list: &'static str },
    #[error("{domain} is already on the {list} list")]
    AlreadyListed { domain: String, list: &'static str },
    #[error("the {0} list holds its maximum of 10000 run-time entries")]
    Full(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The lists changed at run time, as last read from the store.
#[derive(Debug, Default)]
struct Lists {
    allow: HashMap<String, Option<String>>,
    block: HashSet<String>,
    watch: HashMap<String, WatchEntry>,
}

/// What this peer saw of one domain.
#[derive(Debug, Clone)]
struct DomainStats {
    first_seen_ms: u64,
    last_seen_ms: u64,
    requests: u64,
    throttled: u64,
    refused: u64,
    responses: ResponseClasses,
    errors: u64,
    /// The local throttle: tokens and when they were last topped up.
    tokens: f64,
    topped_up: Instant,
    /// The local error window: when it began, finals and errors in it.
    window_start_ms: u64,
    window_finals: u64,
    window_errors: u64,
}

/// The federation policy and its state.
pub struct Federation {
    config: ArcSwap<FederationConfig>,
    local_domains: ArcSwap<Vec<String>>,
    store: Arc<dyn StateStore>,
    events: EventBus,
    lists: ArcSwap<Lists>,
    stats: Mutex<HashMap<String, DomainStats>>,
    /// Per source address (IPv6: its /64): when its window began, the discovered domains it
    /// spoke for within it.
    sources: Mutex<HashMap<IpAddr, (Instant, HashSet<String>)>>,
    known_users: Mutex<HashSet<(String, String)>>,
}

impl Federation {
    /// The policy of `config` with the organisation's `local_domains` (lower case); the
    /// run-time lists are read by [`Federation::load`].
    pub fn new(config: FederationConfig, local_domains: Vec<String>, store: Arc<dyn StateStore>, events: EventBus) -> Federation {
        Federation {
            config: ArcSwap::from_pointee(config),
            local_domains: ArcSwap::from_pointee(local_domains),
            store,
            events,
            lists: ArcSwap::from_pointee(Lists::default()),
            stats: Mutex::new(HashMap::new()),
            sources: Mutex::new(HashMap::new()),
            known_users: Mutex::new(HashSet::new()),
        }
    }

    /// A reloaded configuration's lists and thresholds.
    pub fn reconfigure(&self, config: FederationConfig, local_domains: Vec<String>) {
        self.config.store(Arc::new(config));
        self.local_domains.store(Arc::new(local_domains));
    }

    /// Re-reads the run-time lists and the watch list from the store (the running ones stay
    /// when it cannot answer).
    pub async fn load(&self) -> Result<(), StoreError> {
        let mut lists = Lists::default();
        for member in self.store.set_members(ALLOW_KEY).await? {
            let mut parts = member.split(' ');
            if let Some(domain) = parts.next() {
                lists.allow.insert(domain.to_string(), parts.next().map(str::to_string));
            }
        }
        lists.block = self.store.set_members(BLOCK_KEY).await?.into_iter().collect();
        for member in self.store.set_members(WATCH_KEY).await? {
            if let Some(entry) = WatchEntry::parse(&member) {
                // Listed for both reasons (a flagged domain then over the user cap, on
                // another peer): the stricter one applies.
                if lists.watch.get(&entry.domain).is_none_or(|w| w.reason == WatchReason::ErrorShare) {
                    lists.watch.insert(entry.domain.clone(), entry);
                }
            }
        }
        self.lists.store(Arc::new(lists));
        Ok(())
    }

    /// Follows the store's changes — this peer's and, with a shared store, every other
    /// peer's — and re-reads the lists when one of them changed, until `stop` completes.
    /// With a store of its own (embedded), it also purges expired records every
    /// [`PURGE_EVERY`] (idle distinct-user sets among them); Redis expires them itself.
    pub async fn follow(self: Arc<Self>, mut changes: broadcast::Receiver<Change>, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut purge = tokio::time::interval_at(Instant::now() + PURGE_EVERY, PURGE_EVERY);
        loop {
            let change = tokio::select! {
                change = changes.recv() => change,
                _ = purge.tick() => {
                    if !self.store.shared() {
                        let _ = self.store.purge_expired().await;
                    }
                    continue;
                }
                () = &mut stop => return,
            };
            let reread = match change {
                Ok(Change::SetChanged(key)) => [ALLOW_KEY, BLOCK_KEY, WATCH_KEY].contains(&key.as_str()),
                Ok(Change::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => true,
                Ok(_) => false,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if reread {
                let _ = self.load().await;
            }
        }
    }

    /// The decision on a request whose From host is `from_host` and whose Request-URI is
    /// `user` (the local URI it addresses), counted in the domains view.
    pub async fn decide(&self, from_host: Option<&str>, user: Option<&str>) -> Decision {
        self.decide_presented(from_host, user, None, None).await
    }

    /// [`Federation::decide`] for a partner that presented a certificate naming
    /// `peer_names` (over TLS): unless the domain is blocked, a certificate that does not
    /// speak for the From domain — a local one included — is refused before anything is
    /// counted against the domain it claims (throttle, distinct users, domains view).
    ///
    /// From `source` (the connection's peer), a discovered domain is refused once the source
    /// spoke for [`MAX_DISCOVERED_DOMAINS_PER_SOURCE`] others ([`Federation::source_may_speak_for`]).
    pub async fn decide_presented(
        &self,
        from_host: Option<&str>,
        user: Option<&str>,
        peer_names: Option<&[String]>,
        source: Option<IpAddr>,
    ) -> Decision {
        let Some(domain) = from_host.and_then(partner_domain) else { return Decision::Refused };
        if source.is_some_and(|source| !self.source_may_speak_for_domain(source, &domain)) {
            return Decision::Refused; // one address rotating through invented domains
        }
        if let Some(names) = peer_names
            && !self.blocked(&domain)
            && !self.certificate_speaks_for(names, &domain)
        {
            return Decision::Refused;
        }
        let decision = self.decide_domain(&domain, user).await;
        if decision != Decision::Local {
            self.with_stats(&domain, |s| {
                s.requests += 1;
                match decision {
                    Decision::Throttled { .. } => s.throttled += 1,
                    Decision::Blocked | Decision::Refused | Decision::Watched => s.refused += 1,
                    _ => {}
                }
            });
        }
        decision
    }

    /// Whether `domain` is on the file's or the run-time block list.
    fn blocked(&self, domain: &str) -> bool {
        self.config.load().blocks(domain) || self.lists.load().block.contains(domain)
    }

    /// Whether `domain` is on the file's or the run-time allow list.
    fn allowed(&self, domain: &str) -> bool {
        self.config.load().allowed(domain).is_some() || self.lists.load().allow.contains_key(domain)
    }

    async fn decide_domain(&self, domain: &str, user: Option<&str>) -> Decision {
        let config = self.config.load();
        let lists = self.lists.load();
        if self.blocked(domain) {
            return Decision::Blocked;
        }
        if self.local_domains.load().iter().any(|d| d == domain) {
            return Decision::Local;
        }
        if self.allowed(domain) {
            return Decision::Allowed;
        }
        if !config.discovery {
            return Decision::Refused;
        }
        let watched = lists.watch.get(domain).map(|w| w.reason);
        if watched == Some(WatchReason::DistinctUsers) {
            return Decision::Watched;
        }
        let rate = if watched == Some(WatchReason::ErrorShare) { FLAGGED_RATE } else { config.discovered_rate.max(1) };
        if !self.admit(domain, rate).await {
            return Decision::Throttled { retry_after_secs: 1 };
        }
        if let Some(user) = user
            && !self.note_user(domain, user, config.max_distinct_users).await
        {
            return Decision::Watched;
        }
        Decision::Discovered
    }

    /// Whether `source` may speak for `from_host`: always for a domain that is not
    /// discovered (blocked, local, allowed: the decision handles those); for a discovered one
    /// while the source has spoken for at most [`MAX_DISCOVERED_DOMAINS_PER_SOURCE`] distinct
    /// discovered domains within [`SOURCE_WINDOW`] (this peer's count).
    pub fn source_may_speak_for(&self, source: IpAddr, from_host: Option<&str>) -> bool {
        from_host.and_then(partner_domain).is_none_or(|domain| self.source_may_speak_for_domain(source, &domain))
    }

    /// [`Federation::source_may_speak_for`] for a domain already in its canonical form.
    fn source_may_speak_for_domain(&self, source: IpAddr, domain: &str) -> bool {
        if self.local_domains.load().iter().any(|d| d == domain) || !matches!(self.state_of(domain), "discovered" | "flagged") {
            return true;
        }
        let source = match source {
            IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
            v4 => v4,
        };
        let now = Instant::now();
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if !sources.contains_key(&source) {
            drop_stalest_tenth(&mut sources, MAX_TRACKED_SOURCES, |(began, _)| *began);
        }
        let (began, domains) = sources.entry(source).or_insert_with(|| (now, HashSet::new()));
        if now.saturating_duration_since(*began) >= SOURCE_WINDOW {
            (*began, *domains) = (now, HashSet::new());
        }
        if domains.contains(domain) {
            return true;
        }
        if domains.len() >= MAX_DISCOVERED_DOMAINS_PER_SOURCE {
            return false;
        }
        domains.insert(domain.to_string());
        true
    }

    /// Whether a request from the inside may go to partner domain `domain` (the Request-URI's
    /// host): not when it is blocked, nor when discovery is off and it is not allowed (or
    /// local). Takes no throttle token and counts nothing: the inside decides what it sends.
    pub fn accepts_outward(&self, domain: Option<&str>) -> bool {
        let Some(domain) = domain.and_then(partner_domain) else { return false };
        !self.blocked(&domain) && (self.config.load().discovery || self.local_domains.load().contains(&domain) || self.allowed(&domain))
    }

    /// Whether a partner that presented a certificate naming `names` may speak for `domain`:
    /// a name equal to the domain, a one-label wildcard covering it (`*.example` covers
    /// `partner.example`, not `a.partner.example`), or the allow entry's `edge` FQDN.
    pub fn certificate_speaks_for(&self, names: &[String], domain: &str) -> bool {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let edge = self.edge_of(&domain);
        names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .any(|name| covers(&name, &domain) || edge.as_deref().is_some_and(|edge| covers(&name, edge)))
    }

    /// The partner edge FQDN configured for `domain` (file or run-time allow entry).
    pub fn edge_of(&self, domain: &str) -> Option<String> {
        match self.config.load().allowed(domain) {
            Some(entry) => entry.edge.clone(),
            None => self.lists.load().allow.get(domain).cloned().flatten(),
        }
    }

    /// Takes one request from `domain`'s throttle of `rate` per second: the store's exact
    /// window when it is shared by a cluster (this peer's bucket while it cannot answer),
    /// else this peer's token bucket (burst = rate).
    async fn admit(&self, domain: &str, rate: u32) -> bool {
        if self.store.shared()
            && let Ok(admitted) =
                self.store.admit_event(&format!("federation:rate:{domain}"), Duration::from_secs(1), u64::from(rate)).await
        {
            return admitted;
        }
        let now = Instant::now();
        let rate = f64::from(rate);
        self.with_stats(domain, |s| {
            s.tokens = (s.tokens + now.saturating_duration_since(s.topped_up).as_secs_f64() * rate).min(rate);
            s.topped_up = now;
            if s.tokens >= 1.0 {
                s.tokens -= 1.0;
                true
            } else {
                false
            }
        })
    }

    /// Counts `user` among the distinct local URIs `domain` addressed; false (and the domain
    /// watch-listed) when it is one more than `cap`.
    async fn note_user(&self, domain: &str, user: &str, cap: u32) -> bool {
        let user = user_key(user);
        let pair = (domain.to_string(), user);
        if self.known_users.lock().unwrap_or_else(|p| p.into_inner()).contains(&pair) {
            return true;
        }
        match self.store.count_member(&users_key(domain), &pair.1, cap as usize, USERS_IDLE).await {
            Ok(SetAdd::Added | SetAdd::Present) => {
                let mut known = self.known_users.lock().unwrap_or_else(|p| p.into_inner());
                if known.len() >= MAX_CACHED_USERS {
                    known.clear(); // only a cache: the store keeps the sets
                }
                known.insert(pair);
                true
            }
            Ok(SetAdd::Full) => {
                self.put_on_watch(domain, WatchReason::DistinctUsers).await;
                false
            }
            // The store did not answer: the request passes, and the user is counted when it
            // answers again (the next request to this user tries again).
            Err(_) => true,
        }
    }

    /// Notes a final response (`status` ≥ 200) to a request whose From host is `from_host`;
    /// a discovered domain whose share of 404/480/484/604 finals exceeds `error_share` over
    /// at least `error_min_sample` goes on the watch list (flagged). Never waits: with a shared
    /// store the cluster's counts are taken in a task of its own.
    pub fn note_final(self: &Arc<Self>, from_host: Option<&str>, status: u16) {
        let Some(domain) = from_host.and_then(partner_domain) else { return };
        if status < 200 || self.local_domains.load().contains(&domain) {
            return;
        }
        let is_error = matches!(status, 404 | 480 | 484 | 604);
        let now_ms = unix_ms();
        let local = self.with_stats(&domain, |s| {
            let classes = &mut s.responses;
            match status / 100 {
                2 => classes.success += 1,
                3 => classes.redirect += 1,
                4 => classes.client_error += 1,
                5 => classes.server_error += 1,
                _ => classes.global_failure += 1,
            }
            s.errors += u64::from(is_error);
            if now_ms.saturating_sub(s.window_start_ms) > ERROR_WINDOW.as_millis() as u64 {
                (s.window_start_ms, s.window_finals, s.window_errors) = (now_ms, 0, 0);
            }
            s.window_finals += 1;
            s.window_errors += u64::from(is_error);
            (s.window_finals, s.window_errors)
        });
        if self.blocked(&domain) || self.allowed(&domain) || self.lists.load().watch.contains_key(&domain) {
            return;
        }
        let config = self.config.load();
        let over = move |(finals, errors): (u64, u64)| {
            finals >= u64::from(config.error_min_sample) && errors as f64 > config.error_share * finals as f64
        };
        if !self.store.shared() {
            if over(local) {
                self.put_on_watch_now(&domain, WatchReason::ErrorShare);
            }
            return;
        }
        // The cluster's window: counted in a task of its own (the response is not held up).
        let federation = self.clone();
        tokio::spawn(async move {
            if over(federation.shared_finals(&domain, is_error).await.unwrap_or(local)) {
                federation.put_on_watch(&domain, WatchReason::ErrorShare).await;
            }
        });
    }

    /// The cluster's finals and errors for `domain` within [`ERROR_WINDOW`], this one counted.
    /// Both windows keep at most [`MAX_EVENTS_PER_WINDOW`] events: once the finals fill
    /// theirs, the errors are counted over the span its oldest kept final still covers (else a
    /// busy partner's errors of the whole hour would be weighed against its last few minutes).
    async fn shared_finals(&self, domain: &str, is_error: bool) -> Result<(u64, u64), StoreError> {
        let finals_key = format!("federation:finals:{domain}");
        let finals = self.store.record_event(&finals_key, ERROR_WINDOW).await?;
        let errors_key = format!("federation:errors:{domain}");
        if is_error {
            self.store.record_event(&errors_key, ERROR_WINDOW).await?;
        }
        let mut span = ERROR_WINDOW;
        if finals >= MAX_EVENTS_PER_WINDOW as u64
            && let Some(oldest) = self.store.oldest_event(&finals_key, ERROR_WINDOW).await?
        {
            span = span.min(Duration::from_millis(unix_ms().saturating_sub(oldest).saturating_add(1)));
        }
        let errors = self.store.count_events(&errors_key, span).await?;
        Ok((finals, errors))
    }

    /// [`Federation::put_on_watch`] from code that cannot wait: applied on this peer at once,
    /// written to the store in a task.
    fn put_on_watch_now(self: &Arc<Self>, domain: &str, reason: WatchReason) {
        let entry = WatchEntry { domain: domain.to_string(), reason, since_ms: unix_ms() };
        self.apply_watch_entry(entry);
        let (federation, domain) = (self.clone(), domain.to_string());
        tokio::spawn(async move { federation.store_watch_entry(&domain, reason).await });
    }

    /// Puts `domain` on the watch list; a domain flagged for its error share that then
    /// addresses too many users is moved to the stricter reason (refused, not throttled).
    async fn put_on_watch(&self, domain: &str, reason: WatchReason) {
        match self.lists.load().watch.get(domain) {
            Some(entry) if entry.reason == reason || reason == WatchReason::ErrorShare => return,
            Some(_) => {
                for member in self.store.set_members(WATCH_KEY).await.unwrap_or_default() {
                    if WatchEntry::parse(&member).is_some_and(|e| e.domain == domain && e.reason == WatchReason::ErrorShare) {
                        let _ = self.store.set_remove(WATCH_KEY, &member).await;
                    }
                }
            }
            None => {}
        }
        self.store_watch_entry(domain, reason).await;
    }

    /// Puts `domain` on this peer's watch list (until the next read of the store).
    fn apply_watch_entry(&self, entry: WatchEntry) {
        let current = self.lists.load();
        let mut watch = current.watch.clone();
        watch.insert(entry.domain.clone(), entry);
        self.lists.store(Arc::new(Lists { allow: current.allow.clone(), block: current.block.clone(), watch }));
    }

    /// Writes a watch-list entry to the store, announces it, and re-reads the lists.
    async fn store_watch_entry(&self, domain: &str, reason: WatchReason) {
        let entry = WatchEntry { domain: domain.to_string(), reason, since_ms: unix_ms() };
        let mut stored = self.store.set_add(WATCH_KEY, &entry.member(), MAX_RUNTIME_ENTRIES).await;
        if matches!(stored, Ok(SetAdd::Full)) {
            // Full (e.g. a spray of invented domains flagged for their errors): the oldest
            // flagged entry makes room — a domain it concerns is flagged again by its next
            // finals — else every peer would forget this one at its next read of the lists.
            let members = self.store.set_members(WATCH_KEY).await.unwrap_or_default();
            let oldest = members
                .iter()
                .filter_map(|m| WatchEntry::parse(m).filter(|e| e.reason == WatchReason::ErrorShare).map(|e| (e.since_ms, m)))
                .min();
            if let Some((_, oldest)) = oldest {
                let _ = self.store.set_remove(WATCH_KEY, oldest).await;
                stored = self.store.set_add(WATCH_KEY, &entry.member(), MAX_RUNTIME_ENTRIES).await;
            }
        }
        if !matches!(stored, Ok(SetAdd::Present)) {
            self.events.publish(Event::WatchListed { domain: domain.to_string(), reason: reason.as_str().to_string() });
        }
        let _ = self.load().await;
        if self.lists.load().watch.get(domain).map(|w| w.reason) != Some(reason) {
            // The store refused the entry (full or away): this peer applies it all the same.
            self.apply_watch_entry(entry);
        }
    }

    fn with_stats<T>(&self, domain: &str, f: impl FnOnce(&mut DomainStats) -> T) -> T {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        if !stats.contains_key(domain) {
            drop_stalest_tenth(&mut stats, MAX_TRACKED_DOMAINS, |s| s.last_seen_ms);
        }
        let now_ms = unix_ms();
        if let Some(entry) = stats.get_mut(domain) {
            entry.last_seen_ms = now_ms; // the common case: no key to allocate
            return f(entry);
        }
        let rate = f64::from(self.config.load().discovered_rate.max(1));
        let entry = stats.entry(domain.to_string()).or_insert_with(|| DomainStats {
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            requests: 0,
            throttled: 0,
            refused: 0,
            responses: ResponseClasses::default(),
            errors: 0,
            tokens: rate,
            topped_up: Instant::now(),
            window_start_ms: now_ms,
            window_finals: 0,
            window_errors: 0,
        });
        entry.last_seen_ms = now_ms;
        f(entry)
    }
}

/// The admin side: views and list changes.
impl Federation {
    /// The state a domain is in now.
    fn state_of(&self, domain: &str) -> &'static str {
        if self.blocked(domain) {
            "blocked"
        } else if self.allowed(domain) {
            "allowed"
        } else if !self.config.load().discovery {
            "refused"
        } else {
            match self.lists.load().watch.get(domain).map(|w| w.reason) {
                Some(WatchReason::DistinctUsers) => "watched",
                Some(WatchReason::ErrorShare) => "flagged",
                None => "discovered",
            }
        }
    }

    /// Every partner domain this peer has seen (most recent first, at most `limit`), with
    /// the cluster's distinct-user counts.
    pub async fn domains(&self, limit: usize) -> Vec<DomainView> {
        let mut seen: Vec<(String, DomainStats)> =
            self.stats.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(d, s)| (d.clone(), s.clone())).collect();
        seen.sort_by(|a, b| b.1.last_seen_ms.cmp(&a.1.last_seen_ms).then_with(|| a.0.cmp(&b.0)));
        seen.truncate(limit);
        let mut views = Vec::with_capacity(seen.len());
        for (domain, s) in seen {
            let distinct_users = self.store.set_members(&users_key(&domain)).await.map_or(0, |m| m.len() as u64);
            views.push(DomainView {
                state: self.state_of(&domain),
                domain,
                first_seen_ms: s.first_seen_ms,
                last_seen_ms: s.last_seen_ms,
                requests: s.requests,
                throttled: s.throttled,
                refused: s.refused,
                responses: s.responses,
                errors: s.errors,
                distinct_users,
            });
        }
        views
    }

    /// The watch list (oldest first).
    pub fn watch_list(&self) -> Vec<WatchEntry> {
        let mut entries: Vec<WatchEntry> = self.lists.load().watch.values().cloned().collect();
        entries.sort_by(|a, b| a.since_ms.cmp(&b.since_ms).then_with(|| a.domain.cmp(&b.domain)));
        entries
    }

    /// The allow list: the file's entries, then the run-time ones.
    pub fn allow_list(&self) -> Vec<ListEntry> {
        let mut entries: Vec<ListEntry> = self
            .config
            .load()
            .allow
            .iter()
            .map(|a| ListEntry { domain: a.domain.clone(), edge: a.edge.clone(), origin: Origin::File })
            .collect();
        let lists = self.lists.load();
        let mut runtime: Vec<ListEntry> = lists
            .allow
            .iter()
            .map(|(domain, edge)| ListEntry { domain: domain.clone(), edge: edge.clone(), origin: Origin::Runtime })
            .collect();
        runtime.sort_by(|a, b| a.domain.cmp(&b.domain));
        entries.extend(runtime);
        entries
    }

    /// The block list: the file's entries, then the run-time ones.
    pub fn block_list(&self) -> Vec<ListEntry> {
        let mut entries: Vec<ListEntry> =
            self.config.load().block.iter().map(|d| ListEntry { domain: d.clone(), edge: None, origin: Origin::File }).collect();
        let mut runtime: Vec<String> = self.lists.load().block.iter().cloned().collect();
        runtime.sort();
        entries.extend(runtime.into_iter().map(|domain| ListEntry { domain, edge: None, origin: Origin::Runtime }));
        entries
    }

    /// Puts `domain` on the allow list (with its partner edge FQDN); on both lists it stays
    /// blocked and warning 14518 is logged.
    pub async fn allow(&self, domain: &str, edge: Option<&str>) -> Result<(), ListError> {
        let domain = checked(domain)?;
        let edge = edge.map(checked).transpose()?;
        if self.config.load().allowed(&domain).is_some() {
            return Err(ListError::InFile { domain, list: "allow" });
        }
        if self.lists.load().allow.contains_key(&domain) {
            return Err(ListError::AlreadyListed { domain, list: "allow" });
        }
        let member = edge.as_ref().map_or_else(|| domain.clone(), |edge| format!("{domain} {edge}"));
        if self.store.set_add(ALLOW_KEY, &member, MAX_RUNTIME_ENTRIES).await? == SetAdd::Full {
            return Err(ListError::Full("allow"));
        }
        self.load().await?;
        self.events.publish(Event::FederationListChanged { list: "allow", domain: domain.clone(), added: true });
        if self.state_of(&domain) == "blocked" {
            self.warn_both_lists(&domain);
        }
        Ok(())
    }

    /// Puts `domain` on the block list.
    pub async fn block(&self, domain: &str) -> Result<(), ListError> {
        let domain = checked(domain)?;
        if self.config.load().blocks(&domain) {
            return Err(ListError::InFile { domain, list: "block" });
        }
        if self.lists.load().block.contains(&domain) {
            return Err(ListError::AlreadyListed { domain, list: "block" });
        }
        if self.store.set_add(BLOCK_KEY, &domain, MAX_RUNTIME_ENTRIES).await? == SetAdd::Full {
            return Err(ListError::Full("block"));
        }
        self.load().await?;
        self.events.publish(Event::FederationListChanged { list: "block", domain: domain.clone(), added: true });
        if self.config.load().allowed(&domain).is_some() || self.lists.load().allow.contains_key(&domain) {
            self.warn_both_lists(&domain);
        }
        Ok(())
    }

    /// Takes `domain` off the run-time allow list; false when it was not on it.
    pub async fn disallow(&self, domain: &str) -> Result<bool, ListError> {
        let domain = checked(domain)?;
        if self.config.load().allowed(&domain).is_some() {
            return Err(ListError::InFile { domain, list: "allow" });
        }
        let Some(edge) = self.lists.load().allow.get(&domain).cloned() else { return Ok(false) };
        let member = edge.map_or_else(|| domain.clone(), |edge| format!("{domain} {edge}"));
        let removed = self.store.set_remove(ALLOW_KEY, &member).await?;
        self.load().await?;
        if removed {
            self.events.publish(Event::FederationListChanged { list: "allow", domain, added: false });
        }
        Ok(removed)
    }

    /// Takes `domain` off the run-time block list; false when it was not on it.
    pub async fn unblock(&self, domain: &str) -> Result<bool, ListError> {
        let domain = checked(domain)?;
        if self.config.load().blocks(&domain) {
            return Err(ListError::InFile { domain, list: "block" });
        }
        let removed = self.store.set_remove(BLOCK_KEY, &domain).await?;
        self.load().await?;
        if removed {
            self.events.publish(Event::FederationListChanged { list: "block", domain, added: false });
        }
        Ok(removed)
    }

    /// Takes `domain` off the watch list and forgets its distinct users and error counts (a
    /// fresh start); false when it was not on the watch list.
    pub async fn clear(&self, domain: &str) -> Result<bool, ListError> {
        let domain = checked(domain)?;
        let mut removed = false;
        for member in self.store.set_members(WATCH_KEY).await? {
            if WatchEntry::parse(&member).is_some_and(|e| e.domain == domain) {
                removed |= self.store.set_remove(WATCH_KEY, &member).await?;
            }
        }
        let users = users_key(&domain);
        for member in self.store.set_members(&users).await? {
            self.store.set_remove(&users, &member).await?;
        }
        self.known_users.lock().unwrap_or_else(|p| p.into_inner()).retain(|(d, _)| *d != domain);
        self.store.clear_events(&format!("federation:finals:{domain}")).await?;
        self.store.clear_events(&format!("federation:errors:{domain}")).await?;
        if let Some(s) = self.stats.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&domain) {
            (s.window_finals, s.window_errors) = (0, 0);
        }
        self.load().await?;
        if removed {
            self.events.publish(Event::FederationListChanged { list: "watch", domain, added: false });
        }
        Ok(removed)
    }

    fn warn_both_lists(&self, domain: &str) {
        // error.log says "warning 14518 …" (the event log writes it).
        self.events.publish(Event::FederationListChanged { list: "both", domain: domain.to_string(), added: true });
    }
}

/// A spray of invented keys must not grow `map` past `cap`: at the cap, the tenth with the
/// oldest `age` goes.
fn drop_stalest_tenth<K: Clone + std::hash::Hash + Eq, V, A: Ord>(map: &mut HashMap<K, V>, cap: usize, age: impl Fn(&V) -> A) {
    if map.len() < cap {
        return;
    }
    let mut ages: Vec<(A, K)> = map.iter().map(|(key, value)| (age(value), key.clone())).collect();
    ages.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, stale) in ages.into_iter().take(cap / 10) {
        map.remove(&stale);
    }
}

/// A domain from the admin API, or why it is not one.
fn checked(text: &str) -> Result<String, ListError> {
    partner_domain(text).ok_or_else(|| ListError::InvalidDomain(text.chars().take(300).collect()))
}

fn users_key(domain: &str) -> String {
    format!("federation:users:{domain}")
}

/// The form a user URI is counted in: without the parameters and headers after its host (the
/// user part keeps its own, e.g. `;phone-context=`: they select another user), lower case;
/// a long one by its SHA-256.
pub(crate) fn user_key(uri: &str) -> String {
    let host_from = uri.find('@').map_or(0, |at| at + 1);
    let end = uri[host_from..].find([';', '?']).map_or(uri.len(), |i| host_from + i);
    let bare = uri[..end].to_ascii_lowercase();
    if bare.len() <= MAX_USER_KEY {
        return bare;
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bare.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Whether certificate name `name` covers host `host` (exactly, or by a one-label wildcard).
fn covers(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(parent) => host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => name == host,
    }
}
