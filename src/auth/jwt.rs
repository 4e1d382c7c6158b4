//! JWT bearer tokens validated at the edge (DESIGN §2): HS256/384/512 with the configured
//! secret; RS*/PS*, ES256/384 and EdDSA with public keys from a JWKS URI, fetched at start,
//! refreshed every `jwks_refresh` and on an unknown `kid` (at most once per
//! [`UNKNOWN_KID_REFRESH_INTERVAL`], so a flood of random `kid`s cannot hammer the identity
//! server). `exp` is required; `exp`/`nbf` are checked with `leeway`; `iss` and `aud` when
//! configured. Valid tokens are cached (HMAC key) until they expire.
//!
//! Threat model: forged tokens. `alg: none` is never accepted (the library has no such
//! algorithm); a token's algorithm must match the family of the key that verifies it, so
//! an HS256 token signed with a public key as "secret" is refused (algorithm confusion);
//! symmetric (`oct`) keys from a JWKS are ignored — only `secret` enables HMAC tokens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::time::Instant;

use super::basic::Outcome;
use super::cache::CredentialCache;
use crate::config::JwtSettings;
use crate::net::fetch::Fetcher;

/// Longest bearer token considered.
pub const MAX_TOKEN_BYTES: usize = 8192;
/// Unknown-`kid` JWKS refreshes happen at most this often.
pub const UNKNOWN_KID_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Longest a validated token stays cached, whatever its `exp`.
pub const MAX_TOKEN_CACHE: Duration = Duration::from_secs(3600);
/// Most keys kept from one JWKS.
pub const MAX_JWKS_KEYS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Okp,
    /// Algorithms added to the library later: refused until reviewed.
    Unsupported,
}

fn family(alg: Algorithm) -> Family {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512 => Family::Rsa,
        Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
        Algorithm::EdDSA => Family::Okp,
        _ => Family::Unsupported,
    }
}

struct Key {
    key: DecodingKey,
    family: Family,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: Option<String>,
    preferred_username: Option<String>,
    upn: Option<String>,
    exp: Option<u64>,
}

/// JWT validation state.
pub struct JwtAuth {
    settings: JwtSettings,
    secret: Option<DecodingKey>,
    keys: RwLock<Arc<HashMap<String, Key>>>,
    fetcher: Fetcher,
    cache: CredentialCache,
    /// When the last unknown-`kid` refresh ran.
    last_unknown_refresh: std::sync::Mutex<Option<Instant>>,
    /// Serializes JWKS fetches (concurrent unknown `kid`s share one).
    fetching: tokio::sync::Mutex<()>,
    fetches: AtomicUsize,
}

impl JwtAuth {
    /// JWT validation for `settings`.
    pub fn new(settings: JwtSettings) -> JwtAuth {
        JwtAuth {
            secret: settings.secret.as_ref().map(|s| DecodingKey::from_secret(s.as_bytes())),
            settings,
            keys: RwLock::new(Arc::new(HashMap::new())),
            fetcher: Fetcher::new(Duration::from_secs(5)),
            cache: CredentialCache::new(MAX_TOKEN_CACHE),
            last_unknown_refresh: std::sync::Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            fetches: AtomicUsize::new(0),
        }
    }

    /// JWKS fetches so far (status and tests).
    pub fn jwks_fetches(&self) -> usize {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Replaces the key set from `jwks_url`; a failed fetch keeps the previous keys. Returns
    /// the JWKS document that was applied (for the other peers of a cluster).
    pub async fn refresh_keys(&self) -> Option<Vec<u8>> {
        let url = self.settings.jwks_url.as_ref()?;
        let _one_at_a_time = self.fetching.lock().await;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let answer = match self.fetcher.get(url, HeaderMap::new()).await {
            Ok(answer) if answer.status.is_success() => answer,
            Ok(answer) => {
                tracing::warn!("JWKS {url} answered {}; keeping the previous keys", answer.status);
                return None;
            }
            Err(error) => {
                tracing::warn!("JWKS {url} failed: {error}; keeping the previous keys");
                return None;
            }
        };
        self.apply_jwks(&answer.body).then(|| answer.body.to_vec())
    }

    /// Replaces the key set with the JWK set `body` (fetched here, or by the cluster's
    /// primary); false (keys kept) when it is not a JWK set.
    pub fn apply_jwks(&self, body: &[u8]) -> bool {
        let set: JwkSet = match serde_json::from_slice(body) {
            Ok(set) => set,
            Err(error) => {
                tracing::warn!("JWKS is not a JWK set ({error}); keeping the previous keys");
                return false;
            }
        };
        let mut keys = HashMap::new();
        for jwk in set.keys.iter().take(MAX_JWKS_KEYS) {
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Family::Rsa,
                AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                AlgorithmParameters::OctetKeyPair(_) => Family::Okp,
                // Symmetric keys never come from a JWKS (algorithm-confusion guard).
                _ => continue,
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, Key { key, family });
            }
        }
        tracing::info!("JWKS: {} keys", keys.len());
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        true
    }

    /// Key ids in use (status and tests).
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.keys.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        ids.sort();
        ids
    }

    /// A refresh for an unknown `kid`, unless one ran within the interval.
    async fn refresh_for_unknown_kid(&self) {
        {
            let mut last = self.last_unknown_refresh.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_REFRESH_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let _ = self.refresh_keys().await;
    }

    fn find_key(&self, kid: &str) -> Option<(DecodingKey, Family)> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        keys.get(kid).map(|k| (k.key.clone(), k.family))
    }

    /// The user of this bearer token when it is cached as valid.
    pub fn cached_user(&self, token: &[u8]) -> Option<Arc<str>> {
        (token.len() <= MAX_TOKEN_BYTES).then(|| self.cache.lookup(&self.cache.digest(token)))?
    }

    /// Authenticates one bearer token.
    pub async fn authenticate(&self, token: &[u8]) -> Outcome {
        if token.len() > MAX_TOKEN_BYTES {
            return Outcome::Refused { user: None, reason: "token too long" };
        }
        let digest = self.cache.digest(token);
        if let Some(user) = self.cache.lookup(&digest) {
            return Outcome::Allowed(user);
        }
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Outcome::Refused { user: None, reason: "malformed token" };
        };
        let wanted = family(header.alg);
        let key = match wanted {
            Family::Unsupported => return Outcome::Refused { user: None, reason: "algorithm not allowed" },
            Family::Hmac => match &self.secret {
                Some(secret) => secret.clone(),
                None => return Outcome::Refused { user: None, reason: "algorithm not allowed" },
            },
            _ => {
                let Some(kid) = header.kid.as_deref() else { return Outcome::Refused { user: None, reason: "token without kid" } };
                let found = match self.find_key(kid) {
                    Some(found) => Some(found),
                    None => {
                        self.refresh_for_unknown_kid().await;
                        self.find_key(kid)
                    }
                };
                match found {
                    Some((key, family)) if family == wanted => key,
                    Some(_) => return Outcome::Refused { user: None, reason: "algorithm does not match key" },
                    None => return Outcome::Refused { user: None, reason: "unknown key id" },
                }
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_nbf = true;
        match &self.settings.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &self.settings.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let claims = match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
            Ok(data) => data.claims,
            Err(error) => {
                use jsonwebtoken::errors::ErrorKind;
                let reason = match error.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::ImmatureSignature => "token not yet valid",
                    ErrorKind::InvalidIssuer => "wrong issuer",
                    ErrorKind::InvalidAudience => "wrong audience",
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::MissingRequiredClaim(_) => "missing claim",
                    _ => "invalid token",
                };
                return Outcome::Refused { user: None, reason };
            }
        };
        let user: Arc<str> = Arc::from(claims.preferred_username.or(claims.upn).or(claims.sub).unwrap_or_else(|| "-".to_string()).as_str());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let remaining = Duration::from_secs(claims.exp.unwrap_or(now).saturating_sub(now));
        if !remaining.is_zero() {
            self.cache.insert_for(digest, user.clone(), remaining.min(MAX_TOKEN_CACHE));
        }
        Outcome::Allowed(user)
    }
}
