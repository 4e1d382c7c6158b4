//! The credential cache: validated credentials keyed by HMAC-SHA256 under a per-process
//! random key (never the plain password), each with its own expiry, plus single-flight
//! validation so concurrent first requests with one credential cause exactly one
//! validation call.
//!
//! Invariants: entries expire `ttl` after validation (a changed password takes effect
//! then); at most [`MAX_CACHED_CREDENTIALS`] entries; the HMAC key never leaves memory.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

/// Most credentials cached at once; a full cache drops its expired entries, then replaces an
/// arbitrary live one, so the credentials in use keep being cached (an entry replaced early
/// costs its user one more validation, never a validation per request).
pub const MAX_CACHED_CREDENTIALS: usize = 100_000;
/// A full cache drops its expired entries at most this often (a scan of the whole map per
/// insert would make every new credential cost O(entries) once the cache is full).
pub const FULL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// HMAC of one credential.
pub type Digest = [u8; 32];

struct Entry {
    user: Arc<str>,
    expires: Instant,
}

/// Validated credentials and validations in flight.
pub struct CredentialCache {
    key: aws_lc_rs::hmac::Key,
    ttl: Duration,
    entries: RwLock<HashMap<Digest, Entry>>,
    /// When a full cache last dropped its expired entries.
    last_sweep: Mutex<Option<Instant>>,
    in_flight: Mutex<HashMap<Digest, Arc<dyn std::any::Any + Send + Sync>>>,
}

impl CredentialCache {
    /// An empty cache with a fresh random HMAC key.
    pub fn new(ttl: Duration) -> CredentialCache {
        let mut secret = [0u8; 32];
        // The system RNG failing means the process cannot do TLS either; a zero key would
        // still keep passwords out of memory dumps as plain text.
        let _ = aws_lc_rs::rand::fill(&mut secret);
        CredentialCache {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
            ttl,
            entries: RwLock::new(HashMap::new()),
            last_sweep: Mutex::new(None),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// An empty cache keyed like `self` (the same digest for the same credential), so one
    /// HMAC can serve two tables (the Basic cache and the session table).
    pub fn sharing_key(&self, ttl: Duration) -> CredentialCache {
        CredentialCache {
            key: self.key.clone(),
            ttl,
            entries: RwLock::new(HashMap::new()),
            last_sweep: Mutex::new(None),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The cache key of a credential.
    pub fn digest(&self, credential: &[u8]) -> Digest {
        let tag = aws_lc_rs::hmac::sign(&self.key, credential);
        let mut out = [0u8; 32];
        out.copy_from_slice(&tag.as_ref()[..32]);
        out
    }

    /// The user of a cached, unexpired credential.
    pub fn lookup(&self, digest: &Digest) -> Option<Arc<str>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(digest)?;
        (entry.expires > Instant::now()).then(|| entry.user.clone())
    }

    /// Caches a validated credential for `ttl`.
    pub fn insert(&self, digest: Digest, user: Arc<str>) {
        self.insert_for(digest, user, self.ttl);
    }

    /// Caches a validated credential for `ttl` (capped by the cache's own TTL).
    pub fn insert_for(&self, digest: Digest, user: Arc<str>, ttl: Duration) {
        let now = Instant::now();
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_CACHED_CREDENTIALS {
            let mut last_sweep = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if last_sweep.is_none_or(|at| now.duration_since(at) >= FULL_SWEEP_INTERVAL) {
                entries.retain(|_, e| e.expires > now);
                *last_sweep = Some(now);
            }
            // Still full of live entries: one makes room (the map's order is random per
            // process, so no client can choose which).
            if entries.len() >= MAX_CACHED_CREDENTIALS
                && let Some(victim) = entries.keys().next().copied()
            {
                entries.remove(&victim);
            }
        }
        entries.insert(digest, Entry { user, expires: now + ttl.min(self.ttl) });
    }

    /// Unexpired entries (sessions held by cached credentials).
    pub fn live_entries(&self) -> usize {
        let now = Instant::now();
        self.entries.read().unwrap_or_else(|p| p.into_inner()).values().filter(|e| e.expires > now).count()
    }

    /// Runs `validate` once for all concurrent callers with the same `digest`; every caller
    /// gets the same result.
    pub async fn single_flight<T, F, Fut>(&self, digest: Digest, validate: F) -> T
    where
        T: Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let cell: Arc<OnceCell<T>> = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            let any = in_flight.entry(digest).or_insert_with(|| Arc::new(OnceCell::<T>::new())).clone();
            match any.downcast::<OnceCell<T>>() {
                Ok(cell) => cell,
                // One cache only ever stores one result type; a mismatch cannot happen.
                Err(_) => Arc::new(OnceCell::new()),
            }
        };
        let result = cell.get_or_init(validate).await.clone();
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if in_flight.get(&digest).is_some_and(|c| std::ptr::addr_eq(Arc::as_ptr(c), Arc::as_ptr(&cell))) {
            in_flight.remove(&digest);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl() {
        let cache = CredentialCache::new(Duration::from_secs(900));
        let d = cache.digest(b"Basic YWdlbnQ6cHc=");
        assert_ne!(d, cache.digest(b"Basic YWdlbnQ6cHc9"), "different credentials, different keys");
        cache.insert(d, Arc::from("agent"));
        assert_eq!(cache.lookup(&d).as_deref(), Some("agent"));
        tokio::time::advance(Duration::from_secs(899)).await;
        assert!(cache.lookup(&d).is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cache.lookup(&d), None);
        assert_eq!(cache.live_entries(), 0);
    }

    #[test]
    fn a_full_cache_of_live_entries_still_caches_the_newest_credential() {
        let cache = CredentialCache::new(Duration::from_secs(900));
        for i in 0..MAX_CACHED_CREDENTIALS {
            cache.insert(cache.digest(format!("user{i}:pw").as_bytes()), Arc::from("u"));
        }
        let newest = cache.digest(b"latecomer:pw");
        cache.insert(newest, Arc::from("latecomer"));
        assert_eq!(cache.lookup(&newest).as_deref(), Some("latecomer"), "cached, not validated on every request");
        assert_eq!(cache.entries.read().unwrap().len(), MAX_CACHED_CREDENTIALS, "still capped");
    }

    #[test]
    fn a_cache_sharing_a_key_gives_the_same_digest_and_keeps_its_own_entries() {
        let sessions = CredentialCache::new(Duration::ZERO);
        let basic = sessions.sharing_key(Duration::from_secs(60));
        let other = CredentialCache::new(Duration::ZERO);
        assert_eq!(sessions.digest(b"Basic dTpw"), basic.digest(b"Basic dTpw"), "one HMAC serves both tables");
        assert_ne!(other.digest(b"Basic dTpw"), basic.digest(b"Basic dTpw"), "another cache has its own key");
        basic.insert(basic.digest(b"Basic dTpw"), Arc::from("u"));
        assert!(sessions.lookup(&sessions.digest(b"Basic dTpw")).is_none(), "entries are not shared");
        assert_eq!(basic.lookup(&sessions.digest(b"Basic dTpw")).as_deref(), Some("u"));
    }

    #[test]
    fn digests_are_keyed_per_process() {
        let a = CredentialCache::new(Duration::from_secs(1));
        let b = CredentialCache::new(Duration::from_secs(1));
        assert_ne!(a.digest(b"same"), b.digest(b"same"), "the HMAC key is random per cache");
    }

    #[tokio::test]
    async fn concurrent_validations_of_one_credential_run_once() {
        let cache = Arc::new(CredentialCache::new(Duration::from_secs(60)));
        let calls = Arc::new(AtomicUsize::new(0));
        let digest = cache.digest(b"cred");
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (cache, calls) = (cache.clone(), calls.clone());
                tokio::spawn(async move {
                    cache
                        .single_flight(digest, || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            // A slow validation, so the other 199 arrive while it runs.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            true
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(cache.in_flight.lock().unwrap().is_empty(), "finished flights are forgotten");
    }
}
