//! HTTP Basic at the edge: decode, cache lookup (HMAC key), valid-user list, rate control,
//! then one validation per credential (single flight) against `validate_url` (2xx valid,
//! 401/403 invalid, anything else or a timeout = unavailable, never valid) or a local
//! argon2 `users_file`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use http::{HeaderMap, HeaderValue};

use super::cache::{CredentialCache, Digest};
use super::rate::{RateControl, RateDecision};
use crate::cluster::StateStore;
use crate::config::BasicSettings;
use crate::config::users::load_users_file;
use crate::net::fetch::Fetcher;

/// Longest `Authorization` value considered (longer ones are refused unread).
pub const MAX_CREDENTIAL_BYTES: usize = 4096;
/// Longest user name accepted.
pub const MAX_USER_BYTES: usize = 256;
/// Most names kept from a valid-user list.
pub const MAX_LISTED_USERS: usize = 1_000_000;
/// Deadline of one validation or user-list call.
pub const VALIDATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The result of authenticating one Basic credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allowed(Arc<str>),
    Refused { user: Option<Arc<str>>, reason: &'static str },
    Limited { retry_after_secs: u64 },
    Unavailable,
}

/// Whether an `Authorization` value uses the Basic scheme.
pub fn is_basic(value: &[u8]) -> bool {
    value.len() > 6 && value[..6].eq_ignore_ascii_case(b"basic ")
}

/// `user:password` from a Basic `Authorization` value.
pub fn decode(value: &[u8]) -> Option<(String, String)> {
    if !is_basic(value) {
        return None;
    }
    let encoded = value[6..].trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    if user.is_empty() || user.len() > MAX_USER_BYTES || user.chars().any(char::is_control) {
        return None;
    }
    Some((user.to_string(), password.to_string()))
}

/// Basic authentication state (caches survive reloads with unchanged settings).
pub struct BasicAuth {
    settings: BasicSettings,
    cache: CredentialCache,
    /// Valid user names, once a list has been fetched.
    users: RwLock<Option<Arc<HashSet<String>>>>,
    /// `users_file`: user → argon2 PHC hash.
    local_users: Option<HashMap<String, String>>,
    fetcher: Fetcher,
    rate: Option<RateControl>,
    /// With a store shared by a cluster: validated credentials are remembered there too, so
    /// a credential is validated once for the whole cluster.
    shared: Option<SharedCredentials>,
}

/// The cluster's credential cache: entries `auth:cred:<HMAC>` → `user\t<expiry ms>` under an
/// HMAC key every peer reads from the store (created once, atomically, by the first peer).
struct SharedCredentials {
    store: Arc<dyn StateStore>,
    key: tokio::sync::OnceCell<Option<aws_lc_rs::hmac::Key>>,
}

/// Store set holding the cluster's credential HMAC key (one member).
const SHARED_HMAC_KEY: &str = "auth:cred-key";

impl SharedCredentials {
    async fn key(&self) -> Option<&aws_lc_rs::hmac::Key> {
        self.key
            .get_or_init(|| async {
                let mut secret = [0u8; 32];
                aws_lc_rs::rand::fill(&mut secret).ok()?;
                let candidate: String = secret.iter().map(|b| format!("{b:02x}")).collect();
                self.store.set_add(SHARED_HMAC_KEY, &candidate, 1).await.ok()?;
                let agreed = self.store.set_members(SHARED_HMAC_KEY).await.ok()?.into_iter().next()?;
                let bytes: Vec<u8> =
                    (0..agreed.len() / 2).filter_map(|i| u8::from_str_radix(agreed.get(2 * i..2 * i + 2)?, 16).ok()).collect();
                (bytes.len() == 32).then(|| aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &bytes))
            })
            .await
            .as_ref()
    }

    async fn entry(&self, credential: &[u8]) -> Option<String> {
        let key = self.key().await?;
        let tag = aws_lc_rs::hmac::sign(key, credential);
        Some(format!("auth:cred:{}", tag.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()))
    }

    /// The user of a credential another peer validated, and how long it stays valid.
    async fn lookup(&self, credential: &[u8]) -> Option<(Arc<str>, Duration)> {
        let bytes = self.store.get(&self.entry(credential).await?).await.ok()??;
        let text = String::from_utf8(bytes).ok()?;
        let (user, expires) = text.rsplit_once('\t')?;
        let left = expires.parse::<u64>().ok()?.saturating_sub(crate::clock::unix_ms());
        (left > 0).then(|| (Arc::from(user), Duration::from_millis(left)))
    }

    async fn insert(&self, credential: &[u8], user: &str, ttl: Duration) {
        let Some(entry) = self.entry(credential).await else { return };
        let expires = crate::clock::unix_ms_after(ttl);
        let _ = self.store.set(&entry, format!("{user}\t{expires}").as_bytes(), Some(ttl)).await;
    }
}

impl BasicAuth {
    /// Builds Basic auth; `users_file` was checked by the configuration. With `shared` (a
    /// cluster's store), validated credentials are shared with the other peers.
    /// The cache is keyed like `keys` (the authenticator's session keys): a cached request's
    /// one digest serves both.
    pub fn new(
        settings: BasicSettings,
        rate: Option<RateControl>,
        shared: Option<Arc<dyn StateStore>>,
        keys: &CredentialCache,
    ) -> BasicAuth {
        let local_users = settings.users_file.as_ref().map(|path| load_users_file(path).unwrap_or_default());
        BasicAuth {
            cache: keys.sharing_key(settings.credential_ttl),
            settings,
            users: RwLock::new(None),
            local_users,
            fetcher: Fetcher::new(VALIDATION_TIMEOUT),
            rate,
            shared: shared.map(|store| SharedCredentials { store, key: tokio::sync::OnceCell::new() }),
        }
    }

    /// Live cached credentials.
    pub fn cached_sessions(&self) -> usize {
        self.cache.live_entries()
    }

    /// The user of an `Authorization: Basic …` value of `length` bytes whose digest (under
    /// the shared key) is `digest`, when it is cached as valid.
    pub fn cached_user(&self, length: usize, digest: &Digest) -> Option<Arc<str>> {
        (length <= MAX_CREDENTIAL_BYTES).then(|| self.cache.lookup(digest))?
    }

    /// Authenticates one `Authorization: Basic …` value.
    pub async fn authenticate(&self, value: &[u8]) -> Outcome {
        if value.len() > MAX_CREDENTIAL_BYTES {
            return Outcome::Refused { user: None, reason: "credential too long" };
        }
        let digest = self.cache.digest(value);
        if let Some(user) = self.cache.lookup(&digest) {
            return Outcome::Allowed(user);
        }
        let Some((user, password)) = decode(value) else {
            return Outcome::Refused { user: None, reason: "malformed Basic credential" };
        };
        let user: Arc<str> = Arc::from(user);
        let listed = self.users.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(list) = listed
            && !list.contains(&*user)
        {
            return Outcome::Refused { user: Some(user), reason: "unknown user" };
        }
        self.cache
            .single_flight(digest, || async {
                // A flight that started just after another finished finds the result cached.
                if let Some(user) = self.cache.lookup(&digest) {
                    return Outcome::Allowed(user);
                }
                // Validated on another peer: a cache hit for the cluster (no validation, not
                // counted by rate control), until the original validation's expiry.
                if let Some(shared) = &self.shared
                    && let Some((known, left)) = shared.lookup(value).await
                    && *known == *user
                {
                    self.cache.insert_for(digest, known.clone(), left);
                    return Outcome::Allowed(known);
                }
                if let Some(rate) = &self.rate
                    && let RateDecision::Limited { retry_after_secs } = rate.check(&user).await
                {
                    return Outcome::Limited { retry_after_secs };
                }
                match self.validate(&user, password, value).await {
                    Validation::Valid => {
                        self.cache.insert(digest, user.clone());
                        if let Some(shared) = &self.shared {
                            shared.insert(value, &user, self.settings.credential_ttl).await;
                        }
                        Outcome::Allowed(user)
                    }
                    Validation::Invalid => Outcome::Refused { user: Some(user), reason: "invalid credentials" },
                    Validation::Unavailable => Outcome::Unavailable,
                }
            })
            .await
    }

    async fn validate(&self, user: &str, password: String, header: &[u8]) -> Validation {
        if let Some(local) = &self.local_users {
            return verify_local(local.get(user).cloned(), password).await;
        }
        let Some(template) = &self.settings.validate_url else { return Validation::Unavailable };
        let url = template.replace("{user}", &crate::net::percent::encode(user));
        let mut headers = HeaderMap::new();
        let Ok(value) = HeaderValue::from_bytes(header) else { return Validation::Invalid };
        headers.insert(http::header::AUTHORIZATION, value);
        match self.fetcher.get(&url, headers).await {
            Ok(answer) if answer.status.is_success() => Validation::Valid,
            Ok(answer) if answer.status == 401 || answer.status == 403 => Validation::Invalid,
            Ok(answer) => {
                tracing::warn!("credential validation at {template} answered {}", answer.status);
                Validation::Unavailable
            }
            Err(error) => {
                tracing::warn!("credential validation at {template} failed: {error}");
                Validation::Unavailable
            }
        }
    }

    /// Replaces the valid-user list from `url`; a failed fetch keeps the previous list.
    /// Returns the list document that was applied (for the other peers of a cluster).
    pub async fn refresh_users(&self, url: &str) -> Option<Vec<u8>> {
        match self.fetcher.get(url, HeaderMap::new()).await {
            Ok(answer) if answer.status.is_success() => self.apply_users(&answer.body).then(|| answer.body.to_vec()),
            Ok(answer) => {
                tracing::warn!("valid-user list {url} answered {}; keeping the previous list", answer.status);
                None
            }
            Err(error) => {
                tracing::warn!("valid-user list {url} failed: {error}; keeping the previous list");
                None
            }
        }
    }

    /// Replaces the valid-user list with `body` (fetched here, or by the cluster's primary);
    /// false (list kept) when it is not a list.
    pub fn apply_users(&self, body: &[u8]) -> bool {
        match parse_user_list(body) {
            Some(list) => {
                tracing::info!("valid-user list: {} names", list.len());
                *self.users.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(list));
                true
            }
            None => {
                tracing::warn!("valid-user list is not a JSON array of names or a text list; keeping the previous list");
                false
            }
        }
    }
}

enum Validation {
    Valid,
    Invalid,
    Unavailable,
}

/// A JSON array of names, a JSON object with a `users` array, or one name per line.
pub fn parse_user_list(body: &[u8]) -> Option<HashSet<String>> {
    let names: Vec<String> = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Array(items)) => items.into_iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        Ok(serde_json::Value::Object(mut map)) => match map.remove("users") {
            Some(serde_json::Value::Array(items)) => items.into_iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            _ => return None,
        },
        Ok(_) => return None,
        Err(_) => std::str::from_utf8(body)
            .ok()?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
    };
    Some(names.into_iter().filter(|n| !n.is_empty() && n.len() <= MAX_USER_BYTES).take(MAX_LISTED_USERS).collect())
}

/// A fixed hash verified for unknown users, so timing does not reveal which names exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$5wdzb3sGzJ0xbjz1z0Fpiz0u4QWd8Kx0Tq1CvQbmk1E";

async fn verify_local(hash: Option<String>, password: String) -> Validation {
    let known = hash.is_some();
    let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_string());
    let verified = tokio::task::spawn_blocking(move || {
        use argon2::PasswordVerifier;
        argon2::PasswordHash::new(&hash).is_ok_and(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .unwrap_or(false);
    if known && verified { Validation::Valid } else { Validation::Invalid }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_values_decode_and_malformed_ones_do_not() {
        assert_eq!(decode(b"Basic YWdlbnQxOnMzY3JldA=="), Some(("agent1".into(), "s3cret".into())));
        assert_eq!(decode(b"basic YWdlbnQxOnMzY3JldA=="), Some(("agent1".into(), "s3cret".into())));
        assert_eq!(decode(b"Basic YWdlbnQxOnA6dw=="), Some(("agent1".into(), "p:w".into())), "colons in passwords");
        assert_eq!(decode(b"Basic !!!"), None);
        assert_eq!(decode(b"Basic bm9jb2xvbg=="), None, "no colon");
        assert_eq!(decode(b"Basic OnB3"), None, "empty user");
        assert_eq!(decode(b"Bearer abc"), None);
    }

    #[test]
    fn user_lists_parse_in_three_shapes() {
        let expected: HashSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(parse_user_list(br#"["a","b",""]"#), Some(expected.clone()));
        assert_eq!(parse_user_list(br#"{"users":["a","b"]}"#), Some(expected.clone()));
        assert_eq!(parse_user_list(b"a\n# comment\nb\n"), Some(expected));
        assert_eq!(parse_user_list(br#"{"other":1}"#), None);
    }

    #[tokio::test]
    async fn local_users_verify_argon2_hashes() {
        use argon2::PasswordHasher;
        let salt = argon2::password_hash::SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap();
        let hash = argon2::Argon2::default().hash_password(b"pw", &salt).unwrap().to_string();
        assert!(matches!(verify_local(Some(hash.clone()), "pw".into()).await, Validation::Valid));
        assert!(matches!(verify_local(Some(hash), "wrong".into()).await, Validation::Invalid));
        assert!(matches!(verify_local(None, "pw".into()).await, Validation::Invalid));
    }
}
