//! The embedded state store: a redb database file in `state_dir`, for single-node edges.
//!
//! Why redb rather than SQLite: pure Rust (no C build, ~10× less compile time than
//! rusqlite's bundled SQLite on 2 cores), ACID with serialized write transactions — which
//! is exactly the atomicity each [`StateStore`] operation needs — and no SQL we would
//! only use as a key-value store. Bans and keys commit durably (fsync); sliding-window
//! events commit without fsync (`Durability::None`): losing the last moments of failure
//! counters in a crash is harmless, and it keeps brute-force counting cheap.
//!
//! Writes run on the blocking thread pool so an fsync never stalls the proxy's workers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::broadcast;

use super::*;
use crate::clock::{Clock, millis};

/// File name inside `state_dir`.
pub const FILE_NAME: &str = "state.redb";

/// key → (expires at ms, 0 = never; value).
const KV: TableDefinition<'_, &str, (u64, &[u8])> = TableDefinition::new("kv");
/// window key → little-endian u64 event times (ms), oldest first.
const EVENTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("events");
/// (set key, member) → ().
const SETS: TableDefinition<'_, (&str, &str), ()> = TableDefinition::new("sets");
/// counting set key → when it is forgotten (ms; see [`StateStore::count_member`]).
const COUNTING: TableDefinition<'_, &str, u64> = TableDefinition::new("counting");
/// subject → JSON [`BanRecord`].
const BANS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("bans");

/// A store backed by one redb file.
pub struct EmbeddedStore {
    db: Arc<Database>,
    clock: Clock,
    changes: broadcast::Sender<Change>,
    path: PathBuf,
}

fn backend<E: std::fmt::Display>(error: E) -> StoreError {
    StoreError::Backend(error.to_string())
}

fn decode_events(bytes: &[u8]) -> Vec<u64> {
    bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()
}

fn encode_events(events: &[u64]) -> Vec<u8> {
    events.iter().flat_map(|e| e.to_le_bytes()).collect()
}

impl EmbeddedStore {
    /// Opens (or creates) `state_dir/state.redb`.
    pub fn open(state_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        Self::open_with_clock(state_dir, crate::clock::system())
    }

    /// Opens with an explicit clock (tests).
    pub fn open_with_clock(state_dir: &Path, clock: Clock) -> Result<EmbeddedStore, StoreError> {
        let path = state_dir.join(FILE_NAME);
        let open_err = |reason: String| StoreError::Open { path: path.display().to_string(), reason };
        std::fs::create_dir_all(state_dir).map_err(|e| open_err(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| open_err(e.to_string()))?;
        // Create the tables up front so read transactions never meet a missing table.
        let txn = db.begin_write().map_err(backend)?;
        {
            txn.open_table(KV).map_err(backend)?;
            txn.open_table(EVENTS).map_err(backend)?;
            txn.open_table(SETS).map_err(backend)?;
            txn.open_table(COUNTING).map_err(backend)?;
            txn.open_table(BANS).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        let (changes, _) = broadcast::channel(1024);
        Ok(EmbeddedStore { db: Arc::new(db), clock, changes, path })
    }

    /// Writes many bans in one transaction (bulk import, benchmarks); no notifications.
    pub async fn ban_many(&self, records: Vec<BanRecord>) -> Result<(), StoreError> {
        self.write(true, move |txn| {
            let mut table = txn.open_table(BANS).map_err(backend)?;
            for record in &records {
                check_key(&record.subject)?;
                let json = serde_json::to_vec(record).map_err(backend)?;
                table.insert(record.subject.as_str(), json.as_slice()).map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds an event at `at` (dropped when already outside `window`) to window `key`, keeping
    /// the events in time order and at most [`MAX_EVENTS_PER_WINDOW`]; the count inside.
    async fn add_event(&self, key: &str, at: u64, window: Duration) -> Result<u64, StoreError> {
        check_key(key)?;
        let since = self.now().saturating_sub(millis(window));
        let k = key.to_string();
        self.write(false, move |txn| {
            let mut table = txn.open_table(EVENTS).map_err(backend)?;
            let mut events = table.get(k.as_str()).map_err(backend)?.map(|v| decode_events(v.value())).unwrap_or_default();
            events.retain(|&t| t > since);
            if at > since || window.is_zero() {
                let position = events.partition_point(|&t| t <= at);
                events.insert(position, at);
            }
            if events.len() > MAX_EVENTS_PER_WINDOW {
                let excess = events.len() - MAX_EVENTS_PER_WINDOW;
                events.drain(..excess);
            }
            table.insert(k.as_str(), encode_events(&events).as_slice()).map_err(backend)?;
            Ok(events.len() as u64)
        })
        .await
    }

    /// Adds `member` to set `key` unless it holds `cap` members: a list (fsync'd, announced)
    /// or, with `idle`, a counting set (forgotten once idle that long).
    async fn add_member(&self, key: &str, member: &str, cap: usize, idle: Option<Duration>) -> Result<SetAdd, StoreError> {
        check_key(key)?;
        check_key(member)?;
        let (k, m) = (key.to_string(), member.to_string());
        let forget_at = idle.map(|idle| self.now().saturating_add(millis(idle)));
        let outcome = self
            .write(idle.is_none(), move |txn| {
                if let Some(at) = forget_at {
                    txn.open_table(COUNTING).map_err(backend)?.insert(k.as_str(), at).map_err(backend)?;
                }
                let mut table = txn.open_table(SETS).map_err(backend)?;
                if table.get((k.as_str(), m.as_str())).map_err(backend)?.is_some() {
                    return Ok(SetAdd::Present);
                }
                let len = table
                    .range((k.as_str(), "")..)
                    .map_err(backend)?
                    .take_while(|e| e.as_ref().is_ok_and(|(key, _)| key.value().0 == k))
                    .count();
                if len >= cap {
                    return Ok(SetAdd::Full);
                }
                table.insert((k.as_str(), m.as_str()), ()).map_err(backend)?;
                Ok(SetAdd::Added)
            })
            .await?;
        if outcome == SetAdd::Added && idle.is_none() {
            self.notify(Change::SetChanged(key.to_string()));
        }
        Ok(outcome)
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    fn notify(&self, change: Change) {
        // No receiver is fine: nobody is interested yet.
        let _ = self.changes.send(change);
    }

    /// Runs a write transaction on the blocking pool.
    async fn write<T, F>(&self, durable: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut txn = db.begin_write().map_err(backend)?;
            if !durable {
                txn.set_durability(Durability::None).map_err(backend)?;
            }
            let out = f(&txn)?;
            txn.commit().map_err(backend)?;
            Ok(out)
        })
        .await
        .map_err(backend)?
    }

    fn read<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        f(&txn)
    }
}

impl StateStore for EmbeddedStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let now = self.now();
            self.read(|txn| {
                let table = txn.open_table(KV).map_err(backend)?;
                let Some(entry) = table.get(key).map_err(backend)? else { return Ok(None) };
                let (expires, value) = entry.value();
                Ok((expires == 0 || expires > now).then(|| value.to_vec()))
            })
        })
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Option<Duration>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            check_key(key)?;
            if value.len() > MAX_VALUE_BYTES {
                return Err(StoreError::TooLarge("value"));
            }
            let expires = ttl.map_or(0, |t| self.now().saturating_add(millis(t)).max(1));
            let (k, v) = (key.to_string(), value.to_vec());
            self.write(true, move |txn| {
                txn.open_table(KV).map_err(backend)?.insert(k.as_str(), (expires, v.as_slice())).map_err(backend)?;
                Ok(())
            })
            .await?;
            self.notify(Change::KeyChanged(key.to_string()));
            Ok(())
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let k = key.to_string();
            let existed = self
                .write(true, move |txn| Ok(txn.open_table(KV).map_err(backend)?.remove(k.as_str()).map_err(backend)?.is_some()))
                .await?;
            if existed {
                self.notify(Change::KeyChanged(key.to_string()));
            }
            Ok(existed)
        })
    }

    fn record_event<'a>(&'a self, key: &'a str, window: Duration) -> StoreFuture<'a, u64> {
        Box::pin(async move { self.add_event(key, self.now(), window).await })
    }

    fn admit_event<'a>(&'a self, key: &'a str, window: Duration, limit: u64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_key(key)?;
            let (now, k) = (self.now(), key.to_string());
            let since = now.saturating_sub(millis(window));
            let limit = limit.min(MAX_EVENTS_PER_WINDOW as u64) as usize;
            self.write(false, move |txn| {
                let mut table = txn.open_table(EVENTS).map_err(backend)?;
                let mut events = table.get(k.as_str()).map_err(backend)?.map(|v| decode_events(v.value())).unwrap_or_default();
                events.retain(|&t| t > since);
                let admitted = events.len() < limit;
                if admitted {
                    let position = events.partition_point(|&t| t <= now);
                    events.insert(position, now);
                }
                table.insert(k.as_str(), encode_events(&events).as_slice()).map_err(backend)?;
                Ok(admitted)
            })
            .await
        })
    }

    fn merge_event<'a>(&'a self, key: &'a str, at_ms: u64, window: Duration) -> StoreFuture<'a, u64> {
        Box::pin(self.add_event(key, at_ms, window))
    }

    fn count_events<'a>(&'a self, key: &'a str, window: Duration) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let since = self.now().saturating_sub(millis(window));
            self.read(|txn| {
                let table = txn.open_table(EVENTS).map_err(backend)?;
                let events = table.get(key).map_err(backend)?.map(|v| decode_events(v.value())).unwrap_or_default();
                Ok(events.iter().filter(|&&t| t > since).count() as u64)
            })
        })
    }

    fn clear_events<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            check_key(key)?;
            let k = key.to_string();
            self.write(false, move |txn| {
                txn.open_table(EVENTS).map_err(backend)?.remove(k.as_str()).map_err(backend)?;
                Ok(())
            })
            .await
        })
    }

    fn oldest_event<'a>(&'a self, key: &'a str, window: Duration) -> StoreFuture<'a, Option<u64>> {
        Box::pin(async move {
            let since = self.now().saturating_sub(millis(window));
            self.read(|txn| {
                let table = txn.open_table(EVENTS).map_err(backend)?;
                let events = table.get(key).map_err(backend)?.map(|v| decode_events(v.value())).unwrap_or_default();
                Ok(events.into_iter().find(|&t| t > since))
            })
        })
    }

    fn set_add<'a>(&'a self, key: &'a str, member: &'a str, cap: usize) -> StoreFuture<'a, SetAdd> {
        Box::pin(self.add_member(key, member, cap, None))
    }

    /// Without an fsync: a crash may lose the last members, which only counting sets accept.
    fn count_member<'a>(&'a self, key: &'a str, member: &'a str, cap: usize, idle: Duration) -> StoreFuture<'a, SetAdd> {
        Box::pin(self.add_member(key, member, cap, Some(idle)))
    }

    fn set_remove<'a>(&'a self, key: &'a str, member: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let (k, m) = (key.to_string(), member.to_string());
            let removed = self
                .write(true, move |txn| {
                    Ok(txn.open_table(SETS).map_err(backend)?.remove((k.as_str(), m.as_str())).map_err(backend)?.is_some())
                })
                .await?;
            if removed {
                self.notify(Change::SetChanged(key.to_string()));
            }
            Ok(removed)
        })
    }

    fn set_members<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            self.read(|txn| {
                let table = txn.open_table(SETS).map_err(backend)?;
                let mut out = Vec::new();
                for entry in table.range((key, "")..).map_err(backend)? {
                    let (k, _) = entry.map_err(backend)?;
                    let (set, member) = k.value();
                    if set != key {
                        break;
                    }
                    out.push(member.to_string());
                }
                Ok(out)
            })
        })
    }

    fn ban(&self, record: BanRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            check_key(&record.subject)?;
            let json = serde_json::to_vec(&record).map_err(backend)?;
            let subject = record.subject.clone();
            self.write(true, move |txn| {
                txn.open_table(BANS).map_err(backend)?.insert(subject.as_str(), json.as_slice()).map_err(backend)?;
                Ok(())
            })
            .await?;
            self.notify(Change::Banned(record.subject));
            Ok(())
        })
    }

    fn unban<'a>(&'a self, subject: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let s = subject.to_string();
            let existed = self
                .write(true, move |txn| Ok(txn.open_table(BANS).map_err(backend)?.remove(s.as_str()).map_err(backend)?.is_some()))
                .await?;
            if existed {
                self.notify(Change::Unbanned(subject.to_string()));
            }
            Ok(existed)
        })
    }

    fn ban_lookup<'a>(&'a self, subject: &'a str) -> StoreFuture<'a, Option<BanRecord>> {
        Box::pin(async move {
            let now = self.now();
            self.read(|txn| {
                let table = txn.open_table(BANS).map_err(backend)?;
                let Some(entry) = table.get(subject).map_err(backend)? else { return Ok(None) };
                let record: BanRecord = serde_json::from_slice(entry.value()).map_err(backend)?;
                Ok((record.until_ms > now).then_some(record))
            })
        })
    }

    fn bans(&self) -> StoreFuture<'_, Vec<BanRecord>> {
        Box::pin(async move {
            let now = self.now();
            self.read(|txn| {
                let table = txn.open_table(BANS).map_err(backend)?;
                let mut out = Vec::new();
                for entry in table.iter().map_err(backend)? {
                    let (_, value) = entry.map_err(backend)?;
                    let record: BanRecord = serde_json::from_slice(value.value()).map_err(backend)?;
                    if record.until_ms > now {
                        out.push(record);
                    }
                }
                Ok(out)
            })
        })
    }

    fn purge_expired(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let now = self.now();
            self.write(true, move |txn| {
                let mut purged = 0u64;
                let mut kv = txn.open_table(KV).map_err(backend)?;
                kv.retain(|_, (expires, _)| {
                    let keep = expires == 0 || expires > now;
                    purged += u64::from(!keep);
                    keep
                })
                .map_err(backend)?;
                let mut bans = txn.open_table(BANS).map_err(backend)?;
                bans.retain(|_, json| {
                    let keep = serde_json::from_slice::<BanRecord>(json).is_ok_and(|r| r.until_ms > now);
                    purged += u64::from(!keep);
                    keep
                })
                .map_err(backend)?;
                // Counting sets idle past their time.
                let mut counting = txn.open_table(COUNTING).map_err(backend)?;
                let mut idle = Vec::new();
                for entry in counting.iter().map_err(backend)? {
                    let (key, at) = entry.map_err(backend)?;
                    if at.value() <= now {
                        idle.push(key.value().to_string());
                    }
                }
                let mut sets = txn.open_table(SETS).map_err(backend)?;
                for key in idle {
                    counting.remove(key.as_str()).map_err(backend)?;
                    let mut members = Vec::new();
                    for entry in sets.range((key.as_str(), "")..).map_err(backend)? {
                        let (k, _) = entry.map_err(backend)?;
                        let (set, member) = k.value();
                        if set != key {
                            break;
                        }
                        members.push(member.to_string());
                    }
                    for member in members {
                        sets.remove((key.as_str(), member.as_str())).map_err(backend)?;
                    }
                    purged += 1;
                }
                // Windows longer than a day are not used; anything older is dead weight.
                let horizon = now.saturating_sub(86_400_000);
                let mut events = txn.open_table(EVENTS).map_err(backend)?;
                events
                    .retain(|_, bytes| {
                        let keep = decode_events(bytes).last().is_some_and(|&t| t > horizon);
                        purged += u64::from(!keep);
                        keep
                    })
                    .map_err(backend)?;
                Ok(purged)
            })
            .await
        })
    }

    fn dump(&self) -> StoreFuture<'_, super::Dump> {
        Box::pin(async move {
            let now = self.now();
            let bans = self.bans().await?;
            self.read(|txn| {
                let mut dump = super::Dump { bans, ..super::Dump::default() };
                for entry in txn.open_table(KV).map_err(backend)?.iter().map_err(backend)? {
                    let (key, value) = entry.map_err(backend)?;
                    let (expires, bytes) = value.value();
                    if expires == 0 || expires > now {
                        dump.values.push((key.value().to_string(), bytes.to_vec(), (expires != 0).then_some(expires)));
                    }
                }
                for entry in txn.open_table(SETS).map_err(backend)?.iter().map_err(backend)? {
                    let (key, _) = entry.map_err(backend)?;
                    let (set, member) = key.value();
                    match dump.sets.last_mut() {
                        Some((last, members)) if last == set => members.push(member.to_string()),
                        _ => dump.sets.push((set.to_string(), vec![member.to_string()])),
                    }
                }
                Ok(dump)
            })
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests;
