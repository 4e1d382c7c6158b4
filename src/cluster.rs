//! Shared state: one [`StateStore`] interface for everything peers must agree on (DESIGN
//! §6) — bans and failure counters, rate windows, tokens and credential caches, lists,
//! exemptions, weights — with an **embedded** implementation persisted in `state_dir`
//! (`embedded`) and a Redis one shared by the peers of a cluster (`redis`).
//!
//! Every operation is one atomic step so that a Redis implementation can map it onto one
//! command or one Lua script (`record_event` = ZADD + ZREMRANGEBYSCORE + ZCARD, `set_add`
//! with a cap = a script, bans = hash + PEXPIREAT), never a read-modify-write across calls.
//! Times are wall-clock Unix milliseconds because records survive restarts and cross hosts.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

#[cfg(test)]
pub(crate) mod contract;
pub mod embedded;
pub mod redis;

/// Longest key accepted (keys are built from network input such as user names).
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value accepted.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most events kept per sliding window; older ones are dropped beyond it.
pub const MAX_EVENTS_PER_WINDOW: usize = 10_000;

/// A boxed future returned by store operations (object-safe async).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created (permissions, disk, another
    /// process holding it).
    #[error("cannot open state store at {path}: {reason}")]
    Open { path: String, reason: String },
    /// A read or write failed inside the backend.
    #[error("state store backend failed: {0}")]
    Backend(String),
    /// A key or value exceeded its cap.
    #[error("{0} is too large")]
    TooLarge(&'static str),
}

/// Result of adding a member to a capped set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetAdd {
    /// Newly added.
    Added,
    /// Already a member.
    Present,
    /// Not added: the set holds `cap` members.
    Full,
}

/// A blocked source (an IP or a /64), with an absolute expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// What is banned, e.g. `203.0.113.7` or `2001:db8::/64`.
    pub subject: String,
    /// Intrusion-protection category that triggered it.
    pub category: String,
    /// Unix milliseconds when the ban was set.
    pub since_ms: u64,
    /// Unix milliseconds when the ban ends.
    pub until_ms: u64,
    /// Free text for operators.
    pub reason: String,
}

/// Everything durable in a store, for `portcullis state export|import` (sliding windows are
/// left out: they are short-lived counters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dump {
    /// Key, value and absolute expiry (Unix ms; `None` = never).
    pub values: Vec<(String, Vec<u8>, Option<u64>)>,
    /// Set key and members.
    pub sets: Vec<(String, Vec<String>)>,
    pub bans: Vec<BanRecord>,
}

/// A change another part of the edge (or another peer) may need to react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Banned(String),
    Unbanned(String),
    KeyChanged(String),
    SetChanged(String),
    /// Changes may have been missed (a shared store's subscription was re-established):
    /// re-read everything.
    Resync,
}

/// The shared-state interface. Implementations must make every method atomic.
pub trait StateStore: Send + Sync + 'static {
    /// Value of `key`, unless absent or expired.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;
    /// Sets `key`, expiring after `ttl` (never when `None`).
    fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Option<Duration>) -> StoreFuture<'a, ()>;
    /// Removes `key`; true when it existed.
    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool>;
    /// Records one event now in the sliding window `key` and returns how many events fall
    /// within the last `window`, this one included (exact, not bucketed).
    fn record_event<'a>(&'a self, key: &'a str, window: Duration) -> StoreFuture<'a, u64>;
    /// Records one event now in window `key` only while fewer than `limit` (at most
    /// [`MAX_EVENTS_PER_WINDOW`]) fall within the last `window`; true when it was recorded
    /// (admitted). A sliding-window rate limit that stays exact across peers: refused events
    /// are not recorded, so a flood over the limit still lets the limit through.
    fn admit_event<'a>(&'a self, key: &'a str, window: Duration, limit: u64) -> StoreFuture<'a, bool>;
    /// Events within the last `window`, without recording one.
    fn count_events<'a>(&'a self, key: &'a str, window: Duration) -> StoreFuture<'a, u64>;
    /// Adds an event that happened at `at_ms` (Unix ms) to window `key` — one counted
    /// elsewhere while this store was unreachable; ignored when already outside `window`.
    /// Returns the events now within the window.
    fn merge_event<'a>(&'a self, key: &'a str, at_ms: u64, window: Duration) -> StoreFuture<'a, u64>;
    /// Forgets every event of window `key` (a fresh start, e.g. once its source is banned).
    fn clear_events<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;
    /// Unix milliseconds of the oldest event within `window` (for `Retry-After`).
    fn oldest_event<'a>(&'a self, key: &'a str, window: Duration) -> StoreFuture<'a, Option<u64>>;
    /// Adds `member` to set `key` unless it already holds `cap` members.
    fn set_add<'a>(&'a self, key: &'a str, member: &'a str, cap: usize) -> StoreFuture<'a, SetAdd>;
    /// [`StateStore::set_add`] for a set that only counts (distinct users) and is named by
    /// network input: a single-node store may skip the sync to disk (a crash can lose its
    /// last members), no change is announced, and the whole set is forgotten once `idle` has
    /// passed since its last call (sets of invented names must not pile up for ever).
    fn count_member<'a>(&'a self, key: &'a str, member: &'a str, cap: usize, idle: Duration) -> StoreFuture<'a, SetAdd>;
    /// Removes `member`; true when it was present.
    fn set_remove<'a>(&'a self, key: &'a str, member: &'a str) -> StoreFuture<'a, bool>;
    /// Members of set `key`.
    fn set_members<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Vec<String>>;
    /// Sets (or replaces) a ban.
    fn ban(&self, record: BanRecord) -> StoreFuture<'_, ()>;
    /// Lifts a ban; true when there was one.
    fn unban<'a>(&'a self, subject: &'a str) -> StoreFuture<'a, bool>;
    /// The ban on `subject`, unless none or expired.
    fn ban_lookup<'a>(&'a self, subject: &'a str) -> StoreFuture<'a, Option<BanRecord>>;
    /// Every ban in force.
    fn bans(&self) -> StoreFuture<'_, Vec<BanRecord>>;
    /// Deletes expired keys, windows and bans; returns how many records went.
    fn purge_expired(&self) -> StoreFuture<'_, u64>;
    /// Changes made through this store (and, for Redis, by other peers).
    fn subscribe(&self) -> broadcast::Receiver<Change>;
    /// Every unexpired value, set and ban.
    fn dump(&self) -> StoreFuture<'_, Dump>;
    /// Writes `dump` into this store (values keep their absolute expiry; expired ones are
    /// skipped); returns how many records were written.
    fn restore(&self, dump: Dump) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let now = crate::clock::unix_ms();
            let mut written = 0;
            for (key, value, expires) in &dump.values {
                let ttl = match expires {
                    Some(at) if *at <= now => continue,
                    Some(at) => Some(Duration::from_millis(at - now)),
                    None => None,
                };
                self.set(key, value, ttl).await?;
                written += 1;
            }
            for (key, members) in &dump.sets {
                for member in members {
                    self.set_add(key, member, usize::MAX).await?;
                    written += 1;
                }
            }
            for ban in dump.bans {
                if ban.until_ms > now {
                    self.ban(ban).await?;
                    written += 1;
                }
            }
            Ok(written)
        })
    }
    /// Whether other peers share this store (then counters that must be exact across peers
    /// are kept here rather than in one peer's memory).
    fn shared(&self) -> bool {
        false
    }
    /// Whether the store answered its last call (false: degraded, serving from local state).
    fn healthy(&self) -> bool {
        true
    }
}

fn check_key(key: &str) -> Result<(), StoreError> {
    if key.len() > MAX_KEY_BYTES { Err(StoreError::TooLarge("key")) } else { Ok(()) }
}
