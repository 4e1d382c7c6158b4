//! Edge authentication: every request to a service with `auth != none` is authenticated
//! here before anything is forwarded (DESIGN §2).
//!
//! - `basic`: HTTP Basic, validated once (upstream `validate_url`, or a local argon2
//!   `users_file`), then cached under an HMAC of the credential for `credential_ttl`;
//!   concurrent first requests with one credential share one validation (single flight);
//!   an optional valid-user list rejects unknown users without any upstream call.
//! - `rate`: authorization rate control — every authorization that is not a cache hit
//!   counts against the user in an exact sliding window kept in the state store.
//!
//! Threat model: an internet client guessing or stuffing credentials, or flooding the
//! validation endpoint. Plain passwords are never stored or logged; the cache key is an
//! HMAC under a per-process random key; validation calls are bounded per credential
//! (single flight) and per user (rate control); failures are reported to [`AuthEvents`]
//! (the shield counts them per source IP).

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;

use crate::cluster::StateStore;
use crate::config::{AuthMode, AuthSettings};

pub mod basic;
pub mod cache;
pub mod jwt;
pub mod rate;
pub mod sessions;
pub mod tokens;
pub mod websocket;

/// The outcome of authenticating one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated as `user`; `session` identifies the credential (an HMAC, for counts).
    Allow { user: Arc<str>, session: cache::Digest },
    /// Missing or wrong credentials: 401 with this `WWW-Authenticate` challenge.
    Challenge { challenge: Arc<str> },
    /// Too many authorizations for this user: 429 with `Retry-After` seconds.
    Limited { retry_after_secs: u64 },
    /// The validator could not answer: 503 (never "valid").
    Unavailable,
}

/// Receives authentication outcomes (the shield counts failures per source IP).
pub trait AuthEvents: Send + Sync + 'static {
    /// Credentials were presented (or required) and refused.
    fn auth_failed(&self, client: IpAddr, user: Option<&str>, reason: &'static str);
}

/// Whether an `Authorization` value uses the Bearer scheme.
pub fn is_bearer(value: &[u8]) -> bool {
    value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ")
}

/// Discards events (tests of pure parts).
pub struct NoEvents;

impl AuthEvents for NoEvents {
    fn auth_failed(&self, _client: IpAddr, _user: Option<&str>, _reason: &'static str) {}
}

/// Authenticates requests for every service of one configuration generation. Caches live
/// here; a reload with unchanged `[auth]` settings keeps the same instance (and its caches).
pub struct Authenticator {
    settings: AuthSettings,
    basic: Option<basic::BasicAuth>,
    jwt: Option<jwt::JwtAuth>,
    tokens: Option<tokens::TokenService>,
    rate: Option<rate::RateControl>,
    events: Arc<dyn AuthEvents>,
    realm_challenge: Arc<str>,
    bearer_challenge: Arc<str>,
    /// Keys session HMACs (never the credential itself).
    session_keys: cache::CredentialCache,
    /// When each source IP last authenticated successfully (for `websocket_ip_window`).
    recent_ips: std::sync::Mutex<std::collections::HashMap<IpAddr, tokio::time::Instant>>,
    store: Arc<dyn StateStore>,
    /// This peer is the cluster's primary (fetches shared documents for everyone).
    primary: Arc<std::sync::atomic::AtomicBool>,
}

/// Most source IPs remembered for `websocket_ip_window`.
pub const MAX_RECENT_IPS: usize = 100_000;

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("basic", &self.basic.is_some()).finish()
    }
}

impl Authenticator {
    /// Builds the authenticator for `settings`; background refreshes stop when it is dropped.
    ///
    /// With a shared store, the JWKS and the valid-user list are fetched by the cluster's
    /// primary (`primary` true on that peer) and published in the store; the other peers read
    /// them from there, and fetch themselves only when nothing is published (primary gone,
    /// store down).
    pub fn new(
        settings: &AuthSettings,
        store: Arc<dyn StateStore>,
        events: Arc<dyn AuthEvents>,
        primary: Arc<std::sync::atomic::AtomicBool>,
    ) -> Arc<Authenticator> {
        let rate = settings.rate_control.clone().map(|r| rate::RateControl::new(r, store.clone()));
        let shared = store.shared().then(|| store.clone());
        let session_keys = cache::CredentialCache::new(std::time::Duration::ZERO);
        let basic = settings.basic.as_ref().map(|b| basic::BasicAuth::new(b.clone(), rate.clone(), shared, &session_keys));
        let tokens = settings.tokens.clone().map(|t| tokens::TokenService::new(t, store.clone()));
        let realm = settings.basic.as_ref().map_or("portcullis", |b| b.realm.as_str()).replace('"', "");
        let jwt = settings.jwt.as_ref().map(|j| jwt::JwtAuth::new(j.clone(), &session_keys));
        let authenticator = Arc::new(Authenticator {
            settings: settings.clone(),
            basic,
            jwt,
            tokens,
            rate,
            events,
            realm_challenge: Arc::from(format!("Basic realm=\"{realm}\"")),
            bearer_challenge: Arc::from("Bearer realm=\"portcullis\""),
            session_keys,
            recent_ips: std::sync::Mutex::new(std::collections::HashMap::new()),
            store,
            primary,
        });
        let owner = Arc::downgrade(&authenticator);
        if let Some(b) = &settings.basic
            && let Some(url) = b.users_url.clone()
        {
            // The valid-user list: fetched now and every `users_refresh`.
            let (key, ttl) = (shared_key("users", &url), b.users_refresh * 3);
            spawn_periodic(owner.clone(), b.users_refresh, true, move |auth| {
                let (url, key) = (url.clone(), key.clone());
                async move {
                    if let Some(basic) = auth.basic() {
                        auth.shared_refresh(&key, ttl, || basic.refresh_users(&url), |body| basic.apply_users(body)).await;
                    }
                }
            });
        }
        if let Some(j) = settings.jwt.as_ref().filter(|j| j.jwks_url.is_some()) {
            // The JWKS: fetched now and every `jwks_refresh`.
            let (key, ttl) = (shared_key("jwks", j.jwks_url.as_deref().unwrap_or("")), j.jwks_refresh * 3);
            spawn_periodic(owner.clone(), j.jwks_refresh, true, move |auth| {
                let key = key.clone();
                async move {
                    if let Some(jwt) = auth.jwt() {
                        auth.shared_refresh(&key, ttl, || jwt.refresh_keys(), |body| jwt.apply_jwks(body)).await;
                    }
                }
            });
        }
        if let Some(t) = &settings.tokens {
            // Expired token records: purged every `cleanup_interval`.
            spawn_periodic(owner, t.cleanup_interval, false, |auth| async move {
                if let Some(tokens) = auth.tokens() {
                    match tokens.cleanup().await {
                        Ok(n) => tracing::info!("token cleanup: {n} expired records purged"),
                        Err(error) => tracing::warn!("token cleanup failed: {error}"),
                    }
                }
            });
        }
        authenticator
    }

    /// One periodic refresh of a document every peer needs (JWKS, user list): the primary
    /// (or a peer with a store of its own) fetches and publishes it under `key`; the others
    /// apply what is published, and fetch themselves only if nothing is.
    async fn shared_refresh<F, Fut, A>(&self, key: &str, ttl: std::time::Duration, fetch: F, apply: A)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Option<Vec<u8>>>,
        A: FnOnce(&[u8]) -> bool,
    {
        let shared = self.store.shared();
        if shared
            && !self.primary.load(std::sync::atomic::Ordering::Relaxed)
            && let Ok(Some(body)) = self.store.get(key).await
            && apply(&body)
        {
            return;
        }
        if let Some(body) = fetch().await
            && shared
            && let Err(error) = self.store.set(key, &body, Some(ttl)).await
        {
            tracing::warn!("cannot share {key} with the other peers: {error}");
        }
    }

    /// Remembers that `client` authenticated successfully now.
    pub fn note_success(&self, client: IpAddr) {
        let now = tokio::time::Instant::now();
        let mut recent = self.recent_ips.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= MAX_RECENT_IPS && !recent.contains_key(&client) {
            // Windows are minutes; anything older than an hour is of no use to anyone.
            recent.retain(|_, at| now.duration_since(*at) < std::time::Duration::from_secs(3600));
            if recent.len() >= MAX_RECENT_IPS {
                return;
            }
        }
        recent.insert(client, now);
    }

    /// Whether `client` authenticated successfully within `window`.
    pub fn authenticated_within(&self, client: IpAddr, window: std::time::Duration) -> bool {
        let recent = self.recent_ips.lock().unwrap_or_else(|p| p.into_inner());
        recent.get(&client).is_some_and(|at| at.elapsed() < window)
    }

    /// Reports a refusal decided outside the authenticator (malformed WebSocket credential).
    pub fn report_failure(&self, client: IpAddr, reason: &'static str) {
        self.events.auth_failed(client, None, reason);
    }

    /// The settings this instance was built for (reloads compare them).
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    pub(crate) fn basic(&self) -> Option<&basic::BasicAuth> {
        self.basic.as_ref()
    }

    /// Edge-issued tokens, when any authentication is configured.
    pub fn tokens(&self) -> Option<&tokens::TokenService> {
        self.tokens.as_ref()
    }

    /// JWT validation, when `[auth.jwt]` is configured.
    pub fn jwt(&self) -> Option<&jwt::JwtAuth> {
        self.jwt.as_ref()
    }

    fn challenge(&self, mode: AuthMode) -> Arc<str> {
        match mode {
            AuthMode::Jwt => self.bearer_challenge.clone(),
            _ => self.realm_challenge.clone(),
        }
    }

    /// Re-fetches the valid-user list and the JWKS keys now (`portcullis refresh`); a failed
    /// fetch keeps what was there.
    pub async fn refresh_now(&self) {
        if let (Some(basic), Some(url)) = (&self.basic, self.settings.basic.as_ref().and_then(|b| b.users_url.clone())) {
            let _ = basic.refresh_users(&url).await;
        }
        if let Some(jwt) = &self.jwt {
            let _ = jwt.refresh_keys().await;
        }
    }

    /// The session key of an `Authorization` value: the digest of a bearer's token (so the
    /// JWT cache's digest is the same one), of the whole value otherwise (the Basic cache's).
    fn session_key(&self, value: &[u8]) -> cache::Digest {
        match is_bearer(value) {
            true => self.session_keys.digest(value[7..].trim_ascii()),
            false => self.session_keys.digest(value),
        }
    }

    /// The session key of a request's credential (as [`Verdict::Allow`] would give it),
    /// without validating it: used in maintenance to let only existing sessions through.
    pub fn session_of(&self, headers: &HeaderMap) -> Option<cache::Digest> {
        headers.get(http::header::AUTHORIZATION).map(|value| self.session_key(value.as_bytes()))
    }

    /// The verdict for a credential already known valid (cached) for `mode`, without any
    /// validation work; `None` when it is not cached (then it is a guess until checked, and
    /// the shield admits it one check per source at a time).
    pub fn cached_verdict(&self, mode: AuthMode, headers: &HeaderMap) -> Option<Verdict> {
        let value = headers.get(http::header::AUTHORIZATION)?.as_bytes();
        let bearer = is_bearer(value).then(|| value[7..].trim_ascii());
        let user = match (bearer, &self.tokens) {
            (Some(token), Some(tokens)) if token.starts_with(tokens::ACCESS_PREFIX.as_bytes()) => {
                tokens.cached_user(std::str::from_utf8(token).ok()?)?
            }
            (Some(token), _) if matches!(mode, AuthMode::Jwt | AuthMode::BasicOrJwt) => {
                // One HMAC: the token cache is keyed like the session table.
                let session = self.session_key(value);
                let user = self.jwt.as_ref()?.cached_user(token.len(), &session)?;
                return Some(Verdict::Allow { user, session });
            }
            (None, _) if matches!(mode, AuthMode::Basic | AuthMode::BasicOrJwt) && basic::is_basic(value) => {
                // One HMAC: the Basic cache is keyed like the session table.
                let session = self.session_key(value);
                let user = self.basic.as_ref()?.cached_user(value.len(), &session)?;
                return Some(Verdict::Allow { user, session });
            }
            _ => return None,
        };
        Some(Verdict::Allow { user, session: self.session_key(value) })
    }

    /// Authenticates a request for a service using `mode`.
    pub async fn authenticate(&self, mode: AuthMode, headers: &HeaderMap, client: IpAddr) -> Verdict {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Verdict::Challenge { challenge: self.challenge(mode) };
        };
        let value = value.as_bytes();
        let basic_allowed = matches!(mode, AuthMode::Basic | AuthMode::BasicOrJwt);
        let jwt_allowed = matches!(mode, AuthMode::Jwt | AuthMode::BasicOrJwt);
        let bearer = is_bearer(value).then(|| value[7..].trim_ascii());
        if let (Some(token), Some(tokens)) = (bearer, &self.tokens)
            && token.starts_with(tokens::ACCESS_PREFIX.as_bytes())
        {
            return match tokens.validate(std::str::from_utf8(token).unwrap_or("")).await {
                Some(user) => Verdict::Allow { user: Arc::from(user), session: self.session_key(value) },
                None => {
                    self.events.auth_failed(client, None, "invalid or expired edge token");
                    Verdict::Challenge { challenge: self.bearer_challenge.clone() }
                }
            };
        }
        let verdict = match (&self.basic, &self.jwt) {
            (Some(basic), _) if basic_allowed && basic::is_basic(value) => basic.authenticate(value).await,
            (_, Some(jwt)) if jwt_allowed && is_bearer(value) => jwt.authenticate(value[7..].trim_ascii()).await,
            _ => basic::Outcome::Refused { user: None, reason: "unsupported credential" },
        };
        match verdict {
            basic::Outcome::Allowed(user) => Verdict::Allow { user, session: self.session_key(value) },
            basic::Outcome::Refused { user, reason } => {
                self.events.auth_failed(client, user.as_deref(), reason);
                Verdict::Challenge { challenge: self.challenge(mode) }
            }
            basic::Outcome::Limited { retry_after_secs } => Verdict::Limited { retry_after_secs },
            basic::Outcome::Unavailable => Verdict::Unavailable,
        }
    }
}

/// The store key a shared document (`kind`: jwks, users) from `url` is published under.
fn shared_key(kind: &str, url: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, url.as_bytes());
    let hex: String = digest.as_ref().iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("shared:{kind}:{hex}")
}

/// Runs `tick` every `every` (the first time at once when `now`) while `owner` lives: a
/// reload that replaces the authenticator ends its background work.
fn spawn_periodic<F, Fut>(owner: std::sync::Weak<Authenticator>, every: std::time::Duration, now: bool, tick: F)
where
    F: Fn(Arc<Authenticator>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let start = tokio::time::Instant::now() + if now { std::time::Duration::ZERO } else { every };
        let mut ticks = tokio::time::interval_at(start, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(auth) = owner.upgrade() else { return };
            tick(auth).await;
        }
    });
}

/// The outcome of a token request.
#[derive(Debug)]
pub enum TokenAnswer {
    Issued {
        user: Arc<str>,
        issued: tokens::Issued,
    },
    Refused(Verdict),
    /// The store failed: 503.
    Unavailable,
}

impl Authenticator {
    /// `POST /portcullis/token`: Basic or JWT credentials (never an edge token) → a new pair.
    /// The issue counts as an authorization for rate control.
    pub async fn issue_token(&self, headers: &HeaderMap, client: IpAddr) -> TokenAnswer {
        let Some(tokens) = &self.tokens else {
            return TokenAnswer::Refused(Verdict::Challenge { challenge: self.realm_challenge.clone() });
        };
        let edge_token = headers.get(http::header::AUTHORIZATION).is_some_and(|v| {
            let v = v.as_bytes();
            is_bearer(v) && v[7..].trim_ascii().starts_with(tokens::ACCESS_PREFIX.as_bytes())
        });
        if edge_token {
            self.events.auth_failed(client, None, "edge token presented for a token request");
            return TokenAnswer::Refused(Verdict::Challenge { challenge: self.realm_challenge.clone() });
        }
        let user = match self.authenticate(AuthMode::BasicOrJwt, headers, client).await {
            Verdict::Allow { user, .. } => user,
            other => return TokenAnswer::Refused(other),
        };
        if let Some(limited) = self.rate_check(&user).await {
            return TokenAnswer::Refused(limited);
        }
        match tokens.issue(&user).await {
            Ok(issued) => TokenAnswer::Issued { user, issued },
            Err(error) => {
                tracing::warn!("token issue failed: {error}");
                TokenAnswer::Unavailable
            }
        }
    }

    /// `POST /portcullis/token/refresh`: a live refresh token → a new pair (counts as an
    /// authorization).
    pub async fn refresh_token(&self, refresh: &str, client: IpAddr) -> TokenAnswer {
        let Some(tokens) = &self.tokens else {
            return TokenAnswer::Refused(Verdict::Challenge { challenge: self.bearer_challenge.clone() });
        };
        match tokens.refresh(refresh).await {
            Ok(Some((user, issued))) => {
                let user: Arc<str> = Arc::from(user);
                if let Some(limited) = self.rate_check(&user).await {
                    // The rotated pair is dropped: the client re-authenticates after Retry-After.
                    let _ = tokens.revoke_pair(&user, &issued).await;
                    return TokenAnswer::Refused(limited);
                }
                TokenAnswer::Issued { user, issued }
            }
            Ok(None) => {
                self.events.auth_failed(client, None, "invalid or expired refresh token");
                TokenAnswer::Refused(Verdict::Challenge { challenge: self.bearer_challenge.clone() })
            }
            Err(error) => {
                tracing::warn!("token refresh failed: {error}");
                TokenAnswer::Unavailable
            }
        }
    }

    async fn rate_check(&self, user: &str) -> Option<Verdict> {
        match &self.rate {
            Some(rate) => match rate.check(user).await {
                rate::RateDecision::Allowed => None,
                rate::RateDecision::Limited { retry_after_secs } => Some(Verdict::Limited { retry_after_secs }),
            },
            None => None,
        }
    }
}
