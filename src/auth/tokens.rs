//! Edge-issued tokens (DESIGN §2, "credential caching as an MRA edge does"):
//! `POST /portcullis/token` with valid credentials returns an access token and a refresh
//! token; the access token authenticates requests for `refresh_interval`; before it expires
//! the client trades the refresh token for a new pair (`POST /portcullis/token/refresh`) or
//! must re-authenticate. Tokens live in the state store — hashed (SHA-256), never in clear —
//! so they survive restarts and are shared by a cluster. Expired records are purged every
//! `cleanup_interval`; every token of a user can be revoked at once.
//!
//! A token checked once is remembered in memory for at most [`TOKEN_CACHE_TTL`] (never past its
//! own expiry), so its requests make no store call — with Redis, no network round trip. A
//! revocation or refresh removes it here at once and, through the store's change
//! notifications, on every other peer; the TTL bounds a notification that got lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::cluster::{SetAdd, StateStore, StoreError};
use crate::config::TokenSettings;

/// Prefix of access tokens (tells them from JWTs at a glance).
pub const ACCESS_PREFIX: &str = "pca_";
/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "pcr_";
/// Most live token pairs per user; the oldest records are pruned beyond it.
pub const MAX_TOKENS_PER_USER: usize = 1000;
/// Longest a checked access token is trusted from memory.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most access tokens remembered (the memory is emptied when full).
pub const MAX_CACHED_TOKENS: usize = 100_000;
/// Store-key prefix of access-token records (their change notifications invalidate the cache).
pub const ACCESS_KEY_PREFIX: &str = "token:access:";

/// A freshly issued pair.
#[derive(Debug, Clone, Serialize)]
pub struct Issued {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
}

#[derive(Serialize, Deserialize)]
struct Record {
    user: String,
    /// Hash of the other token of the pair (refresh ↔ access), to revoke both.
    pair: String,
    /// Unix ms when the pair expires (0 in records written before it was kept).
    #[serde(default)]
    expires_ms: u64,
}

/// Access-token hash → (user, trusted until).
/// Live tokens by their hash: the user (shared, so a cached check allocates nothing) and until
/// when the entry is trusted.
type TokenCache = HashMap<String, (std::sync::Arc<str>, Instant)>;

/// Issues, checks, refreshes and revokes edge tokens.
#[derive(Clone)]
pub struct TokenService {
    settings: TokenSettings,
    store: Arc<dyn StateStore>,
    cache: Arc<Mutex<TokenCache>>,
    cache_ttl: Duration,
}

fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    // A failing system RNG would also break TLS; an all-zero token would be refused on use
    // by being guessable, so fail closed below instead.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return String::new();
    }
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn hash(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn access_key(hash: &str) -> String {
    format!("{ACCESS_KEY_PREFIX}{hash}")
}

fn refresh_key(hash: &str) -> String {
    format!("token:refresh:{hash}")
}

fn user_key(user: &str) -> String {
    format!("tokens:user:{user}")
}

impl TokenService {
    /// Tokens kept in `store`.
    pub fn new(settings: TokenSettings, store: Arc<dyn StateStore>) -> TokenService {
        Self::with_cache_ttl(settings, store, TOKEN_CACHE_TTL)
    }

    /// Tokens kept in `store`, trusted from memory for `cache_ttl` (zero: always ask the store).
    pub fn with_cache_ttl(settings: TokenSettings, store: Arc<dyn StateStore>, cache_ttl: Duration) -> TokenService {
        TokenService { settings, store, cache: Arc::default(), cache_ttl }
    }

    /// Forgets the cached token whose store key is `key` (it changed somewhere).
    pub fn forget_key(&self, key: &str) {
        if let Some(hash) = key.strip_prefix(ACCESS_KEY_PREFIX) {
            self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(hash);
        }
    }

    /// Forgets every cached token (change notifications may have been missed).
    pub fn forget_all(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Issues a new pair for `user`.
    pub async fn issue(&self, user: &str) -> Result<Issued, StoreError> {
        let access = random_token(ACCESS_PREFIX);
        let refresh = random_token(REFRESH_PREFIX);
        if access.is_empty() || refresh.is_empty() {
            return Err(StoreError::Backend("no randomness for tokens".into()));
        }
        let (access_hash, refresh_hash) = (hash(&access), hash(&refresh));
        let ttl = Some(self.settings.refresh_interval);
        let expires_ms =
            crate::clock::unix_ms().saturating_add(u64::try_from(self.settings.refresh_interval.as_millis()).unwrap_or(u64::MAX));
        let record =
            |pair: &str| serde_json::to_vec(&Record { user: user.to_string(), pair: pair.to_string(), expires_ms }).unwrap_or_default();
        self.store.set(&access_key(&access_hash), &record(&refresh_hash), ttl).await?;
        self.store.set(&refresh_key(&refresh_hash), &record(&access_hash), ttl).await?;
        if self.store.set_add(&user_key(user), &access_hash, MAX_TOKENS_PER_USER).await? == SetAdd::Full {
            self.prune_user(user).await?;
            self.store.set_add(&user_key(user), &access_hash, MAX_TOKENS_PER_USER).await?;
        }
        Ok(Issued {
            access_token: access,
            token_type: "Bearer",
            expires_in: self.settings.refresh_interval.as_secs(),
            refresh_token: refresh,
        })
    }

    /// The user of this access token when it is held in memory as live.
    pub fn cached_user(&self, access: &str) -> Option<std::sync::Arc<str>> {
        if !access.starts_with(ACCESS_PREFIX) || access.len() > 128 {
            return None;
        }
        let hashed = hash(access); // before the lock: the lock guards only the lookup
        let now = Instant::now();
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (user, until) = cache.get(&hashed)?;
        (*until > now).then(|| user.clone())
    }

    /// The user of a live access token.
    pub async fn validate(&self, access: &str) -> Option<String> {
        if !access.starts_with(ACCESS_PREFIX) || access.len() > 128 {
            return None;
        }
        let hashed = hash(access);
        let now = Instant::now();
        if let Some((user, until)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&hashed)
            && *until > now
        {
            return Some(user.to_string());
        }
        let bytes = self.store.get(&access_key(&hashed)).await.ok()??;
        let record = serde_json::from_slice::<Record>(&bytes).ok()?;
        let left = Duration::from_millis(record.expires_ms.saturating_sub(crate::clock::unix_ms()));
        let trust = self.cache_ttl.min(left);
        if !trust.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= MAX_CACHED_TOKENS {
                cache.clear();
            }
            cache.insert(hashed, (std::sync::Arc::from(record.user.as_str()), now + trust));
        }
        Some(record.user)
    }

    /// Trades a live refresh token for a new pair; the old pair stops working.
    pub async fn refresh(&self, refresh: &str) -> Result<Option<(String, Issued)>, StoreError> {
        if !refresh.starts_with(REFRESH_PREFIX) || refresh.len() > 128 {
            return Ok(None);
        }
        let refresh_hash = hash(refresh);
        let Some(bytes) = self.store.get(&refresh_key(&refresh_hash)).await? else { return Ok(None) };
        let Ok(record) = serde_json::from_slice::<Record>(&bytes) else { return Ok(None) };
        // One use only: delete first, so two concurrent refreshes cannot both succeed.
        if !self.store.delete(&refresh_key(&refresh_hash)).await? {
            return Ok(None);
        }
        self.forget_key(&access_key(&record.pair));
        self.store.delete(&access_key(&record.pair)).await?;
        self.store.set_remove(&user_key(&record.user), &record.pair).await?;
        let issued = self.issue(&record.user).await?;
        Ok(Some((record.user, issued)))
    }

    /// Revokes one pair.
    pub async fn revoke_pair(&self, user: &str, issued: &Issued) -> Result<(), StoreError> {
        let access_hash = hash(&issued.access_token);
        self.forget_key(&access_key(&access_hash));
        self.store.delete(&access_key(&access_hash)).await?;
        self.store.delete(&refresh_key(&hash(&issued.refresh_token))).await?;
        self.store.set_remove(&user_key(user), &access_hash).await?;
        Ok(())
    }

    /// Revokes every token of `user`; returns how many pairs were live.
    pub async fn revoke_user(&self, user: &str) -> Result<usize, StoreError> {
        let mut revoked = 0;
        for access_hash in self.store.set_members(&user_key(user)).await? {
            self.forget_key(&access_key(&access_hash));
            if let Some(bytes) = self.store.get(&access_key(&access_hash)).await? {
                if let Ok(record) = serde_json::from_slice::<Record>(&bytes) {
                    self.store.delete(&refresh_key(&record.pair)).await?;
                }
                if self.store.delete(&access_key(&access_hash)).await? {
                    revoked += 1;
                }
            }
            self.store.set_remove(&user_key(user), &access_hash).await?;
        }
        Ok(revoked)
    }

    /// Forgets set members whose token is gone (expired or revoked).
    async fn prune_user(&self, user: &str) -> Result<(), StoreError> {
        for access_hash in self.store.set_members(&user_key(user)).await? {
            if self.store.get(&access_key(&access_hash)).await?.is_none() {
                self.store.set_remove(&user_key(user), &access_hash).await?;
            }
        }
        Ok(())
    }

    /// Purges expired records now (the embedded store; Redis expires keys itself).
    pub async fn cleanup(&self) -> Result<u64, StoreError> {
        self.store.purge_expired().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::cluster::embedded::EmbeddedStore;

    fn service(dir: &std::path::Path) -> (Arc<AtomicU64>, TokenService) {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let reader = now.clone();
        let store: Arc<dyn StateStore> =
            Arc::new(EmbeddedStore::open_with_clock(dir, Arc::new(move || reader.load(Ordering::SeqCst))).unwrap());
        let settings = TokenSettings { refresh_interval: Duration::from_secs(480 * 60), cleanup_interval: Duration::from_secs(720 * 60) };
        (now, TokenService::with_cache_ttl(settings, store, Duration::ZERO))
    }

    #[tokio::test]
    async fn issued_tokens_authenticate_until_they_expire_and_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let (clock, tokens) = service(dir.path());
        let issued = tokens.issue("agent1").await.unwrap();
        assert!(issued.access_token.starts_with(ACCESS_PREFIX) && issued.refresh_token.starts_with(REFRESH_PREFIX));
        assert_eq!(issued.expires_in, 480 * 60);
        assert_eq!(tokens.validate(&issued.access_token).await.as_deref(), Some("agent1"));
        assert_eq!(tokens.validate(&issued.refresh_token).await, None, "a refresh token is not an access token");
        assert_eq!(tokens.validate("pca_forged").await, None);
        clock.fetch_add(480 * 60 * 1000 - 1, Ordering::SeqCst);
        assert!(tokens.validate(&issued.access_token).await.is_some());
        clock.fetch_add(1, Ordering::SeqCst);
        assert_eq!(tokens.validate(&issued.access_token).await, None, "expired after refresh_interval");
        assert_eq!(tokens.cleanup().await.unwrap(), 2, "access + refresh records purged");
    }

    #[tokio::test]
    async fn refresh_rotates_the_pair_once() {
        let dir = tempfile::tempdir().unwrap();
        let (clock, tokens) = service(dir.path());
        let first = tokens.issue("agent1").await.unwrap();
        clock.fetch_add(400 * 60 * 1000, Ordering::SeqCst);
        let (user, second) = tokens.refresh(&first.refresh_token).await.unwrap().expect("refresh before expiry");
        assert_eq!(user, "agent1");
        assert_eq!(tokens.validate(&first.access_token).await, None, "the old access token stops working");
        assert_eq!(tokens.validate(&second.access_token).await.as_deref(), Some("agent1"));
        assert!(tokens.refresh(&first.refresh_token).await.unwrap().is_none(), "a refresh token works once");
        clock.fetch_add(480 * 60 * 1000, Ordering::SeqCst);
        assert!(tokens.refresh(&second.refresh_token).await.unwrap().is_none(), "expired: re-authenticate");
    }

    #[tokio::test]
    async fn revocation_ends_every_token_of_a_user() {
        let dir = tempfile::tempdir().unwrap();
        let (_clock, tokens) = service(dir.path());
        let a = tokens.issue("agent1").await.unwrap();
        let b = tokens.issue("agent1").await.unwrap();
        let other = tokens.issue("agent2").await.unwrap();
        assert_eq!(tokens.revoke_user("agent1").await.unwrap(), 2);
        assert_eq!(tokens.validate(&a.access_token).await, None);
        assert_eq!(tokens.validate(&b.access_token).await, None);
        assert!(tokens.refresh(&a.refresh_token).await.unwrap().is_none());
        assert_eq!(tokens.validate(&other.access_token).await.as_deref(), Some("agent2"));
    }

    #[tokio::test]
    async fn tokens_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let issued = {
            let (_clock, tokens) = service(dir.path());
            tokens.issue("agent1").await.unwrap()
        };
        let (_clock, tokens) = service(dir.path());
        assert_eq!(tokens.validate(&issued.access_token).await.as_deref(), Some("agent1"));
    }

    #[tokio::test]
    async fn checked_tokens_are_served_from_memory_until_a_change_notification() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let settings = TokenSettings { refresh_interval: Duration::from_secs(3600), cleanup_interval: Duration::from_secs(3600) };
        let tokens = TokenService::new(settings, store.clone());
        let issued = tokens.issue("alice").await.unwrap();
        assert_eq!(tokens.validate(&issued.access_token).await.as_deref(), Some("alice"));
        // Another peer revokes it in the shared store: this peer trusts its memory until the
        // change notification arrives…
        let key = access_key(&hash(&issued.access_token));
        assert!(store.delete(&key).await.unwrap());
        assert_eq!(tokens.validate(&issued.access_token).await.as_deref(), Some("alice"), "served from memory");
        tokens.forget_key(&key);
        assert_eq!(tokens.validate(&issued.access_token).await, None, "…and refuses it once notified");
        // A revocation on this peer takes effect here at once.
        let second = tokens.issue("bob").await.unwrap();
        assert!(tokens.validate(&second.access_token).await.is_some());
        assert_eq!(tokens.revoke_user("bob").await.unwrap(), 1);
        assert_eq!(tokens.validate(&second.access_token).await, None);
    }
}
