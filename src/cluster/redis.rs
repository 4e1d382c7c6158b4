//! The Redis state store (`cluster.store = "redis"`, DESIGN §6): the [`StateStore`] contract on
//! a Redis server shared by every peer, so bans, counters, tokens, exemptions and weight
//! overrides act as one.
//!
//! - Every counter that must be exact across peers is one Lua script that reads Redis's own
//!   clock (`TIME`), never a peer's (an event counted elsewhere during an outage is merged
//!   with its own time by the same script): sliding windows are sorted sets trimmed, appended and
//!   counted in one step; capped sets check and add in one step.
//! - Keys carry TTLs matching their expiry (`PX`, `PEXPIRE`, bans `PEXPIREAT` at their end);
//!   bans are also indexed in one sorted set scored by their end, so listing them is one script.
//! - Changes (ban, unban, key and set writes) are published on [`CHANGES_CHANNEL`] with the
//!   writing peer's name; every peer's subscriber turns other peers' messages into
//!   [`Change`] notifications, so local caches are invalidated within a round trip.
//! - No caller waits on a dead Redis: connect and response timeouts are short
//!   ([`OPERATION_TIMEOUT`]), and after a failure a circuit breaker fails calls at once for
//!   [`BREAKER_OPEN`] before trying again. [`StateStore::healthy`] says whether the last call
//!   worked (the status shows `cluster: degraded` when not).
//!
//! Key layout (prefix `pc:`): `k:<key>` values, `w:<key>` windows, `s:<key>` sets,
//! `b:<subject>` bans (hash), `bans` the ban index, `seq` the window member counter.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{broadcast, oneshot};

use super::{BanRecord, Change, MAX_EVENTS_PER_WINDOW, MAX_VALUE_BYTES, SetAdd, StateStore, StoreError, StoreFuture, check_key};
use crate::clock::{millis, unix_ms};
use crate::config::redis_url::{RedisUrl, SENTINEL_SCHEME, SentinelTarget, parse_sentinel};

/// The pub/sub channel carrying changes between peers.
pub const CHANGES_CHANNEL: &str = "pc:changes";
/// Connect and response timeout of one Redis call.
pub const OPERATION_TIMEOUT: Duration = Duration::from_millis(500);
/// After a failed call, calls fail at once for this long.
pub const BREAKER_OPEN: Duration = Duration::from_secs(2);

const PREFIX: &str = "pc:";

/// `KEYS[1]` window, `KEYS[2]` sequence; `ARGV[1]` event ms (empty: now, on Redis's clock),
/// `ARGV[2]` window ms, `ARGV[3]` cap → count (an event already outside the window is not
/// added).
const ADD_EVENT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local at = tonumber(ARGV[1]) or now
local window = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if at > now - window then
  local seq = redis.call('INCR', KEYS[2])
  redis.call('ZADD', KEYS[1], at, at .. '-' .. seq)
  redis.call('PEXPIRE', KEYS[1], window)
end
local n = redis.call('ZCARD', KEYS[1])
if n > cap then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1)
  n = cap
end
return n
";

/// `KEYS[1]` window, `KEYS[2]` sequence; `ARGV[1]` window ms, `ARGV[2]` limit → 1 when the
/// event was admitted (fewer than the limit inside the window), else 0 (not recorded).
const ADMIT_EVENT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], now, now .. '-' .. seq)
redis.call('PEXPIRE', KEYS[1], window)
return 1
";

/// `KEYS[1]` window; `ARGV[1]` window ms → events inside it.
const COUNT_EVENTS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. (now - tonumber(ARGV[1])), '+inf')
";

/// `KEYS[1]` window; `ARGV[1]` window ms → the oldest event's ms inside it, or nil.
const OLDEST_EVENT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local first = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - tonumber(ARGV[1])), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if #first == 0 then return nil end
return tonumber(first[2])
";

/// `KEYS[1]` set; `ARGV[1]` member, `ARGV[2]` cap → 0 added, 1 present, 2 full.
const SET_ADD: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 2 end
redis.call('SADD', KEYS[1], ARGV[1])
return 0
";

/// `KEYS[1]` set; `ARGV[1]` member, `ARGV[2]` cap, `ARGV[3]` idle ms → like [`SET_ADD`], and
/// the set expires once idle that long.
const COUNT_MEMBER: &str = r"
local r = 0
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then r = 1
elseif redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then r = 2
else redis.call('SADD', KEYS[1], ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return r
";

/// `KEYS[1]` ban index, `ARGV[1]` ban key prefix → flat list of subject, category, since,
/// until, reason for every ban in force (expired index entries are dropped).
const LIST_BANS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for _, subject in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local f = redis.call('HMGET', ARGV[1] .. subject, 'category', 'since', 'until', 'reason')
  if f[1] then
    table.insert(out, subject) table.insert(out, f[1]) table.insert(out, f[2]) table.insert(out, f[3]) table.insert(out, f[4] or '')
  end
end
return out
";

/// A Redis-backed store shared by every peer.
pub struct RedisStore {
    /// The connection to the current master (empty until Sentinel named one).
    connection: Arc<ArcSwapOption<ConnectionManager>>,
    peer: String,
    changes: broadcast::Sender<Change>,
    /// Unix ms until which calls fail at once.
    breaker_until: AtomicU64,
    healthy: AtomicBool,
    /// Dropped with the store: ends the subscriber and Sentinel tasks.
    _stop: (oneshot::Sender<()>, oneshot::Sender<()>),
    add_event: redis::Script,
    admit_event: redis::Script,
    count_events: redis::Script,
    oldest_event: redis::Script,
    set_add: redis::Script,
    count_member: redis::Script,
    list_bans: redis::Script,
}

fn backend(error: redis::RedisError) -> StoreError {
    StoreError::Backend(format!("redis: {error}"))
}

impl RedisStore {
    /// A store on `url` for peer `peer`: `redis://host:port/db`, `rediss://host:port/db` (TLS,
    /// verified against the system's roots), or
    /// `redis+sentinel://s1:26379,s2:26379/<master name>[/db]` — then Sentinel is asked for
    /// the master now and every second after, and a failover is followed. Connects lazily: a
    /// Redis that is down at start makes the peer start degraded, not fail.
    pub fn open(url: &str, peer: &str) -> Result<RedisStore, StoreError> {
        Self::open_with_ca(url, peer, None)
    }

    /// The configured store (`cluster.redis_url`, already parsed), trusting the CA
    /// certificates read from the file `ca` (`cluster.redis_ca`) for `rediss://`.
    pub fn open_configured(url: &RedisUrl, peer: &str, ca: Option<&std::path::Path>) -> Result<RedisStore, StoreError> {
        let pem = match ca {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| StoreError::Open { path: path.display().to_string(), reason: e.to_string() })?)
            }
            None => None,
        };
        Self::open_url(url, peer, pem)
    }

    /// [`RedisStore::open`], trusting the PEM certificates in `ca` for `rediss://` (TLS)
    /// instead of the system's roots.
    pub fn open_with_ca(url: &str, peer: &str, ca: Option<Vec<u8>>) -> Result<RedisStore, StoreError> {
        let url = match url.strip_prefix(SENTINEL_SCHEME) {
            Some(rest) => RedisUrl::Sentinel {
                url: url.to_string(),
                target: parse_sentinel(rest).ok_or_else(|| StoreError::Open {
                    path: url.to_string(),
                    reason: "write redis+sentinel://host:26379[,host:26379]/<master>[/db]".into(),
                })?,
            },
            // Any other scheme is the Redis client's to judge.
            None => RedisUrl::Server(url.to_string()),
        };
        Self::open_url(&url, peer, ca)
    }

    fn open_url(url: &RedisUrl, peer: &str, ca: Option<Vec<u8>>) -> Result<RedisStore, StoreError> {
        let open_error = |reason: String| StoreError::Open { path: url.to_string(), reason };
        let connection: Arc<ArcSwapOption<ConnectionManager>> = Arc::default();
        let client: Arc<ArcSwapOption<redis::Client>> = Arc::default();
        let (stop, stopped) = oneshot::channel();
        let (stop_watch, watch_stopped) = oneshot::channel::<()>();
        match url {
            RedisUrl::Sentinel { target, .. } => {
                tokio::spawn(follow_sentinel(target.clone(), connection.clone(), client.clone(), watch_stopped));
            }
            RedisUrl::Server(url) => {
                let direct = match ca {
                    Some(root_cert) if url.starts_with("rediss://") => {
                        redis::Client::build_with_tls(url.as_str(), redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) })
                    }
                    _ => redis::Client::open(url.as_str()),
                }
                .map_err(|e| open_error(e.to_string()))?;
                connection.store(Some(Arc::new(manager(direct.clone()).map_err(|e| open_error(e.to_string()))?)));
                client.store(Some(Arc::new(direct)));
                drop(watch_stopped);
            }
        }
        let (changes, _) = broadcast::channel(1024);
        tokio::spawn(listen(client, peer.to_string(), changes.clone(), stopped));
        Ok(RedisStore {
            connection,
            peer: peer.to_string(),
            changes,
            breaker_until: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            _stop: (stop, stop_watch),
            add_event: redis::Script::new(ADD_EVENT),
            admit_event: redis::Script::new(ADMIT_EVENT),
            count_events: redis::Script::new(COUNT_EVENTS),
            oldest_event: redis::Script::new(OLDEST_EVENT),
            set_add: redis::Script::new(SET_ADD),
            count_member: redis::Script::new(COUNT_MEMBER),
            list_bans: redis::Script::new(LIST_BANS),
        })
    }

    /// A connection, unless the breaker is open.
    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        if unix_ms() < self.breaker_until.load(Ordering::Relaxed) {
            return Err(StoreError::Backend("redis unavailable (retrying shortly)".into()));
        }
        match self.connection.load_full() {
            Some(connection) => Ok((*connection).clone()),
            None => {
                self.healthy.store(false, Ordering::Relaxed);
                Err(StoreError::Backend("redis: no master known yet (asking Sentinel)".into()))
            }
        }
    }

    /// Records the outcome of a call: a failure opens the breaker.
    fn outcome<T>(&self, result: redis::RedisResult<T>) -> Result<T, StoreError> {
        match result {
            Ok(value) => {
                self.healthy.store(true, Ordering::Relaxed);
                Ok(value)
            }
            Err(error) => {
                if error.is_io_error() || error.is_timeout() || error.is_connection_dropped() || error.is_connection_refusal() {
                    self.healthy.store(false, Ordering::Relaxed);
                    self.breaker_until.store(unix_ms() + millis(BREAKER_OPEN), Ordering::Relaxed);
                }
                Err(backend(error))
            }
        }
    }

    /// One event at `at` (`None`: now, on Redis's clock) into window `k`; the count inside.
    async fn add_event(&self, k: &str, at: Option<u64>, window: Duration) -> Result<u64, StoreError> {
        check_key(k)?;
        let mut c = self.connection()?;
        let result = self
            .add_event
            .key(key("w", k))
            .key(format!("{PREFIX}seq"))
            .arg(at.map_or_else(String::new, |at| at.to_string()))
            .arg(millis(window).max(1))
            .arg(MAX_EVENTS_PER_WINDOW)
            .invoke_async(&mut c)
            .await;
        self.outcome(result)
    }

    async fn publish(&self, kind: &str, data: &str) {
        let _ = self.changes.send(decode_change(kind, data).unwrap_or(Change::KeyChanged(data.to_string())));
        if let Ok(mut c) = self.connection() {
            let message = format!("{}\t{kind}\t{data}", self.peer);
            let result: redis::RedisResult<i64> = c.publish(CHANGES_CHANNEL, message).await;
            let _ = self.outcome(result);
        }
    }
}

/// A ban hash's category, since, until and reason.
type BanFields = (Option<String>, Option<u64>, Option<u64>, Option<String>);

/// How often Sentinel is asked which server is the master.
pub const SENTINEL_POLL: Duration = Duration::from_secs(1);

fn key(kind: &str, key: &str) -> String {
    format!("{PREFIX}{kind}:{key}")
}

impl StateStore for RedisStore {
    fn get<'a>(&'a self, k: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            check_key(k)?;
            let mut c = self.connection()?;
            let result: redis::RedisResult<Option<Vec<u8>>> = c.get(key("k", k)).await;
            self.outcome(result)
        })
    }

    fn set<'a>(&'a self, k: &'a str, value: &'a [u8], ttl: Option<Duration>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            check_key(k)?;
            if value.len() > MAX_VALUE_BYTES {
                return Err(StoreError::TooLarge("value"));
            }
            let mut c = self.connection()?;
            let result: redis::RedisResult<()> = match ttl {
                Some(ttl) => c.pset_ex(key("k", k), value, millis(ttl).max(1)).await,
                None => c.set(key("k", k), value).await,
            };
            self.outcome(result)?;
            self.publish("key", k).await;
            Ok(())
        })
    }

    fn delete<'a>(&'a self, k: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_key(k)?;
            let mut c = self.connection()?;
            let result: redis::RedisResult<i64> = c.del(key("k", k)).await;
            let removed = self.outcome(result)? > 0;
            if removed {
                self.publish("key", k).await;
            }
            Ok(removed)
        })
    }

    fn record_event<'a>(&'a self, k: &'a str, window: Duration) -> StoreFuture<'a, u64> {
        Box::pin(self.add_event(k, None, window))
    }

    fn admit_event<'a>(&'a self, k: &'a str, window: Duration, limit: u64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_key(k)?;
            let mut c = self.connection()?;
            let result: redis::RedisResult<i64> = self
                .admit_event
                .key(key("w", k))
                .key(format!("{PREFIX}seq"))
                .arg(millis(window).max(1))
                .arg(limit.min(MAX_EVENTS_PER_WINDOW as u64))
                .invoke_async(&mut c)
                .await;
            Ok(self.outcome(result)? == 1)
        })
    }

    fn count_events<'a>(&'a self, k: &'a str, window: Duration) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            check_key(k)?;
            let mut c = self.connection()?;
            let result = self.count_events.key(key("w", k)).arg(millis(window).max(1)).invoke_async(&mut c).await;
            self.outcome(result)
        })
    }

    fn merge_event<'a>(&'a self, k: &'a str, at_ms: u64, window: Duration) -> StoreFuture<'a, u64> {
        Box::pin(self.add_event(k, Some(at_ms), window))
    }

    fn clear_events<'a>(&'a self, k: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            check_key(k)?;
            let mut c = self.connection()?;
            let result: redis::RedisResult<i64> = c.del(key("w", k)).await;
            self.outcome(result).map(|_| ())
        })
    }

    fn oldest_event<'a>(&'a self, k: &'a str, window: Duration) -> StoreFuture<'a, Option<u64>> {
        Box::pin(async move {
            check_key(k)?;
            let mut c = self.connection()?;
            let result = self.oldest_event.key(key("w", k)).arg(millis(window).max(1)).invoke_async(&mut c).await;
            self.outcome(result)
        })
    }

    fn set_add<'a>(&'a self, k: &'a str, member: &'a str, cap: usize) -> StoreFuture<'a, SetAdd> {
        Box::pin(async move {
            check_key(k)?;
            let mut c = self.connection()?;
            let result: redis::RedisResult<i64> = self.set_add.key(key("s", k)).arg(member).arg(cap).invoke_async(&mut c).await;
            let outcome = match self.outcome(result)? {
                0 => SetAdd::Added,
                1 => SetAdd::Present,
                _ => SetAdd::Full,
            };
            if outcome == SetAdd::Added {
                self.publish("set", k).await;
            }
            Ok(outcome)
        })
    }

    fn count_member<'a>(&'a self, k: &'a str, member: &'a str, cap: usize, idle: Duration) -> StoreFuture<'a, SetAdd> {
        Box::pin(async move {
            check_key(k)?;
            let mut c = self.connection()?;
            let result: redis::RedisResult<i64> =
                self.count_member.key(key("s", k)).arg(member).arg(cap).arg(millis(idle).max(1)).invoke_async(&mut c).await;
            Ok(match self.outcome(result)? {
                0 => SetAdd::Added,
                1 => SetAdd::Present,
                _ => SetAdd::Full,
            })
        })
    }

    fn set_remove<'a>(&'a self, k: &'a str, member: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_key(k)?;
            let mut c = self.connection()?;
            let result: redis::RedisResult<i64> = c.srem(key("s", k), member).await;
            let removed = self.outcome(result)? > 0;
            if removed {
                self.publish("set", k).await;
            }
            Ok(removed)
        })
    }

    fn set_members<'a>(&'a self, k: &'a str) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            check_key(k)?;
            let mut c = self.connection()?;
            let result: redis::RedisResult<Vec<String>> = c.smembers(key("s", k)).await;
            let mut members = self.outcome(result)?;
            members.sort();
            Ok(members)
        })
    }

    fn ban(&self, record: BanRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            check_key(&record.subject)?;
            let mut c = self.connection()?;
            let ban_key = key("b", &record.subject);
            let result: redis::RedisResult<()> = redis::pipe()
                .atomic()
                .hset_multiple(
                    &ban_key,
                    &[
                        ("category", record.category.clone()),
                        ("since", record.since_ms.to_string()),
                        ("until", record.until_ms.to_string()),
                        ("reason", record.reason.clone()),
                    ],
                )
                .ignore()
                .cmd("PEXPIREAT")
                .arg(&ban_key)
                .arg(record.until_ms)
                .ignore()
                .zadd(format!("{PREFIX}bans"), &record.subject, record.until_ms)
                .ignore()
                .query_async(&mut c)
                .await;
            self.outcome(result)?;
            self.publish("banned", &record.subject).await;
            Ok(())
        })
    }

    fn unban<'a>(&'a self, subject: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            check_key(subject)?;
            let mut c = self.connection()?;
            let result: redis::RedisResult<(i64, i64)> =
                redis::pipe().atomic().del(key("b", subject)).zrem(format!("{PREFIX}bans"), subject).query_async(&mut c).await;
            let (deleted, _) = self.outcome(result)?;
            self.publish("unbanned", subject).await;
            Ok(deleted > 0)
        })
    }

    fn ban_lookup<'a>(&'a self, subject: &'a str) -> StoreFuture<'a, Option<BanRecord>> {
        Box::pin(async move {
            check_key(subject)?;
            let mut c = self.connection()?;
            let result: redis::RedisResult<BanFields> = redis::cmd("HMGET")
                .arg(key("b", subject))
                .arg("category")
                .arg("since")
                .arg("until")
                .arg("reason")
                .query_async(&mut c)
                .await;
            match self.outcome(result)? {
                (Some(category), Some(since_ms), Some(until_ms), reason) if until_ms > unix_ms() => {
                    Ok(Some(BanRecord { subject: subject.to_string(), category, since_ms, until_ms, reason: reason.unwrap_or_default() }))
                }
                _ => Ok(None),
            }
        })
    }

    fn bans(&self) -> StoreFuture<'_, Vec<BanRecord>> {
        Box::pin(async move {
            let mut c = self.connection()?;
            let result: redis::RedisResult<Vec<String>> =
                self.list_bans.key(format!("{PREFIX}bans")).arg(format!("{PREFIX}b:")).invoke_async(&mut c).await;
            let flat = self.outcome(result)?;
            Ok(flat
                .chunks_exact(5)
                .filter_map(|f| {
                    Some(BanRecord {
                        subject: f[0].clone(),
                        category: f[1].clone(),
                        since_ms: f[2].parse().ok()?,
                        until_ms: f[3].parse().ok()?,
                        reason: f[4].clone(),
                    })
                })
                .collect())
        })
    }

    fn purge_expired(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            // Redis expires keys itself; only the ban index needs trimming.
            let mut c = self.connection()?;
            let result: redis::RedisResult<u64> = c.zrembyscore(format!("{PREFIX}bans"), "-inf", unix_ms()).await;
            self.outcome(result)
        })
    }

    fn dump(&self) -> StoreFuture<'_, super::Dump> {
        Box::pin(async move {
            let bans = self.bans().await?;
            let mut c = self.connection()?;
            let mut dump = super::Dump { bans, ..super::Dump::default() };
            let now = unix_ms();
            for pattern in [format!("{PREFIX}k:*"), format!("{PREFIX}s:*")] {
                let keys: Vec<String> = {
                    let result: redis::RedisResult<redis::AsyncIter<'_, String>> = c.scan_match(&pattern).await;
                    let mut iter = self.outcome(result)?;
                    let mut keys = Vec::new();
                    while let Some(key) = iter.next_item().await {
                        keys.push(self.outcome(key)?);
                    }
                    keys
                };
                for full in keys {
                    let name = full[PREFIX.len() + 2..].to_string();
                    if pattern.ends_with("k:*") {
                        let result: redis::RedisResult<(Option<Vec<u8>>, i64)> =
                            redis::pipe().get(&full).pttl(&full).query_async(&mut c).await;
                        if let (Some(value), ttl) = self.outcome(result)? {
                            let expires = u64::try_from(ttl).ok().map(|ms| now + ms);
                            dump.values.push((name, value, expires));
                        }
                    } else {
                        let result: redis::RedisResult<Vec<String>> = c.smembers(&full).await;
                        let mut members = self.outcome(result)?;
                        members.sort();
                        dump.sets.push((name, members));
                    }
                }
            }
            dump.values.sort_by(|a, b| a.0.cmp(&b.0));
            dump.sets.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(dump)
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn shared(&self) -> bool {
        true
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

mod follow;
use follow::{decode_change, follow_sentinel, listen, manager};
#[cfg(test)]
pub(crate) mod tests;
